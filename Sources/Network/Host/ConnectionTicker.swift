import NIOConcurrencyHelpers
import NIOCore

/// One 1-second timer per event loop that runs `tick()` (keepalive, idle and memory checks) of
/// every established connection on that loop, instead of a repeated task per connection.
///
/// Why: NIO keeps an event loop's timers in one heap, and cancelling a scheduled task scans the
/// whole heap (`Scheduled.cancel` → `PriorityQueue.removeFirst(where:)`). With a timer per
/// connection, a loop serving thousands of connections made every handshake timeout, identify
/// deadline and stream deadline cancel cost thousands of steps: in a 100-node in-process network
/// (~3,600 connections on 2 loops) that was a third of the CPU, and DHT requests timed out. With
/// one timer per loop the heap holds only the deadlines in flight.
///
/// Loop-confined: `add`, `remove` and the ticks run on `eventLoop` (asserted); the map of tickers
/// is behind a lock. A ticker whose last connection leaves stops its timer and leaves the map (a
/// loop that shuts down is not kept alive by it).
final class ConnectionTicker: @unchecked Sendable {
    // @unchecked Sendable: `connections` and `task` are read and written only on `eventLoop`
    // (every entry point asserts it); `eventLoop` is immutable.
    private static let tickers = NIOLockedValueBox<[ObjectIdentifier: ConnectionTicker]>([:])

    let eventLoop: any EventLoop
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var task: RepeatedTask?

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// The ticker of `eventLoop` (created on first use).
    static func on(_ eventLoop: any EventLoop) -> ConnectionTicker {
        tickers.withLockedValue { tickers in
            let key = ObjectIdentifier(eventLoop)
            if let ticker = tickers[key] { return ticker }
            let ticker = ConnectionTicker(eventLoop: eventLoop)
            tickers[key] = ticker
            return ticker
        }
    }

    /// Ticks `connection` every second from now on (on the event loop).
    func add(_ connection: Connection) {
        eventLoop.preconditionInEventLoop()
        connections[ObjectIdentifier(connection)] = connection
        if task == nil {
            task = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
                tickAll()
            }
        }
    }

    /// Stops ticking `connection` (on the event loop).
    func remove(_ connection: Connection) {
        eventLoop.preconditionInEventLoop()
        connections.removeValue(forKey: ObjectIdentifier(connection))
    }

    /// Connections ticked by this loop's ticker (tests).
    var count: Int {
        eventLoop.preconditionInEventLoop()
        return connections.count
    }

    private func tickAll() {
        eventLoop.preconditionInEventLoop()
        guard !connections.isEmpty else {
            // Idle: stop, and leave the map unless a new ticker took our place already. Cancelling
            // from inside the task's own run costs nothing (its next run is not scheduled yet).
            task?.cancel()
            task = nil
            Self.tickers.withLockedValue { tickers in
                let key = ObjectIdentifier(eventLoop)
                if tickers[key] === self { tickers[key] = nil }
            }
            return
        }
        // A tick may close its connection, which removes it: iterate over a copy.
        for connection in Array(connections.values) { connection.periodicTick() }
    }
}

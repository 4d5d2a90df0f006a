import Identity
import NIOCore
import Network

/// The inbound kad streams being served, and who gets a slot (spec/dht.md §1, "Inbound").
///
/// A pure value: the caller reports when a stream waits for its next request (`markIdle`), when a
/// request arrived (`markBusy`) and when it ended (`release`), and resets the stream `admit`
/// evicts.
///
/// Limits per peer, per remote IP and in total. A stream beyond a limit takes the slot of the
/// stream that has waited longest for its next request within that scope (the peer's own streams,
/// its IP's, everyone's); only when every stream in the scope is busy answering is it refused.
/// Issue #10, finding 7: with refusal only, 16 peer ids held all 256 slots by sending one request
/// every 59 s, and every other peer's requests were reset.
struct InboundStreamSlots<Handle: Sendable>: Sendable {
    struct Limits: Hashable, Sendable {
        var total: Int
        var perPeer: Int
        var perIP: Int
    }

    struct Slot: Sendable {
        let handle: Handle
        let peer: PeerID
        let ip: IPAddress?
        /// Since when the stream waits for its next request; nil while a request is being answered.
        var idleSince: NIODeadline?
    }

    enum Admission {
        /// The stream has slot `id`; the stream of `evicted`, if any, lost its slot and must be reset.
        case admitted(id: Int, evicted: Handle?)
        /// Every stream in the full scope is busy.
        case refused
    }

    /// Where a new stream's slot comes from.
    private enum Room {
        case free
        case evict(Int)
        case none
    }

    let limits: Limits
    private(set) var slots: [Int: Slot] = [:]
    private(set) var countByPeer: [PeerID: Int] = [:]
    private(set) var countByIP: [IPAddress: Int] = [:]
    private var nextID = 0

    init(limits: Limits) {
        precondition(limits.total > 0 && limits.perPeer > 0 && limits.perIP > 0, "inbound stream limits must be positive")
        self.limits = limits
    }

    var count: Int { slots.count }

    /// A slot for a new stream of `peer` from `ip` at `now`; it starts idle (waiting for its first
    /// request).
    mutating func admit(_ handle: Handle, peer: PeerID, ip: IPAddress?, now: NIODeadline) -> Admission {
        // The narrowest full scope decides whose idle stream makes room.
        let room: Room
        if countByPeer[peer, default: 0] >= limits.perPeer {
            room = longestIdle { $0.peer == peer }.map(Room.evict) ?? .none
        } else if let ip, countByIP[ip, default: 0] >= limits.perIP {
            room = longestIdle { $0.ip == ip }.map(Room.evict) ?? .none
        } else if slots.count >= limits.total {
            room = longestIdle { _ in true }.map(Room.evict) ?? .none
        } else {
            room = .free
        }
        var evicted: Handle?
        switch room {
        case .none: return .refused
        case .evict(let id): evicted = release(id)
        case .free: break
        }
        let id = nextID
        nextID += 1
        slots[id] = Slot(handle: handle, peer: peer, ip: ip, idleSince: now)
        countByPeer[peer, default: 0] += 1
        if let ip { countByIP[ip, default: 0] += 1 }
        return .admitted(id: id, evicted: evicted)
    }

    /// The stream in slot `id` waits for its next request since `now`.
    mutating func markIdle(_ id: Int, now: NIODeadline) {
        slots[id]?.idleSince = now
    }

    /// The stream in slot `id` is answering a request: it cannot be evicted meanwhile.
    mutating func markBusy(_ id: Int) {
        slots[id]?.idleSince = nil
    }

    /// Frees slot `id`; its handle, or nil if it was freed already (evicted).
    @discardableResult
    mutating func release(_ id: Int) -> Handle? {
        guard let slot = slots.removeValue(forKey: id) else { return nil }
        Self.decrement(&countByPeer, slot.peer)
        if let ip = slot.ip { Self.decrement(&countByIP, ip) }
        return slot.handle
    }

    /// The idle stream matching `predicate` that has waited longest; nil if none is idle.
    private func longestIdle(_ predicate: (Slot) -> Bool) -> Int? {
        var best: (id: Int, since: NIODeadline)?
        for (id, slot) in slots where predicate(slot) {
            guard let since = slot.idleSince else { continue }
            if best.map({ since < $0.since }) ?? true { best = (id, since) }
        }
        return best?.id
    }

    private static func decrement<Key: Hashable>(_ counts: inout [Key: Int], _ key: Key) {
        let left = counts[key, default: 1] - 1
        counts[key] = left > 0 ? left : nil
    }
}

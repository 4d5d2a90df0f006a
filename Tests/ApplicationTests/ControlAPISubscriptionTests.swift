import Foundation
import NIOCore
import Testing

@testable import Application

@Suite("Control API subscriptions", .timeLimit(.minutes(1)))
struct ControlAPISubscriptionTests {
    @Test("a subscription answers, delivers its notifications in order, and ends when its source ends")
    func delivers() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            let subscription = try await client.subscribe("ticks", ["count": 5])
            #expect(subscription.result == ["subscription": "ticks"])
            var received: [ControlAPINotification] = []
            for try await notification in subscription { received.append(notification) }
            #expect(received.map(\.method) == Array(repeating: "tick", count: 5))
            #expect(received.map { $0.params["n"] } == (0..<5).map { .number($0) })
            #expect(await test.probe.waitFor("ticks finished") == "ticks finished after 5")
        }
    }

    @Test("the notification lines on the wire are JSON-RPC notifications: no id")
    func wireFormat() async throws {
        try await withServer { _, path in
            let client = try await RawClient.connect(path)
            let response = try await client.roundTrip(
                #"{"jsonrpc":"2.0","id":"s","method":"ticks","params":{"count":2}}"#)
            #expect(response["result"] == ["subscription": "ticks"])
            #expect(await client.readLine() == #"{"jsonrpc":"2.0","method":"tick","params":{"n":0,"padding":""}}"#)
            #expect(await client.readLine() == #"{"jsonrpc":"2.0","method":"tick","params":{"n":1,"padding":""}}"#)
            #expect(await client.readLine() == nil)
            await client.close()
        }
    }

    @Test("the subscription stops when the client disconnects")
    func stopsOnDisconnect() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { server, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            let subscription = try await client.subscribe("ticks")
            var iterator = subscription.makeAsyncIterator()
            for expected in 0..<3 {
                #expect(try await iterator.next()?.params["n"] == .number(expected))
            }
            await client.close()
            let stopped = await test.probe.waitFor("ticks stopped")
            #expect(
                stopped.hasPrefix("ticks stopped: cancelled") || stopped.hasPrefix("ticks stopped: connection_closed"))
            // What arrived before the close is still delivered; then the sequence ends.
            while try await iterator.next() != nil {}
        }
    }

    @Test("dropping the notification sequence ends the subscription")
    func droppingTheSequence() async throws {
        let test = TestMethods()
        try await withServer(test.methods) { _, path in
            do {
                let client = try await ControlAPIClient.connect(socketPath: path)
                let subscription = try await client.subscribe("ticks")
                var iterator = subscription.makeAsyncIterator()
                _ = try await iterator.next()
            }
            _ = await test.probe.waitFor("ticks stopped")
        }
    }

    @Test("a subscription that refuses its params answers with an error and sends nothing")
    func refusedParams() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            do throws(ControlAPIError) {
                _ = try await client.subscribe("ticks", ["count": -1])
                Issue.record("subscribed with a negative count")
            } catch {
                #expect(error.kind == .remoteError)
                #expect(error.code == JSONRPCErrorCode.invalidParams)
            }
            await client.close()
        }
    }

    @Test("a subscriber that does not read is dropped at the outbound limit, with a warning; memory stays bounded")
    func slowConsumerDropped() async throws {
        let test = TestMethods()
        let log = RecordedLog()
        var configuration = ControlAPIConfiguration()
        configuration.maxOutboundBytesPerConnection = 256 * 1024
        try await withServer(test.methods, configuration: configuration, logger: log.logger) { server, path in
            let client = try await RawClient.connect(path, autoRead: false)
            try await client.send(
                #"{"jsonrpc":"2.0","id":1,"method":"ticks","params":{"fast":true,"size":1000}}"# + "\n")
            let stopped = await test.probe.waitFor("ticks stopped")
            #expect(stopped.hasPrefix("ticks stopped: slow_consumer after "))
            let sent = try #require(Int(stopped.split(separator: " ").last ?? ""))
            // What was sent fits in the limit plus what the kernel's socket buffers took (a few
            // hundred KiB): about 340 notifications of 1 KiB here, however fast the source.
            #expect(sent > 0)
            #expect(sent * 1050 < configuration.maxOutboundBytesPerConnection + (2 << 20))
            #expect(log.contains(level: .warning, "dropping a subscriber that does not read"))
            // The dropped client reads what reached it, then the end of the connection.
            _ = client.channel.setOption(.autoRead, value: true)
            client.channel.read()
            var lines = 0
            while await client.readLine() != nil { lines += 1 }
            #expect(lines >= 1)
            #expect(lines <= sent + 1)
            await client.close()
        }
    }

    @Test("a subscriber that reads keeps up with a fast source and gets every notification")
    func fastSourceReadingClient() async throws {
        try await withServer { _, path in
            let client = try await ControlAPIClient.connect(socketPath: path)
            let subscription = try await client.subscribe("ticks", ["count": 5000, "fast": true])
            var count = 0
            for try await notification in subscription {
                #expect(notification.params["n"] == .number(count))
                count += 1
            }
            #expect(count == 5000)
        }
    }
}

import ArgumentParser
import Foundation
import Identity
import Multiformats
import Resolution

/// `agent-bench`: measures agentd's hot paths against baselines taken in the same run, and prints
/// the ratios. Build with `-c release`; debug figures mean nothing.
@main
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-bench",
        abstract: "Benchmarks of agentd, as ratios against baselines measured in the same run.",
        subcommands: [RecordsBenchmark.self, SessionBenchmark.self, DHTBenchmark.self, RelayBenchmark.self, MessagesBenchmark.self],
        defaultSubcommand: RecordsBenchmark.self
    )
}

/// Clock for benchmarks: monotonic nanoseconds.
func measure(iterations: Int, _ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    let elapsed = clock.measure {
        for _ in 0..<iterations { body() }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return Double(iterations) / seconds
}

struct RecordsBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "records",
        abstract: "Record signing, decoding and validation against raw libsodium Ed25519 speed.",
        discussion: """
            Baselines: raw Ed25519 sign and verify of a message as long as the record's signed payload.
            A record operation costs one signature operation plus encoding or parsing; the ratios show
            how close the record layer gets to the bound set by the signature itself (1.0 = no overhead).
            """
    )

    @Option(help: "Iterations per measurement.")
    var iterations = 20_000

    func run() throws {
        let key = Ed25519.PrivateKey()
        let name = try AgentName("benchmark")
        let record = AgentRecord(
            name: name, publicKey: key.publicKey, seq: 1, timestamp: 1_767_225_600, ttl: 3600,
            addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/4001"), try Multiaddr("/ip6/::1/tcp/4001")],
            protocols: ["/agent/msg/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"])
        let signed = try record.signed(with: key)
        let payload = signed.signedPayload
        let signature = signed.signature
        let now: UInt64 = 1_767_225_700

        var sink = 0
        // Warm up caches and libsodium's init.
        _ = measure(iterations: 1000) { sink &+= key.signature(for: payload).count }

        let rawSign = measure(iterations: iterations) { sink &+= key.signature(for: payload).count }
        let recordSign = measure(iterations: iterations) { sink &+= (try! record.signed(with: key)).bytes.count }
        let rawVerify = measure(iterations: iterations) {
            sink &+= key.publicKey.isValidSignature(signature, for: payload) ? 1 : 0
        }
        let recordVerify = measure(iterations: iterations) {
            let decoded = try! SignedAgentRecord(bytes: signed.bytes)
            try! decoded.validate(now: now)
            sink &+= decoded.bytes.count
        }
        let decodeOnly = measure(iterations: iterations) { sink &+= (try! SignedAgentRecord(bytes: signed.bytes)).bytes.count }

        func row(_ label: String, _ rate: Double, _ baseline: Double?) -> String {
            let ratio = baseline.map { String(format: "%6.2f", rate / $0) } ?? "     -"
            return label.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%12.0f /s  ", rate) + ratio
        }
        print("agent-bench records: \(signed.bytes.count)-byte record, \(iterations) iterations, libsodium \(Sodium.version)")
        print("operation".padding(toLength: 44, withPad: " ", startingAt: 0) + "        rate  ratio")
        print(row("baseline: raw Ed25519 sign", rawSign, nil))
        print(row("record encode + sign", recordSign, rawSign))
        print(row("baseline: raw Ed25519 verify", rawVerify, nil))
        print(row("record decode + validate (verify)", recordVerify, rawVerify))
        print(row("record decode only", decodeOnly, nil))
        if sink == 42 { print("") }  // keeps the work observable
    }
}

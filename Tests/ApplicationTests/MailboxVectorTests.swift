import AgentTesting
import Foundation
import Identity
import Resolution
import Testing

@testable import Application

/// The vectors of spec/tools/agent_mailbox.py (spec/mailbox.md): mailbox keys, access signatures
/// byte for byte, requests on the wire, and sealed boxes made by PyNaCl.
@Suite("mailbox vectors from the reference tool")
struct MailboxVectorTests {
    var vectors: [String: Any] { get throws { try TestVectors.load("mailbox.json") } }

    static func bytes(_ value: Any?) throws -> [UInt8] {
        guard let text = value as? String else { throw VectorError("not hex: \(String(describing: value))") }
        return try Hex.decode(text)
    }

    func recipient() throws -> Ed25519.PrivateKey { try Ed25519.PrivateKey(seed: try Self.bytes(try vectors["recipient_seed"])) }

    @Test("mailbox keys")
    func mailboxKeys() throws {
        let keys = try #require(try vectors["mailbox_keys"] as? [[String: Any]])
        #expect(keys.count == 3)
        for key in keys {
            let name = try AgentName(canonical: try #require(key["name"] as? String))
            #expect(MailboxWire.mailboxKey(for: name) == (try Self.bytes(key["mailbox_key"])))
        }
    }

    @Test("access signatures: the signed bytes, the signature, and its check")
    func access() throws {
        let accesses = try #require(try vectors["access"] as? [[String: Any]])
        for vector in accesses {
            let op = try #require(vector["op"] as? String)
            let operation = try #require(MailboxAccess.Operation(rawValue: op))
            let name = try AgentName(canonical: try #require(vector["name"] as? String))
            let replica = try PeerID(bytes: try Self.bytes(vector["replica_peer_id"]))
            let timestamp = try #require(vector["timestamp"] as? UInt64)
            let ids = try (vector["ids"] as? [String] ?? []).map { try Self.bytes($0) }
            #expect(
                MailboxAccess.signedBytes(operation, name: name, replica: replica, timestamp: timestamp, ids: ids)
                    == (try Self.bytes(vector["signed_bytes"])))
            let signed = MailboxAccess(signing: operation, name: name, replica: replica, ids: ids, timestamp: timestamp, key: try recipient())
            #expect(signed.signature == (try Self.bytes(vector["signature"])))
            try signed.check(
                operation, mailbox: MailboxWire.mailboxKey(for: name), replica: replica, ids: ids, key: try recipient().publicKey,
                now: timestamp)
        }
    }

    @Test("boxes sealed by PyNaCl open with the recipient's Ed25519 key")
    func sealedBoxes() throws {
        let boxes = try #require(try vectors["sealed_boxes"] as? [[String: Any]])
        #expect(boxes.count == 3)
        for box in boxes {
            #expect(try SealedBox.open(try Self.bytes(box["sealed"]), with: try recipient()) == (try Self.bytes(box["plaintext"])))
        }
    }

    @Test("requests on the wire decode to their fields and encode back to the same bytes")
    func requests() throws {
        let requests = try #require(try vectors["requests"] as? [[String: Any]])
        for vector in requests {
            let bytes = try Self.bytes(vector["bytes"])
            let request = try MailboxWire.decodeRequest(bytes)
            #expect(request.mailbox == (try Self.bytes(vector["mailbox"])))
            switch (vector["kind"] as? String, request) {
            case ("store", .store(_, let messages, let recipientPeer)):
                #expect(messages.map(\.id) == (try (vector["ids"] as? [String] ?? []).map { try Self.bytes($0) }))
                #expect(messages.map(\.expires) == vector["expires"] as? [UInt64])
                #expect(recipientPeer?.bytes == (try Self.bytes(vector["recipient_peer"])))
            case ("fetch", .fetch(_, let access, let cursor)):
                #expect(cursor == vector["cursor"] as? UInt64)
                #expect(access.name.value == vector["name"] as? String)
            default:
                Issue.record("vector \(vector["kind"] ?? "?") decoded to \(request)")
            }
            #expect(try MailboxWire.encode(request) == bytes)
        }
    }

    @Test("the reference tool agrees with the vector file and opens nothing wrongly", .enabled(if: Python.available))
    func referenceCheck() async throws {
        let script = TestVectors.repositoryRoot.appendingPathComponent("spec/tools/agent_mailbox.py").path
        let result = try await ProcessRunner.run(try Python.executable(), [script, "--check"])
        #expect(result.status == 0, "\(result.stdoutText)\(result.stderr)")
        #expect(result.stdoutText == "ok\n")
    }
}

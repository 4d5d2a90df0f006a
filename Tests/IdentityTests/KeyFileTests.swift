import AgentTesting
import Foundation
import Testing

@testable import Identity

@Suite("identity key file: PKCS#8 PEM, mode 0600")
struct KeyFileTests {
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "agentd-keyfile-\(UUID().uuidString)"
        try PrivateFile.createDirectory(path)
        return path
    }

    @Test("RFC 8410 §10.3 example keys load", arguments: try TestVectors.array("keyfile.json"))
    func rfc8410(vector: Vector) throws {
        let key = try KeyFile.privateKey(fromPEM: Array(try vector.string("pem").utf8))
        #expect(key.withSeed { Array($0) } == (try vector.hex("seed")))
        #expect(key.publicKey.rawRepresentation == (try vector.hex("public_key")))
    }

    @Test("we write exactly the PKCS#8 v1 form of RFC 8410")
    func writesRFCForm() throws {
        let vector = try #require(try TestVectors.array("keyfile.json").first)
        let key = try Ed25519.PrivateKey(seed: try vector.hex("seed"))
        #expect(String(decoding: KeyFile.pem(for: key), as: UTF8.self) == (try vector.string("pem")))
    }

    @Test("write then read round trip; file is mode 0600; no overwrite without asking")
    func roundTrip() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/identity.key"
        let key = Ed25519.PrivateKey()
        try KeyFile.write(key, to: path, overwrite: false)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try KeyFile.read(from: path).publicKey == key.publicKey)

        let other = Ed25519.PrivateKey()
        #expect(throws: IdentityError.self) { try KeyFile.write(other, to: path, overwrite: false) }
        #expect(try KeyFile.read(from: path).publicKey == key.publicKey)
        try KeyFile.write(other, to: path, overwrite: true)
        #expect(try KeyFile.read(from: path).publicKey == other.publicKey)
        // No temporary files are left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["identity.key"])
    }

    @Test("a key file readable by group or others is refused with the chmod fix")
    func insecure() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/identity.key"
        try KeyFile.write(Ed25519.PrivateKey(), to: path, overwrite: false)
        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(path, mode_t(mode))
            do {
                _ = try KeyFile.read(from: path)
                Issue.record("mode \(String(mode, radix: 8)) was accepted")
            } catch {
                #expect(error.kind == .insecureKeyFile)
                #expect(error.message.contains("chmod 600 \(path)"))
            }
        }
        chmod(path, 0o400)
        _ = try KeyFile.read(from: path)
    }

    @Test("missing file, directory and symlink are clear errors")
    func fileErrors() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: IdentityError.self) { _ = try KeyFile.read(from: directory + "/nope.key") }
        do { _ = try KeyFile.read(from: directory + "/nope.key") } catch { #expect(error.kind == .notFound) }
        do { _ = try KeyFile.read(from: directory) } catch { #expect(error.kind == .fileSystem || error.kind == .insecureKeyFile) }
        try KeyFile.write(Ed25519.PrivateKey(), to: directory + "/real.key", overwrite: false)
        symlink(directory + "/real.key", directory + "/link.key")
        #expect(throws: IdentityError.self) { _ = try KeyFile.read(from: directory + "/link.key") }
    }

    @Test("malformed PEM and DER are refused, never crash (seed 6, 20000 cases)")
    func hostile() throws {
        let pem = Array(try TestVectors.array("keyfile.json")[1].string("pem").utf8)
        let cases: [String] = [
            "", "hello", "-----BEGIN PRIVATE KEY-----\n", "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            // An RSA-style OID instead of Ed25519.
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VxBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
        ]
        for text in cases {
            #expect(throws: IdentityError.self, "\(text)") { _ = try KeyFile.privateKey(fromPEM: Array(text.utf8)) }
        }
        var generator = SeededGenerator(seed: 6)
        let der = try KeyFile.privateKey(fromPEM: pem).withSeed { KeyFile.pkcs8Prefix + Array($0) }
        for round in 0..<20_000 {
            let input = round % 2 == 0 ? generator.mutate(pem) : generator.mutate(der)
            do {
                if round % 2 == 0 { _ = try KeyFile.privateKey(fromPEM: input) } else { _ = try KeyFile.privateKey(fromDER: input) }
            } catch {
                #expect(error.kind == .invalidKeyFile || error.kind == .invalidKey)
            }
        }
    }

    @Test("OpenSSL reads our key file and we read OpenSSL's", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func openssl() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ours = directory + "/ours.key"
        let key = Ed25519.PrivateKey()
        try KeyFile.write(key, to: ours, overwrite: false)
        let publicDER = try Self.run("/usr/bin/openssl", ["pkey", "-in", ours, "-pubout", "-outform", "DER"])
        // SubjectPublicKeyInfo for Ed25519: 12-byte header then the 32-byte key (RFC 8410 §4).
        #expect(Array(publicDER.suffix(32)) == key.publicKey.rawRepresentation)

        let theirs = directory + "/theirs.key"
        _ = try Self.run("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", theirs])
        chmod(theirs, 0o600)
        let loaded = try KeyFile.read(from: theirs)
        let theirPublic = try Self.run("/usr/bin/openssl", ["pkey", "-in", theirs, "-pubout", "-outform", "DER"])
        #expect(Array(theirPublic.suffix(32)) == loaded.publicKey.rawRepresentation)
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return Array(data)
    }
}

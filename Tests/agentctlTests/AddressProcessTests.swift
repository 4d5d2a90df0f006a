import AgentTesting
import Foundation
import Testing

/// agentd's address flags (spec/network.md, "Addresses").
@Suite("agentd addresses: --public-cidr", .serialized, .timeLimit(.minutes(2)))
struct AddressProcessTests {
    @Test("bad --public-cidr values exit 2 with a message")
    func badFlags() throws {
        let agentd = ProcessRunner.executable("agentd")
        for arguments in [
            ["--public-cidr", "10.0.0.1/8"], ["--public-cidr", "10.0.0.0/33"], ["--public-cidr", "example.com"],
        ] {
            let result = try ProcessRunner.run(agentd, arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(arguments[0]), "\(arguments): \(result.stderr)")
        }
    }
}

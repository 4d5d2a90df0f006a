import NIOCore

/// When a sender rekeys its direction of a Noise session (spec/session.md §3.1, DESIGN §3).
///
/// Rekeying is agentd's extension, used only when both peers announce it in the handshake payload
/// (`NoiseExtensions.agentd_rekey`, field 8475): other libp2p peers never see it. A sender rekeys
/// by sending an empty transport message and then applying the Noise `Rekey()` to its cipher; the
/// receiver applies `Rekey()` to its own upon opening an empty message. The policy is the
/// sender's alone: the receiver just follows the signals.
public struct NoiseRekeyPolicy: Hashable, Sendable {
    /// The scheme announced in the handshake; the only one there is.
    public static let version: UInt32 = 1

    /// Rekey after this many transport messages under one key. Default 1000 (DESIGN §3).
    public var messages: Int
    /// Rekey before sending when the key is older than this and has sealed anything. Default 10
    /// minutes (DESIGN §3).
    public var interval: TimeAmount

    public init(messages: Int = 1000, interval: TimeAmount = .minutes(10)) {
        precondition(messages > 0, "a rekey policy needs a positive message count")
        precondition(interval > .zero, "a rekey policy needs a positive interval")
        self.messages = messages
        self.interval = interval
    }
}

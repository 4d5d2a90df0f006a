// swift-tools-version:6.0
//
// agentd: the node software of the .agent network. See README.md and ../shared/DESIGN.md.
import PackageDescription

let package = Package(
    name: "agentd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "agentd", targets: ["agentd"]),
        .executable(name: "agentctl", targets: ["agentctl"]),
        .executable(name: "agent-bench", targets: ["agent-bench"]),
        .library(name: "Multiformats", targets: ["Multiformats"]),
        .library(name: "Identity", targets: ["Identity"]),
        .library(name: "Session", targets: ["Session"]),
        .library(name: "Network", targets: ["Network"]),
        .library(name: "Resolution", targets: ["Resolution"]),
        .library(name: "Application", targets: ["Application"]),
        .library(name: "AgentNode", targets: ["AgentNode"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // libsodium, found through pkg-config; Debian/Ubuntu package libsodium-dev.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"]), .brew(["libsodium"])]
        ),
        .target(
            name: "Multiformats",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "Identity",
            dependencies: ["CSodium", "Multiformats", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "Session",
            dependencies: [
                "Identity", "Multiformats", "CSodium",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Noise/Generated/noise.proto"]
        ),
        // ngtcp2 0.12 + its GnuTLS crypto helper + GnuTLS, through pkg-config (Debian 12:
        // libngtcp2-dev, libngtcp2-crypto-gnutls-dev, libgnutls28-dev); linked by CQuic.
        .systemLibrary(
            name: "CNgtcp2",
            pkgConfig: "libngtcp2_crypto_gnutls",
            providers: [.apt(["libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev"])]
        ),
        // The QUIC layer in C over ngtcp2 + GnuTLS (callbacks, send buffers pinned until acked,
        // certificates); fails to build, with a clear message, against an ngtcp2 other than 0.12.
        .target(
            name: "CQuic", dependencies: ["CNgtcp2"],
            linkerSettings: [.linkedLibrary("ngtcp2"), .linkedLibrary("ngtcp2_crypto_gnutls"), .linkedLibrary("gnutls")]),
        // agent-bench's plain C QUIC baseline (issue #13): a client and a server on CQuic in blocking
        // loops, one sendto per datagram; host keys from libsodium.
        .target(
            name: "CQuicBaseline", dependencies: ["CQuic", "CSodium"],
            linkerSettings: [.linkedLibrary("pthread")]),
        // Small libc shims (allocator tuning) that Swift's Glibc module does not expose.
        .target(name: "CAgentSystem"),
        .target(
            name: "Network",
            dependencies: [
                "Session", "Identity", "Multiformats", "CAgentSystem", "CQuic",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Identify/Generated/identify.proto", "AutoNAT/Generated/autonat.proto", "Relay/Generated/relay.proto", "HolePunch/Generated/holepunch.proto"]
        ),
        .target(
            name: "Resolution",
            dependencies: [
                "Identity", "Multiformats", "Network", "Session",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["KadProtocol/Generated/dht.proto"],
            // Lets clients specialise the generic routing table and lookups for their peer handle:
            // without it, agent-sim's direct build spent ~45 % of its time looking up generic
            // metadata (perf, release, 20,000 nodes) in unspecialised KBucketsTable code.
            swiftSettings: [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]
        ),
        // Application: the control API (JSON-RPC 2.0 over the Unix socket), messages
        // (`/agent/msg/1.0.0`, spec/messages.md), mailboxes.
        .target(
            name: "Application",
            dependencies: [
                "Identity", "Multiformats", "Resolution", "Network", "Session",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Mailbox/Generated/mailbox.proto"]
        ),
        .target(
            name: "AgentNode",
            dependencies: [
                "Identity", "Multiformats", "Resolution", "Network", "Session", "Application",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "agentd",
            dependencies: [
                "AgentNode", "Identity", "Multiformats", "Network", "Resolution",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "agentctl",
            dependencies: [
                "AgentNode", "Identity", "Multiformats", "Resolution", "Application",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "agent-bench",
            dependencies: [
                "Identity", "Resolution", "Multiformats", "Session", "Network", "Application", "CSodium",
                "CQuicBaseline", "ResolutionTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "agent-sim", dependencies: ["Resolution", "Identity", "Multiformats", "CAgentSystem", .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "NIOCore", package: "swift-nio")], path: "simulations", exclude: ["README.md"]),
        // Test support shared by the test targets: vectors, hex, seeded randomness; later the
        // in-process network and the py-libp2p launcher.
        .target(
            name: "AgentTesting",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Sources/AgentTesting"),
        // Many DHT nodes over loopback in one process: the one network builder of the many-node
        // tests and of agent-bench dht (issue #14 item 8).
        .target(
            name: "ResolutionTesting",
            dependencies: [
                "Resolution", "Network", "Identity", "Multiformats", "AgentTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "MultiformatsTests", dependencies: ["Multiformats", "AgentTesting"]),
        // The simulator's pure pieces (SortedKeys, the --json results contract, CSV, the SVG
        // charts) and small seeded runs of each experiment; imports agent-sim with @testable.
        .testTarget(name: "SimulatorTests", dependencies: ["agent-sim", "Resolution"]),
        .testTarget(name: "IdentityTests", dependencies: ["Identity", "Multiformats", "AgentTesting"]),
        .testTarget(
            name: "SessionTests",
            dependencies: [
                "Session", "Identity", "Multiformats", "AgentTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]),
        .testTarget(
            name: "NetworkTests",
            dependencies: [
                "Network", "Session", "Identity", "Multiformats", "AgentTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]),
        .testTarget(
            name: "ResolutionTests",
            dependencies: [
                "Resolution", "Identity", "Multiformats", "Network", "AgentTesting", "Application",
                "ResolutionTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // Control API tests over real Unix sockets; the CLI ones run the built agentctl.
        .testTarget(
            name: "ApplicationTests",
            dependencies: [
                "Application", "AgentTesting", "agentctl", "Identity", "Multiformats", "Network", "Resolution",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "AgentNodeTests",
            dependencies: ["AgentNode", "Identity", "Multiformats", "AgentTesting", "Application", "Network"]),
        // Runs the built executables as processes; depending on them makes `swift test` build them.
        .testTarget(
            name: "agentctlTests",
            dependencies: ["agentctl", "agentd", "Identity", "Resolution", "Multiformats", "AgentTesting"]),
        // The NAT lab (Linux network namespaces, as root) and the tests that run agentd in it;
        // `make test` runs them in a pass of their own (Makefile, NATLAB_SUITES).
        .testTarget(
            name: "NATLabTests",
            dependencies: ["agentctl", "agentd", "AgentTesting"],
            exclude: ["tcp_punch.py"]),
    ],
    swiftLanguageModes: [.v6]
)

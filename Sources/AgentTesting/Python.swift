import Foundation

/// The Python interpreter of the test venv (`.venv`, made by scripts/install-deps.sh), which holds
/// the pinned interop peers and references (requirements-test.txt).
///
/// Tests that need it are enabled when it exists. Under `make test` (and so in CI)
/// `AGENTD_REQUIRE_PYTHON=1` is set: a missing venv then fails those tests instead of skipping them.
public enum Python {
    public static var venvPython: String {
        TestVectors.repositoryRoot.appendingPathComponent(".venv/bin/python3").path
    }

    public static var required: Bool {
        ProcessInfo.processInfo.environment["AGENTD_REQUIRE_PYTHON"] == "1"
    }

    /// Whether Python tests should run: the venv exists, or it is required (and its absence fails).
    public static var available: Bool {
        required || FileManager.default.isExecutableFile(atPath: venvPython)
    }

    /// The interpreter path.
    /// - Throws: when the venv is missing (only reachable when `AGENTD_REQUIRE_PYTHON=1`).
    public static func executable() throws -> String {
        guard FileManager.default.isExecutableFile(atPath: venvPython) else {
            throw VectorError("\(venvPython) is missing; run scripts/install-deps.sh (make deps)")
        }
        return venvPython
    }
}

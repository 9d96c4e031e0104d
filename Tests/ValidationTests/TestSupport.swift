import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

extension QemuTools {
    /// The runner real-QEMU tests validate with (their suites are gated by `.requires(QemuTools.io)`).
    static let runner = SystemProcessRunner()
}

extension MoreQemu {
    /// A runner that finds version `v`'s tools first.
    static func runner(_ v: QemuVersion) -> SystemProcessRunner {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        return SystemProcessRunner(searchPath: [bin(v)] + path)
    }
}

/// A runner that records every request and answers from a script (swift-system's mocking shape).
final class MockRunner: ProcessRunner, @unchecked Sendable {
    private let lock = NSLock()
    private var _requests: [ProcessRequest] = []
    /// Programs that do not exist.
    var missing: Set<String> = []
    /// Result for a program name (default: status 0, empty output).
    var results: [String: ProcessResult] = [:]

    var requests: [ProcessRequest] {
        lock.lock()
        defer { lock.unlock() }
        return _requests
    }

    func locate(_ executable: String) -> String? { missing.contains(executable) ? nil : "/mock/bin/" + executable }

    func run(_ request: ProcessRequest) throws -> ProcessResult {
        lock.lock()
        _requests.append(request)
        lock.unlock()
        if missing.contains(request.executable) {
            throw ValidationError.toolMissing(tool: request.executable, packages: QemuPackages.all)
        }
        return results[request.executable] ?? ProcessResult(status: 0)
    }

    func start(_ request: ProcessRequest) throws -> any InteractiveProcess {
        _ = try run(request)
        throw ValidationError.toolFailed(argv: request.argv, status: 1, outputTail: "mock cannot start interactive processes")
    }
}

/// A fresh directory removed by the caller.
func makeTempDir() throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("validation-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// An expected log: open events, one event list per request, close events.
func makeLog(open: [CacheEvent] = [], requests: [[CacheEvent]], close: [CacheEvent], multiSegment: Set<Int> = []) -> EventLog {
    let log = EventLog()
    for e in open { log.append(e) }
    for (i, evs) in requests.enumerated() {
        log.beginRequest(i, location: .line(i + 1))
        if multiSegment.contains(i) { log.markMultiSegment(write: false) }
        for e in evs { log.append(e) }
    }
    log.beginClose()
    for e in close { log.append(e) }
    return log
}

import Foundation
import Qcow2Sim
import Testing
import TraceKit
import Validation

/// Whether the real QEMU tools are installed (tests that need them are skipped, visibly, when not).
enum Qemu {
    static let runner = SystemProcessRunner()
    static let hasQemuIO = runner.locate("qemu-io") != nil && runner.locate("qemu-img") != nil
    static let hasQemuSystem = hasQemuIO && runner.locate("qemu-system-x86_64") != nil
    static let skipIO: Comment = "qemu-io / qemu-img not installed: skipping the real-QEMU test (apt-get install qemu-utils)"
    static let skipSystem: Comment = "qemu-system-x86_64 not installed: skipping (apt-get install qemu-system-x86)"
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

/// QEMU lines (`#` comments and blank lines dropped), parsed as cache events of `image`.
func events(_ text: String, image: Int = 0) -> [CacheEvent] {
    text.split(separator: "\n").compactMap { raw in
        let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(
            in: .whitespaces)
        if line.isEmpty { return nil }
        guard let ev = CacheEvent(parsing: Substring(line), defaultImage: image) else {
            Issue.record("bad fixture line '\(line)'")
            return nil
        }
        return ev
    }
}

/// Expands the spec's compact notation (qcow2-model.md §16): `L2 get 0xOFF [empty] hit|miss I [(xN)]`,
/// `flush L2`, `wb RC I`, separated by `;` or newlines. An optional `[image N]` prefix labels the image.
func compact(_ text: String, image: Int = 0) -> [CacheEvent] {
    var out: [CacheEvent] = []
    for raw in text.split(whereSeparator: { $0 == ";" || $0 == "\n" }) {
        var tokens = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].split(separator: " ").map(
            String.init)
        if tokens.isEmpty { continue }
        var img = image
        if tokens[0] == "[image", tokens.count > 1, let n = Int(tokens[1].dropLast()) {
            img = n
            tokens.removeFirst(2)
        }
        let isL2: Bool
        switch tokens[0] {
        case "flush":
            out.append(CacheEvent(kind: .flush, image: img, isL2: tokens[1] == "L2"))
            continue
        case "wb":
            out.append(CacheEvent(kind: .entryFlush, image: img, isL2: tokens[1] == "L2", index: Int(tokens[2]) ?? -1))
            continue
        case "L2": isL2 = true
        case "RC": isL2 = false
        default:
            Issue.record("bad compact token '\(tokens[0])'")
            continue
        }
        let offset = UInt64(tokens[2].dropFirst(2), radix: 16) ?? 0
        var k = 3
        var rfd = true
        if tokens[k] == "empty" { rfd = false; k += 1 }
        let hit = tokens[k] == "hit"
        let index = Int(tokens[k + 1]) ?? -1
        var repeatCount = 1
        if k + 2 < tokens.count, tokens[k + 2].hasPrefix("(x") { repeatCount = Int(tokens[k + 2].dropFirst(2).dropLast()) ?? 1 }
        for _ in 0..<repeatCount {
            out.append(CacheEvent(kind: .get, image: img, isL2: isL2, offset: offset, readFromDisk: rfd))
            if !hit {
                out.append(CacheEvent(kind: .replaceEntry, image: img, isL2: isL2, index: index))
                out.append(CacheEvent(kind: .getRead, image: img, isL2: isL2, index: index))
            }
            out.append(CacheEvent(kind: .getDone, image: img, isL2: isL2, index: index))
        }
    }
    return out
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

/// Records from `R|W|D|Z|F OFF LEN` lines with k/M/G suffixes.
func records(_ text: String) -> [TraceRecord] {
    func size(_ s: Substring) -> UInt64 {
        let mult: UInt64
        switch s.last {
        case "k", "K": mult = 1 << 10
        case "M": mult = 1 << 20
        case "G": mult = 1 << 30
        default: return UInt64(s) ?? 0
        }
        return (UInt64(s.dropLast()) ?? 0) * mult
    }
    return text.split(separator: "\n").map { line in
        let f = line.split(separator: " ")
        let op: TraceRecord.Op = ["R": .read, "W": .write, "D": .discard, "Z": .writeZeroes, "F": .flush][String(f[0])] ?? .read
        if op == .flush { return TraceRecord(op: .flush, offset: 0, length: 0) }
        return TraceRecord(op: op, offset: size(f[1]), length: size(f[2]))
    }
}

import Foundation
import Qcow2Sim
import TraceKit

/// Helpers shared by the spec test-vector tests.
enum Vector {
    /// Runs `ops` (qemu-io style: "write 0 4k") through a simulated chain and returns the event
    /// lines in QEMU's format without `co`/`image` (or with `image N` when asked).
    static func events(
        size: UInt64 = 1 << 30, create: String = "", chain: Int = 1, populate: Populate = .none,
        drive: String = "", mode: CacheMode = .writeback, readOnly: Bool = false, ops: [String],
        withImage: Bool = false, preparing: [(Int, [String])] = []
    ) throws -> [String] {
        var config = SimulationConfig(
            virtualSize: size, createOptions: try CreateOptions(parsing: create), chainLength: chain, populate: populate,
            driveOptions: try DriveOptions(parsing: drive),
            cacheMode: mode)
        config.readOnly = readOnly
        config.preparation = preparing.map { PreparationSession(image: $0.0, records: $0.1.map(record)) }
        let log = EventLog()
        var reader = ArrayTraceReader(ops.map(record))
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        return log.events.map { $0.line(includeImage: withImage) }
    }

    /// Parses "read 0 4k", "write 130k 4k", "write -z 1M 4k", "discard 0 64k", "flush".
    static func record(_ op: String) -> TraceRecord {
        let f = op.split(separator: " ").map(String.init)
        func size(_ s: String) -> UInt64 {
            let units: [Character: UInt64] = ["k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            if let u = s.last, let m = units[u] { return UInt64(s.dropLast())! * m }
            return UInt64(s)!
        }
        switch f[0] {
        case "read": return TraceRecord(op: .read, offset: size(f[1]), length: size(f[2]))
        case "discard": return TraceRecord(op: .discard, offset: size(f[1]), length: size(f[2]))
        case "flush": return TraceRecord(op: .flush, offset: 0, length: 0)
        default:
            if f[1] == "-z" {
                let unmap = f[2] == "-u"
                let rest = unmap ? Array(f[3...]) : Array(f[2...])
                return TraceRecord(op: .writeZeroes, offset: size(rest[0]), length: size(rest[1]), flags: unmap ? .unmap : [])
            }
            return TraceRecord(op: .write, offset: size(f[1]), length: size(f[2]))
        }
    }

    /// Splits at `;` except inside `{…}`.
    static func splitOutsideBraces(_ s: String) -> [String] {
        var parts: [String] = [], cur = "", depth = 0
        for c in s {
            if c == "{" { depth += 1 } else if c == "}" { depth -= 1 }
            if c == ";" && depth == 0 { parts.append(cur); cur = "" } else { cur.append(c) }
        }
        parts.append(cur)
        return parts
    }

    /// Expands the spec's compact notation (§16): `L2 get 0x40000 hit 0 (x2)`, `miss I {X; Y}`,
    /// `empty`, `flush L2`, `wb RC 3`, separated by ` ; ` or newlines; `#` starts a comment.
    static func expand(_ text: String) -> [String] {
        var out: [String] = []
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            for item in splitOutsideBraces(String(line)) {
                var t = item.trimmingCharacters(in: .whitespaces)
                if t.isEmpty { continue }
                if t.hasPrefix("[") {
                    t = String(t[t.index(after: t.firstIndex(of: "]")!)...]).trimmingCharacters(in: .whitespaces)
                }
                var repeatCount = 1
                if let r = t.range(of: #"\(x(\d+)\)"#, options: .regularExpression) {
                    repeatCount = Int(t[r].dropFirst(2).dropLast())!
                    t = t[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
                }
                var inner: [String] = []
                if let open = t.firstIndex(of: "{"), let close = t.firstIndex(of: "}") {
                    inner = t[t.index(after: open)..<close].split(separator: ";").flatMap { expand(String($0)) }
                    t = t[..<open].trimmingCharacters(in: .whitespaces)
                }
                let w = t.split(separator: " ").map(String.init)
                let c = (w[0] == "flush" || w[0] == "wb" ? w[1] : w[0]) == "L2" ? 1 : 0
                var lines: [String] = []
                if w[0] == "flush" {
                    lines = ["qcow2_cache_flush is_l2_cache \(c)"]
                } else if w[0] == "wb" {
                    lines = ["qcow2_cache_entry_flush is_l2_cache \(c) index \(w[2])"]
                } else {
                    // "L2 get 0xOFF [empty] hit|miss I"
                    let off = w[2]
                    let empty = w.contains("empty")
                    let kind = w[w.count - 2]
                    let idx = w[w.count - 1]
                    lines.append("qcow2_cache_get is_l2_cache \(c) offset \(off) read_from_disk \(empty ? 0 : 1)")
                    if kind == "miss" {
                        lines.append("qcow2_cache_get_replace_entry is_l2_cache \(c) index \(idx)")
                        lines += inner
                        lines.append("qcow2_cache_get_read is_l2_cache \(c) index \(idx)")
                    }
                    lines.append("qcow2_cache_get_done is_l2_cache \(c) index \(idx)")
                }
                for _ in 0..<repeatCount { out += lines }
            }
        }
        return out
    }
}

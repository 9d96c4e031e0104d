import Testing
import TraceKit

/// Requests written as short text lines in tests, in either of two spellings:
/// - qemu-io's commands: `read 0 4k`, `write 130k 4k`, `write -z 1M 4k`, `write -z -u 0 64k`,
///   `discard 0 64k`, `flush`;
/// - one letter: `R 0 4k`, `W 4M 4k`, `D 0 1M`, `Z 0 64k`, `Zu 0 64k` (write-zeroes with unmap),
///   `F`.
/// Sizes are bytes with an optional `k`/`K`, `M` or `G` suffix (powers of 1024). A line this
/// does not understand is a test bug: it is recorded as an issue.
public enum TraceText {
    /// The requests of newline-separated lines (empty lines are skipped).
    public static func records(_ text: String) -> [TraceRecord] {
        text.split(separator: "\n").map { record(String($0)) }
    }

    /// The request one line describes.
    public static func record(_ line: String) -> TraceRecord {
        var f = line.split(separator: " ").map(String.init)[...]
        guard let op = f.popFirst() else {
            Issue.record("empty trace line")
            return TraceRecord(op: .flush, offset: 0, length: 0)
        }
        var kind: TraceRecord.Op
        var flags: TraceRecord.Flags = []
        switch op {
        case "read", "R": kind = .read
        case "write", "W": kind = .write
        case "discard", "D": kind = .discard
        case "Z": kind = .writeZeroes
        case "Zu", "ZU":
            kind = .writeZeroes
            flags = .unmap
        case "flush", "F": return TraceRecord(op: .flush, offset: 0, length: 0)
        default:
            Issue.record("bad trace line '\(line)'")
            return TraceRecord(op: .flush, offset: 0, length: 0)
        }
        if kind == .write, f.first == "-z" {
            f.removeFirst()
            kind = .writeZeroes
            if f.first == "-u" {
                f.removeFirst()
                flags = .unmap
            }
        }
        guard f.count == 2 else {
            Issue.record("bad trace line '\(line)' (want OP OFFSET LENGTH)")
            return TraceRecord(op: kind, offset: 0, length: 0, flags: flags)
        }
        return TraceRecord(op: kind, offset: size(f[f.startIndex], line), length: size(f[f.startIndex + 1], line), flags: flags)
    }

    /// The one-letter spelling of `records`, one per line (for repro reports); `records` reads
    /// it back.
    public static func text(_ records: [TraceRecord]) -> String {
        records.map { r in
            switch r.op {
            case .read: "R \(r.offset) \(r.length)"
            case .write: "W \(r.offset) \(r.length)"
            case .discard: "D \(r.offset) \(r.length)"
            case .writeZeroes: "Z\(r.flags.contains(.unmap) ? "u" : "") \(r.offset) \(r.length)"
            case .flush: "F"
            }
        }.joined(separator: "\n")
    }

    /// Every record of a native CSV text, through TraceKit's native reader (the CLI's).
    public static func native(_ text: String, fileName: String = "trace.csv") throws -> [TraceRecord] {
        var r = NativeTraceReader(bytes: Array(text.utf8), fileName: fileName)
        var out: [TraceRecord] = []
        while let x = try r.next() { out.append(x) }
        return out
    }

    static func size(_ s: String, _ line: String) -> UInt64 {
        let units: [Character: UInt64] = ["k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        let (digits, unit) = s.last.flatMap { units[$0] }.map { (s.dropLast(), $0) } ?? (Substring(s), 1)
        guard let n = UInt64(digits) else {
            Issue.record("bad size '\(s)' in trace line '\(line)'")
            return 0
        }
        return n * unit
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Formats records in the native trace format (see ``NativeTraceReader``), with a header line
/// `time,op,offset,length` or `op,offset,length`. Times are written with nanosecond resolution
/// and trailing zeros dropped, so a written trace reads back to the same records up to 1 ns.
public struct NativeTraceWriter {
    /// Whether records carry a time column.
    public let withTime: Bool
    /// Whether records carry a volume column (`time,op,offset,length,volume`; the time may be
    /// empty there).
    public let withVolume: Bool
    /// Formatted output not yet flushed by the caller.
    public private(set) var bytes: [UInt8] = []

    /// A writer that starts with the header line; `withVolume` adds the fifth column, whose
    /// values ``append(_:volume:)`` takes.
    public init(withTime: Bool, withVolume: Bool = false) {
        self.withTime = withTime
        self.withVolume = withVolume
        bytes.reserveCapacity(1 << 16)
        let header =
            withVolume ? "time,op,offset,length,volume\n" : withTime ? "time,op,offset,length\n" : "op,offset,length\n"
        bytes.append(contentsOf: Array(header.utf8))
    }

    /// Appends one record's line with its volume number (written only by a `withVolume` writer).
    @inline(__always)
    public mutating func append(_ r: TraceRecord, volume: UInt32) {
        append(r)
        guard withVolume else { return }
        bytes.removeLast()
        bytes.append(UInt8(ascii: ","))
        appendInteger(UInt64(volume))
        bytes.append(0x0A)
    }

    /// Appends one record's line. A missing time is written as 0 in a timed trace.
    @inline(__always)
    public mutating func append(_ r: TraceRecord) {
        if withTime {
            appendTime(r.time ?? 0)
            bytes.append(UInt8(ascii: ","))
        } else if withVolume {
            // The time column is there but empty: the record has no time.
            bytes.append(UInt8(ascii: ","))
        }
        bytes.append(r.op.letter.asciiValue ?? UInt8(ascii: "R"))
        // Write-zeroes with unmap is `ZU`; the other flags (FUA, preflush) have no native spelling.
        if r.op == .writeZeroes && r.flags.contains(.unmap) { bytes.append(UInt8(ascii: "U")) }
        bytes.append(UInt8(ascii: ","))
        appendInteger(r.offset)
        bytes.append(UInt8(ascii: ","))
        appendInteger(r.length)
        bytes.append(0x0A)
    }

    /// Returns and clears the buffered output (for streaming to a file in chunks).
    public mutating func take() -> [UInt8] {
        defer { bytes.removeAll(keepingCapacity: true) }
        return bytes
    }

    @inline(__always)
    private mutating func appendInteger(_ v: UInt64) {
        if v < 10 { bytes.append(0x30 + UInt8(v)); return }
        var tmp:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &tmp) { buf in
            while x > 0 {
                buf[19 - n] = 0x30 + UInt8(x % 10)
                x /= 10
                n += 1
            }
            bytes.append(contentsOf: buf[(20 - n)...])
        }
    }

    @inline(__always)
    private mutating func appendTime(_ t: Double) {
        let ns = (max(0, t) * 1e9).rounded()
        guard ns < 1.8e19 else {
            bytes.append(contentsOf: Array(String(t).utf8))
            return
        }
        let total = UInt64(ns)
        appendInteger(total / 1_000_000_000)
        var frac = total % 1_000_000_000
        guard frac != 0 else { return }
        bytes.append(UInt8(ascii: "."))
        var digits = 9
        while frac % 10 == 0 { frac /= 10; digits -= 1 }
        var div: UInt64 = 1
        for _ in 1..<digits { div *= 10 }
        while div > 0 {
            bytes.append(0x30 + UInt8(frac / div % 10))
            div /= 10
        }
    }

    /// Writes `records` to `path` through ``OutputFile`` (a regular file is replaced atomically,
    /// a device or FIFO written in place), streaming in 1 MiB chunks; `-` writes to standard
    /// output. On error a regular target is left as it was.
    public static func write<S: Sequence>(_ records: S, withTime: Bool, to path: String) throws -> Int
    where S.Element == TraceRecord {
        var writer = NativeTraceWriter(withTime: withTime)
        let out = try OutputFile(path: path)
        var n = 0
        do {
            for r in records {
                writer.append(r)
                n += 1
                if writer.bytes.count >= 1 << 20 { try out.write(writer.take()) }
            }
            try out.write(writer.take())
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return n
    }
}

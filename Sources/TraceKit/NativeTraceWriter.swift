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
    /// Formatted output not yet flushed by the caller.
    public private(set) var bytes: [UInt8] = []

    /// A writer that starts with the header line.
    public init(withTime: Bool) {
        self.withTime = withTime
        bytes.reserveCapacity(1 << 16)
        bytes.append(contentsOf: Array((withTime ? "time,op,offset,length\n" : "op,offset,length\n").utf8))
    }

    /// Appends one record's line. A missing time is written as 0 in a timed trace.
    @inline(__always)
    public mutating func append(_ r: TraceRecord) {
        if withTime {
            appendTime(r.time ?? 0)
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

    /// Writes `records` to `path` atomically (temporary file in the same directory, then
    /// rename), streaming in 1 MiB chunks; `-` writes to standard output. On error nothing is
    /// left at `path`.
    public static func write<S: Sequence>(_ records: S, withTime: Bool, to path: String) throws -> Int
    where S.Element == TraceRecord {
        var writer = NativeTraceWriter(withTime: withTime)
        let out = try AtomicOutput(path: path)
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

/// An output file written through a temporary file and renamed into place on `commit()`, so a
/// failure never leaves a half-written file; `-` is standard output.
public final class AtomicOutput {
    private let path: String
    private let tempPath: String?
    private var fd: Int32
    private var done = false

    /// Creates the temporary file next to `path` (exit 73 when it cannot be created).
    public init(path: String) throws {
        self.path = path
        if path == "-" {
            fd = 1
            tempPath = nil
            return
        }
        let dir = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        var template = Array(((dir.isEmpty ? "." : dir) + "/.\(base).tmp.XXXXXX").utf8CString)
        let f = template.withUnsafeMutableBufferPointer { p -> Int32 in
            guard let b = p.baseAddress else { return -1 }
            return mkstemp(b)
        }
        guard f >= 0 else {
            throw TraceError(
                file: path, location: .file, message: "cannot create: \(String(cString: strerror(errno)))", exitCode: 73)
        }
        fchmod(f, 0o644)
        fd = f
        tempPath = template.withUnsafeBufferPointer { p in p.baseAddress.map { String(cString: $0) } }
    }

    deinit { if !done { abandon() } }

    /// Appends bytes.
    public func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { p -> Int in
                guard let b = p.baseAddress else { return 0 }
                return Foundation.write(fd, b + off, bytes.count - off)
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw TraceError(
                    file: path, location: .file, message: "write failed: \(String(cString: strerror(errno)))", exitCode: 74)
            }
            off += n
        }
    }

    /// Closes the temporary file and renames it to the final path.
    public func commit() throws {
        done = true
        guard let tempPath else { return }
        if fsync(fd) != 0 || close(fd) != 0 {
            let msg = String(cString: strerror(errno))
            unlink(tempPath)
            throw TraceError(file: path, location: .file, message: "write failed: \(msg)", exitCode: 74)
        }
        if rename(tempPath, path) != 0 {
            let msg = String(cString: strerror(errno))
            unlink(tempPath)
            throw TraceError(file: path, location: .file, message: "cannot create: \(msg)", exitCode: 73)
        }
    }

    /// Removes the temporary file.
    public func abandon() {
        done = true
        guard let tempPath else { return }
        close(fd)
        unlink(tempPath)
    }
}

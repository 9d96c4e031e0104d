/// Reads qcow2sim's native trace format, streaming in constant memory.
///
/// One request per line, comma-separated, blanks around fields tolerated:
///
/// ```
/// # comment
/// time,op,offset,length      (optional header)
/// 0.000125,W,1M,64K
/// R,0,4096                   (time is optional)
/// ```
///
/// `op` is `R` read, `W` write, `D` discard, `Z` write-zeroes, `ZU` write-zeroes that may
/// unmap (qemu-io `write -z -u`, a guest's WRITE ZEROES with UNMAP; the record carries
/// ``TraceRecord/Flags/unmap``) or `F` flush (either case).
/// Offsets and lengths are bytes with an optional binary suffix (`K` = 1024, `M`, `G`, `T`).
/// Time is decimal seconds since the start of the trace.
public struct NativeTraceReader: TraceReader {
    private var scanner: LineScanner
    private var fields: [Range<Int>] = []
    private var sawContent = false
    private var count = 0
    /// The file name used in error messages.
    public let fileName: String

    /// Opens `path` for streaming.
    public init(path: String) throws {
        try self.init(input: TraceFile.openInput(path: path, decompress: true))
    }

    /// Reads bytes already in memory (tests, fuzzing, benchmarks).
    public init(bytes: [UInt8], fileName: String = "<memory>") {
        self.init(input: ByteInput(bytes: bytes, fileName: fileName))
    }

    init(input: ByteInput) {
        scanner = LineScanner(input)
        fileName = input.fileName
        fields.reserveCapacity(8)
    }

    /// `.line(n)` of the record most recently returned.
    public var location: TraceLocation { .line(scanner.lineNumber) }

    /// The next record, or `nil` at end of input.
    public mutating func next() throws -> TraceRecord? {
        while let range = try scanner.nextLine() {
            let result = try scanner.input.buffer.withUnsafeBufferPointer { p -> TraceRecord? in
                if Scan.isBlankOrComment(p, range) { return nil }
                if let bad = Scan.firstBinaryByte(p, range) {
                    throw error(
                        String(
                            format:
                                "binary data in a text trace (byte 0x%02x at column %d); use --trace-format to pick the right format",
                            p[bad], bad - range.lowerBound + 1))
                }
                Scan.split(p, range, separator: UInt8(ascii: ","), into: &fields)
                let isFirst = !sawContent
                sawContent = true
                if isFirst && isHeader(p) { return nil }
                return try parse(p)
            }
            if let result {
                count += 1
                return result
            }
        }
        if count == 0 {
            throw TraceError(file: fileName, location: .file, message: "empty trace (no records)")
        }
        return nil
    }

    private func isHeader(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        guard fields.count == 3 || fields.count == 4 else { return false }
        let off = fields[fields.count - 2]
        return !off.isEmpty && !Scan.isDigit(p[off.lowerBound]) && p[off.lowerBound] != UInt8(ascii: "-")
            && p[off.lowerBound] != UInt8(ascii: "+")
    }

    private func error(_ message: String) -> TraceError {
        TraceError(file: fileName, location: .line(scanner.lineNumber), message: message)
    }

    @inline(__always)
    private func parse(_ p: UnsafeBufferPointer<UInt8>) throws -> TraceRecord {
        let n = fields.count
        guard n == 3 || n == 4 else { throw error("expected 3 or 4 fields, found \(n)") }
        var time: Double?
        if n == 4 {
            switch Scan.decimal(p, fields[0]) {
            case .value(let t): time = t
            case .negative: throw error("time '\(Scan.text(p, fields[0]))' is negative")
            case .invalid: throw error("invalid time '\(Scan.text(p, fields[0]))' (expected seconds as a decimal number)")
            }
        }
        let opField = fields[n - 3]
        let op: TraceRecord.Op
        var flags: TraceRecord.Flags = []
        if opField.count == 2 && p[opField.lowerBound] | 0x20 == UInt8(ascii: "z")
            && p[opField.lowerBound + 1] | 0x20 == UInt8(ascii: "u")
        {
            op = .writeZeroes
            flags = .unmap
        } else if opField.count == 1 {
            switch p[opField.lowerBound] | 0x20 {
            case UInt8(ascii: "r"): op = .read
            case UInt8(ascii: "w"): op = .write
            case UInt8(ascii: "d"): op = .discard
            case UInt8(ascii: "z"): op = .writeZeroes
            case UInt8(ascii: "f"): op = .flush
            default: throw error("invalid op '\(Scan.text(p, opField))' (expected R, W, D, Z, ZU or F)")
            }
        } else {
            throw error("invalid op '\(Scan.text(p, opField))' (expected R, W, D, Z, ZU or F)")
        }
        let offset = try number(p, fields[n - 2], "offset")
        let length = try number(p, fields[n - 1], "length")
        if offset.addingReportingOverflow(length).overflow {
            throw error("request at offset \(offset) with length \(length) ends beyond 2^64 bytes")
        }
        return TraceRecord(time: time, op: op, offset: offset, length: length, flags: flags)
    }

    @inline(__always)
    private func number(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, _ what: String) throws -> UInt64 {
        switch Scan.size(p, r) {
        case .value(let v): return v
        case .overflow: throw error("\(what) '\(Scan.text(p, r))' overflows 64 bits")
        case .negative: throw error("\(what) '\(Scan.text(p, r))' is negative")
        case .invalid:
            if r.isEmpty { throw error("missing \(what) (expected bytes, optionally with a K, M, G or T suffix)") }
            throw error("invalid \(what) '\(Scan.text(p, r))' (expected bytes, optionally with a K, M, G or T suffix)")
        }
    }
}

/// Reads qcow2sim's native trace format, streaming in constant memory.
///
/// One request per line, comma-separated, blanks around fields tolerated:
///
/// ```
/// # comment
/// time,op,offset,length      (optional header)
/// 0.000125,W,1M,64K
/// R,0,4096                   (time is optional)
/// 0.5,W,0,4K,17              (a fifth field: the volume, a decimal number; the time may be
///                             empty then: `,R,0,4K,17`)
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
    /// Line of the record most recently returned.
    private var line = 0
    /// Records parsed ahead by the fast path, all from consecutive lines starting at
    /// `batchFirstLine`; `position` is the next to return.
    private var batch = [TraceRecord](repeating: TraceRecord(op: .read, offset: 0, length: 0), count: NativeTraceReader.batchSize)
    private var batchCount = 0
    private var position = 0
    private var batchFirstLine = 0
    /// Whether plain lines take the fast path (tests turn it off to compare with the general path).
    var fastPath = true
    /// Where volume numbers are interned (nil: records are not tagged).
    private var volumes: VolumeTable?
    /// `--device`: only records of this volume number (the general path then reads every line).
    private var selected: UInt64?

    /// Tags records with their volumes in `volumes` and keeps only volume `device` (a decimal
    /// number) when given; a usage error (exit 64) for a device that is not a number.
    mutating func select(_ device: String?, volumes: VolumeTable?) throws {
        self.volumes = volumes
        if let device {
            selected = try NativeBinaryTrace.volumeNumber(device)
            fastPath = false
        }
    }
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
    public var location: TraceLocation { .line(line) }

    /// The next record, or `nil` at end of input.
    public mutating func next() throws -> TraceRecord? {
        // After the first content line (which may be a header), plain lines take the fast path;
        // everything else (blanks, comments, suffixes, blanks around fields, errors, a line not
        // yet complete in the buffer) goes through the general path below, unchanged.
        if position < batchCount || (sawContent && fastPath && fillBatch()) {
            let r = batch[position]
            line = batchFirstLine + position
            position += 1
            count += 1
            return r
        }
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
                var r = try parse(p)
                if fields.count == 5 {
                    // The raw number travels in `volume` (+1, 0 = none) from parse to here.
                    let raw = UInt64(r.volume - 1)
                    if let selected, selected != raw { return nil }
                    r.volume = volumes?.intern(number: raw) ?? 0
                } else if selected != nil {
                    return nil
                }
                return r
            }
            if let result {
                count += 1
                line = scanner.lineNumber
                return result
            }
        }
        if count == 0 {
            throw TraceError(file: fileName, location: .file, message: "empty trace (no records)")
        }
        return nil
    }

    /// Lines parsed per pass of the fast path.
    static let batchSize = 1024

    /// The fast path: parses the plain lines at the start of the buffered input, up to
    /// ``batchSize``, in one pass over the buffer, into `batch`. Returns whether it parsed any.
    ///
    /// A plain line is complete in the buffer and has the form `[time,]op,offset,length`: time
    /// digits with an optional fraction, a one-letter op, offset and length of 1 to 19 decimal
    /// digits, `\n` or `\r\n`, which is what the writer and the generator produce. The pass
    /// stops before anything else (blanks, comments, suffixes, blanks around fields, errors, a
    /// line not yet complete), which the general path then reads exactly as it always did. No
    /// line is consumed before its `\n` is in the buffer, and a plain line is at most about 80
    /// bytes, so the general path's checks on long lines still see every line that is not plain.
    private mutating func fillBatch() -> Bool {
        let input = scanner.input
        let s = input.start
        let e = input.end
        guard e - s >= 6 else { return false }
        position = 0
        batchFirstLine = scanner.lineNumber + 1
        let (parsed, last) = input.buffer.withUnsafeBufferPointer { buf -> (Int, Int) in
            guard let b = buf.baseAddress else { return (0, -1) }
            // Only complete lines are parsed: everything up to the last `\n` in the buffer. That
            // `\n` stops every scan below, so no step needs a bounds check.
            // The search is bounded so that a long partial line at the end of the buffer is not
            // rescanned for every batch; without a `\n` in reach the general path reads on.
            let floor = max(s, e - 256)
            var lastNL = e - 1
            while lastNL >= floor && b[lastNL] != 0x0A { lastNL -= 1 }
            guard lastNL >= floor else { return (0, -1) }
            let end = lastNL + 1
            return batch.withUnsafeMutableBufferPointer { out -> (Int, Int) in
                var i = s
                var k = 0
                var lastNewline = -1
                let volumes = self.volumes
                while k < out.count, i < end, let (parsed, newline) = Self.plainLine(b, buf, from: i) {
                    var record = parsed
                    if record.volume != 0 { record.volume = volumes?.intern(number: UInt64(record.volume - 1)) ?? 0 }
                    out[k] = record
                    k += 1
                    lastNewline = newline
                    i = newline + 1
                }
                return (k, lastNewline)
            }
        }
        batchCount = parsed
        guard parsed > 0 else { return false }
        scanner.consumeLines(parsed, lastNewlineAt: last)
        return true
    }

    /// The record on the plain line starting at `s` and the index of its `\n`, or `nil` when the
    /// line is not plain (see ``fillBatch()``). A `\n` must follow `s` in the buffer.
    @inline(__always)
    private static func plainLine(_ b: UnsafePointer<UInt8>, _ buf: UnsafeBufferPointer<UInt8>, from s: Int)
        -> (TraceRecord, Int)?
    {
        var i = s
        var time: Double?
        var c = b[i]
        if c &- 0x30 < 10 {
            // Scan.decimal does the conversion, so the value is the general path's to the bit.
            let t0 = i
            while b[i] &- 0x30 < 10 || b[i] == UInt8(ascii: ".") { i += 1 }
            guard i - t0 <= 40, b[i] == UInt8(ascii: ","), case .value(let t) = Scan.decimal(buf, t0..<i) else {
                return nil
            }
            time = t
            i += 1
            c = b[i]
        }
        let op: TraceRecord.Op
        switch c | 0x20 {
        case UInt8(ascii: "r"): op = .read
        case UInt8(ascii: "w"): op = .write
        case UInt8(ascii: "d"): op = .discard
        case UInt8(ascii: "z"): op = .writeZeroes
        case UInt8(ascii: "f"): op = .flush
        default: return nil
        }
        i += 1
        guard b[i] == UInt8(ascii: ",") else { return nil }
        i += 1
        // 1 to 19 digits: 10^19 - 1 < 2^64, so neither number can overflow (longer runs wrap but
        // are then refused).
        var offset: UInt64 = 0
        var from = i
        while case let d = b[i] &- 0x30, d < 10 {
            offset = offset &* 10 &+ UInt64(d)
            i &+= 1
        }
        guard i > from, i - from <= 19, b[i] == UInt8(ascii: ",") else { return nil }
        i += 1
        var length: UInt64 = 0
        from = i
        while case let d = b[i] &- 0x30, d < 10 {
            length = length &* 10 &+ UInt64(d)
            i &+= 1
        }
        guard i > from, i - from <= 19 else { return nil }
        // A fifth field, the volume (with a time field: `time,op,offset,length,volume`).
        var volume: UInt32 = 0
        if b[i] == UInt8(ascii: ","), time != nil {
            i += 1
            var v: UInt64 = 0
            from = i
            while case let d = b[i] &- 0x30, d < 10 {
                v = v &* 10 &+ UInt64(d)
                i &+= 1
            }
            guard i > from, i - from <= 10, v < UInt64(UInt32.max) else { return nil }
            volume = UInt32(v) + 1
        }
        if b[i] == 0x0D { i += 1 }
        guard b[i] == 0x0A, !offset.addingReportingOverflow(length).overflow else { return nil }
        return (TraceRecord(time: time, op: op, offset: offset, length: length, volume: volume), i)
    }

    private func isHeader(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        guard fields.count >= 3 && fields.count <= 5 else { return false }
        let off = fields[fields.count == 5 ? 2 : fields.count - 2]
        return !off.isEmpty && !Scan.isDigit(p[off.lowerBound]) && p[off.lowerBound] != UInt8(ascii: "-")
            && p[off.lowerBound] != UInt8(ascii: "+")
    }

    private func error(_ message: String) -> TraceError {
        TraceError(file: fileName, location: .line(scanner.lineNumber), message: message)
    }

    @inline(__always)
    private func parse(_ p: UnsafeBufferPointer<UInt8>) throws -> TraceRecord {
        let all = fields.count
        guard all >= 3 && all <= 5 else {
            throw error("expected 3 or 4 fields, or 5 with a volume (time,op,offset,length,volume), found \(all)")
        }
        // With a volume the fields before it are a timed line's (the time may be empty).
        let n = min(all, 4)
        var time: Double?
        if n == 4 && !(all == 5 && fields[0].isEmpty) {
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
        var volume: UInt32 = 0
        if all == 5 {
            let r = fields[4]
            guard case .value(let v) = Scan.unsigned(p, r), v < UInt64(UInt32.max) else {
                throw error("invalid volume '\(Scan.text(p, r))' (expected a decimal volume number from 0 to 4294967294)")
            }
            volume = UInt32(v) + 1
        }
        return TraceRecord(time: time, op: op, offset: offset, length: length, flags: flags, volume: volume)
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

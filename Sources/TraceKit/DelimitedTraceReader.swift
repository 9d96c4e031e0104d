/// One line-oriented trace format: how a line splits into fields and how fields become a record.
/// Each public trace set (MSR, SYSTOR, Tencent, Alibaba, SPC, fio, QEMU, CloudPhysics CSV) is
/// one conforming type in its own file; ``DelimitedTraceReader`` does the streaming.
protocol LineFormat {
    /// Field separator, or `nil` for runs of blanks.
    static var separator: UInt8? { get }
    /// Creates the per-trace state (selection options parsed here).
    init(options: TraceOptions) throws
    /// Whether the first content line is a header to skip.
    func isHeader(_ line: inout FieldCursor) -> Bool
    /// The record on this line, or `nil` to skip the line.
    mutating func record(_ line: inout FieldCursor) throws -> TraceRecord?
    /// What `time == 0` stands for (``TraceReader/timeOrigin``).
    var timeOrigin: TraceTimeOrigin { get }
    /// The volume of the record just parsed from `line`, interned in `table` (0: the format
    /// has no volume field).
    func volume(_ line: inout FieldCursor, _ table: VolumeTable) -> UInt32
}

extension LineFormat {
    func isHeader(_ line: inout FieldCursor) -> Bool { false }
    var timeOrigin: TraceTimeOrigin { .zero }
    func volume(_ line: inout FieldCursor, _ table: VolumeTable) -> UInt32 { 0 }
}

/// The fields of one line, with typed accessors whose errors quote the field and say what was
/// expected.
struct FieldCursor {
    let p: UnsafeBufferPointer<UInt8>
    let fields: [Range<Int>]
    let line: Int
    let fileName: String
    let whole: Range<Int>

    var count: Int { fields.count }

    func error(_ m: String) -> TraceError { TraceError(file: fileName, location: .line(line), message: m) }

    func text(_ i: Int) -> String { Scan.text(p, fields[i]) }

    func expectFields(_ n: ClosedRange<Int>, _ what: String) throws {
        guard n.contains(fields.count) else {
            let exp = n.lowerBound == n.upperBound ? "\(n.lowerBound)" : "\(n.lowerBound) to \(n.upperBound)"
            throw error("expected \(exp) fields (\(what)), found \(fields.count)")
        }
    }

    func equals(_ i: Int, _ s: StaticString) -> Bool { Scan.equalsIgnoringCase(p, fields[i], s) }

    func isNumeric(_ i: Int) -> Bool {
        let r = fields[i]
        return !r.isEmpty
            && (Scan.isDigit(p[r.lowerBound]) || p[r.lowerBound] == UInt8(ascii: "-") || p[r.lowerBound] == UInt8(ascii: "."))
    }

    func unsigned(_ i: Int, _ name: String) throws -> UInt64 {
        switch Scan.unsigned(p, fields[i]) {
        case .value(let v): return v
        case .overflow: throw error("\(name) '\(text(i))' overflows 64 bits")
        case .negative: throw error("\(name) '\(text(i))' is negative")
        case .invalid: throw error("invalid \(name) '\(text(i))' (expected a decimal integer)")
        }
    }

    func hex(_ i: Int, _ name: String) throws -> UInt64 {
        switch Scan.hex(p, fields[i]) {
        case .value(let v): return v
        case .overflow: throw error("\(name) '\(text(i))' overflows 64 bits")
        default: throw error("invalid \(name) '\(text(i))' (expected a hexadecimal number)")
        }
    }

    /// A count of `unit`-byte units converted to bytes, with overflow checked.
    func bytes(_ i: Int, _ name: String, unit: UInt64 = 1) throws -> UInt64 {
        let v = try unsigned(i, name)
        let (b, o) = v.multipliedReportingOverflow(by: unit)
        if o { throw error("\(name) '\(text(i))' overflows 64 bits in bytes") }
        return b
    }

    func decimal(_ i: Int, _ name: String) throws -> Double {
        switch Scan.decimal(p, fields[i]) {
        case .value(let v): return v
        case .negative: throw error("\(name) '\(text(i))' is negative")
        case .invalid: throw error("invalid \(name) '\(text(i))' (expected a decimal number)")
        }
    }

    /// Seconds with an integer and fraction part, split so the integer part can be rebased exactly.
    func seconds(_ i: Int, _ name: String) throws -> (whole: UInt64, fraction: Double) {
        let r = fields[i]
        var dot = r.upperBound
        for k in r where p[k] == UInt8(ascii: ".") { dot = k; break }
        let whole: UInt64
        switch Scan.unsigned(p, r.lowerBound..<dot) {
        case .value(let v): whole = v
        case .negative: throw error("\(name) '\(text(i))' is negative")
        default:
            if dot == r.lowerBound && dot < r.upperBound {
                whole = 0
            } else {
                throw error("invalid \(name) '\(text(i))' (expected seconds as a decimal number)")
            }
        }
        guard dot < r.upperBound else { return (whole, 0) }
        switch Scan.decimal(p, dot..<r.upperBound) {
        case .value(let f) where dot + 1 < r.upperBound: return (whole, f)
        default: throw error("invalid \(name) '\(text(i))' (expected seconds as a decimal number)")
        }
    }

    /// Checks that offset + length fits in 64 bits.
    func checkEnd(_ offset: UInt64, _ length: UInt64) throws {
        if offset.addingReportingOverflow(length).overflow {
            throw error("request at offset \(offset) with length \(length) ends beyond 2^64 bytes")
        }
    }
}

/// Streams a ``LineFormat`` in constant memory: blank lines and `#` comments skipped, an optional
/// header, binary input rejected with its position, an empty trace reported at the file.
struct DelimitedTraceReader<Format: LineFormat>: TraceReader {
    private var scanner: LineScanner
    private var fields: [Range<Int>] = []
    private var format: Format
    private var sawContent = false
    private var count = 0
    private var line = 0
    let fileName: String
    /// Where records' volumes are interned (nil: records are not tagged).
    let volumes: VolumeTable?

    init(input: ByteInput, options: TraceOptions, volumes: VolumeTable? = nil) throws {
        self.volumes = volumes
        scanner = LineScanner(input)
        fileName = input.fileName
        format = try Format(options: options)
        fields.reserveCapacity(16)
    }

    var location: TraceLocation { .line(line) }

    var timeOrigin: TraceTimeOrigin { format.timeOrigin }

    mutating func next() throws -> TraceRecord? {
        while let range = try scanner.nextLine() {
            let n = scanner.lineNumber
            let rec = try scanner.input.buffer.withUnsafeBufferPointer { p -> TraceRecord? in
                if Scan.isBlankOrComment(p, range) { return nil }
                if let bad = Scan.firstBinaryByte(p, range) {
                    throw TraceError(
                        file: fileName, location: .line(n),
                        message: String(
                            format:
                                "binary data in a text trace (byte 0x%02x at column %d); use --trace-format to pick the right format",
                            p[bad], bad - range.lowerBound + 1))
                }
                if let sep = Format.separator {
                    Scan.split(p, range, separator: sep, into: &fields)
                } else {
                    Scan.words(p, range, into: &fields)
                }
                var cursor = FieldCursor(p: p, fields: fields, line: n, fileName: fileName, whole: range)
                if !sawContent {
                    sawContent = true
                    if format.isHeader(&cursor) { return nil }
                }
                guard var rec = try format.record(&cursor) else { return nil }
                if let volumes { rec.volume = format.volume(&cursor, volumes) }
                return rec
            }
            if let rec {
                count += 1
                line = n
                return rec
            }
        }
        if count == 0 {
            throw TraceError(file: fileName, location: .file, message: "empty trace (no records)")
        }
        return nil
    }
}

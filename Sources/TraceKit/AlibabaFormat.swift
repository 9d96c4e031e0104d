/// Alibaba Cloud block traces (2020, `io_traces.csv`), no header:
/// `device_id,opcode,offset,length,timestamp`; opcode `R` or `W`, offset and length in bytes,
/// timestamp in microseconds since the epoch. ``TraceOptions/device`` selects the device ID.
/// Times are reported relative to the first selected row, subtracted in integer microseconds
/// (``timeOrigin``; the mapping stage rebases or adds it back).
struct AlibabaFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    private let device: UInt64?
    private var originMicros: UInt64?
    private(set) var timeOrigin = TraceTimeOrigin.zero

    init(options: TraceOptions) throws {
        if let d = options.device {
            guard let n = UInt64(d) else {
                throw TraceError(
                    file: "--device", location: .file, message: "invalid device '\(d)' (expected a decimal device ID)",
                    exitCode: 64)
            }
            device = n
        } else {
            device = nil
        }
    }

    func isHeader(_ f: inout FieldCursor) -> Bool { f.count >= 1 && f.equals(0, "device_id") }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(5...5, "device_id,opcode,offset,length,timestamp")
        let dev = try f.unsigned(0, "device ID")
        let op: TraceRecord.Op
        if f.equals(1, "R") {
            op = .read
        } else if f.equals(1, "W") {
            op = .write
        } else {
            throw f.error("invalid opcode '\(f.text(1))' (expected R or W)")
        }
        let offset = try f.bytes(2, "offset")
        let length = try f.bytes(3, "length")
        let t = try f.unsigned(4, "timestamp")
        try f.checkEnd(offset, length)
        if let device, device != dev { return nil }
        let base = originMicros ?? t
        if originMicros == nil {
            originMicros = t
            timeOrigin = TraceTimeOrigin(ticks: t, ticksPerSecond: 1_000_000)
        }
        // Epoch µs divided as a whole would round to 2.4·10⁻⁷ s; the difference is exact.
        return TraceRecord(time: (t >= base ? Double(t - base) : -Double(base - t)) / 1e6, op: op, offset: offset, length: length)
    }

    /// The numeric field `--device` selects on (already checked by `record`).
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        guard case .value(let n) = Scan.unsigned(f.p, f.fields[0]) else { return 0 }
        return table.intern(number: n)
    }
}

/// SNIA SYSTOR'17 CSV: header `Timestamp,Response,IOType,LUN,Offset,Size`; Timestamp in epoch
/// seconds with a fraction, IOType `R` or `W`, Offset and Size in bytes. ``TraceOptions/device``
/// selects the LUN. Rows are not sorted by time (the reorder window sorts them); times are
/// reported relative to the first row's whole second (``timeOrigin``) so the fraction keeps its
/// nanoseconds; the mapping stage rebases or adds the origin back.
struct SystorFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    private let lun: UInt64?
    private var originSecond: UInt64?
    private(set) var timeOrigin = TraceTimeOrigin.zero

    init(options: TraceOptions) throws {
        if let d = options.device {
            guard let n = UInt64(d) else {
                throw TraceError(
                    file: "--device", location: .file, message: "invalid LUN '\(d)' (expected a decimal number)", exitCode: 64)
            }
            lun = n
        } else {
            lun = nil
        }
    }

    func isHeader(_ f: inout FieldCursor) -> Bool { f.count >= 1 && f.equals(0, "Timestamp") }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(6...6, "Timestamp,Response,IOType,LUN,Offset,Size")
        let (whole, fraction) = try f.seconds(0, "timestamp")
        let op: TraceRecord.Op
        if f.equals(2, "R") {
            op = .read
        } else if f.equals(2, "W") {
            op = .write
        } else {
            throw f.error("invalid I/O type '\(f.text(2))' (expected R or W)")
        }
        let l = try f.unsigned(3, "LUN")
        let offset = try f.bytes(4, "offset")
        let size = try f.bytes(5, "size")
        try f.checkEnd(offset, size)
        if let lun, lun != l { return nil }
        let base = originSecond ?? whole
        if originSecond == nil {
            originSecond = whole
            timeOrigin = TraceTimeOrigin(seconds: whole, fraction: 0)
        }
        // A Double of 1.5·10⁹ s resolves 2.4·10⁻⁷ s; small whole-second differences keep the ns.
        let delta = whole >= base ? Double(whole - base) : -Double(base - whole)
        return TraceRecord(time: delta + fraction, op: op, offset: offset, length: size)
    }

    /// The numeric field `--device` selects on (already checked by `record`).
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        guard case .value(let n) = Scan.unsigned(f.p, f.fields[3]) else { return 0 }
        return table.intern(number: n)
    }
}

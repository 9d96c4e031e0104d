/// Tencent CBS cloud block storage (SNIA IOTTA) CSV, no header:
/// `Timestamp,Offset,Size,IOType,VolumeID`; Timestamp in epoch seconds, Offset and Size in
/// 512-byte sectors, IOType 0 = read, 1 = write. ``TraceOptions/device`` selects the volume.
/// Rows are only roughly sorted (1 s granularity); the reorder window sorts them. Whole epoch
/// seconds are exact as a `Double`, so times are the absolute clock (the mapping stage rebases).
struct TencentCBSFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    private let volume: UInt64?

    init(options: TraceOptions) throws {
        if let d = options.device {
            guard let n = UInt64(d) else {
                throw TraceError(
                    file: "--device", location: .file, message: "invalid volume '\(d)' (expected a decimal volume ID)",
                    exitCode: 64)
            }
            volume = n
        } else {
            volume = nil
        }
    }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(5...5, "Timestamp,Offset,Size,IOType,VolumeID")
        let t = try f.unsigned(0, "timestamp")
        let offset = try f.bytes(1, "offset", unit: 512)
        let size = try f.bytes(2, "size", unit: 512)
        let op: TraceRecord.Op
        switch try f.unsigned(3, "I/O type") {
        case 0: op = .read
        case 1: op = .write
        default: throw f.error("invalid I/O type '\(f.text(3))' (expected 0 for read or 1 for write)")
        }
        let v = try f.unsigned(4, "volume ID")
        try f.checkEnd(offset, size)
        if let volume, volume != v { return nil }
        return TraceRecord(time: Double(t), op: op, offset: offset, length: size)
    }

    /// The numeric field `--device` selects on (already checked by `record`).
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        guard case .value(let n) = Scan.unsigned(f.p, f.fields[4]) else { return 0 }
        return table.intern(number: n)
    }
}

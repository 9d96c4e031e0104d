/// SPC / UMass Trace Repository CSV (Financial1, WebSearch1, …):
/// `ASU,LBA,Size,Opcode,Timestamp[,…]`; LBA in 512-byte blocks, Size in bytes, Opcode `r` or
/// `w` (either case), Timestamp in seconds from the start of the trace.
/// ``TraceOptions/device`` selects the ASU (application storage unit).
struct SPCFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    private let asu: UInt64?

    init(options: TraceOptions) throws {
        if let d = options.device {
            guard let n = UInt64(d) else {
                throw TraceError(
                    file: "--device", location: .file, message: "invalid ASU '\(d)' (expected a decimal number)", exitCode: 64)
            }
            asu = n
        } else {
            asu = nil
        }
    }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(5...16, "ASU,LBA,Size,Opcode,Timestamp")
        let a = try f.unsigned(0, "ASU")
        let offset = try f.bytes(1, "LBA", unit: 512)
        let size = try f.bytes(2, "size")
        let op: TraceRecord.Op
        if f.equals(3, "r") {
            op = .read
        } else if f.equals(3, "w") {
            op = .write
        } else {
            throw f.error("invalid opcode '\(f.text(3))' (expected r or w)")
        }
        let time = try f.decimal(4, "timestamp")
        try f.checkEnd(offset, size)
        if let asu, asu != a { return nil }
        return TraceRecord(time: time, op: op, offset: offset, length: size)
    }

    /// The numeric field `--device` selects on (already checked by `record`).
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        guard case .value(let n) = Scan.unsigned(f.p, f.fields[0]) else { return 0 }
        return table.intern(number: n)
    }
}

/// The CSV twin of the CloudPhysics vscsi trace (libCacheSim `data/cloudPhysicsIO.csv`):
/// header `version,time,op,size,lbn`; time in whole seconds, op the SCSI opcode in hex
/// (`28` READ(10), `2a` WRITE(10); 6/12/16-byte variants too), size in bytes, lbn in 512-byte
/// sectors. Other opcodes are skipped, as in ``VscsiReader``.
struct CloudPhysicsCSVFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    init(options: TraceOptions) throws {}

    func isHeader(_ f: inout FieldCursor) -> Bool { f.count >= 1 && f.equals(0, "version") }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(5...5, "version,time,op,size,lbn")
        let time = try f.decimal(1, "time")
        let op: TraceRecord.Op
        switch try f.hex(2, "op") & 0xFF {
        case 0x08, 0x28, 0xA8, 0x88: op = .read
        case 0x0A, 0x2A, 0xAA, 0x8A: op = .write
        default: return nil
        }
        let size = try f.bytes(3, "size")
        let offset = try f.bytes(4, "lbn", unit: 512)
        try f.checkEnd(offset, size)
        return TraceRecord(time: time, op: op, offset: offset, length: size)
    }
}

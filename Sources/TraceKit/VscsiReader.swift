/// Reads VMware vscsi traces (the CloudPhysics format libCacheSim reads), versions 1 and 2.
///
/// Little-endian records: `sn:u32 len:u32 nSG:u32 cmd:u16 ver:u16 lbn:u64 ts:u64`
/// (32 bytes, v1), plus `rt:u64` (40 bytes, v2). `ver >> 8` of the first record gives the
/// version; `len` is bytes, `lbn` 512-byte sectors, `ts` microseconds. `cmd` is the SCSI CDB
/// opcode: READ(6/10/12/16) = 0x08/0x28/0xa8/0x88, WRITE(6/10/12/16) = 0x0a/0x2a/0xaa/0x8a;
/// other commands are counted in ``skippedCommands`` and skipped.
public struct VscsiReader: TraceReader {
    private let input: ByteInput
    private var recordSize = 0
    private var index = 0
    private var lastOffset: UInt64 = 0
    private var lastIndex = 0
    /// Records with a SCSI opcode other than READ or WRITE, skipped so far.
    public private(set) var skippedCommands = 0
    /// The file name used in error messages.
    public let fileName: String

    init(input: ByteInput) {
        self.input = input
        fileName = input.fileName
    }

    /// Reads bytes already in memory.
    public init(bytes: [UInt8], fileName: String = "<memory>") {
        self.init(input: ByteInput(bytes: bytes, fileName: fileName))
    }

    /// `byte N (record I)` of the last record.
    public var location: TraceLocation { .record(byteOffset: lastOffset, index: lastIndex) }

    /// The trace version announced by a record's `ver` field (1 or 2), or nil.
    static func version(_ b: ArraySlice<UInt8>) -> Int? {
        guard b.count >= 16 else { return nil }
        let v = b[b.startIndex + 15]
        return v == 1 || v == 2 ? Int(v) : nil
    }

    private func error(_ off: UInt64, _ m: String) -> TraceError {
        TraceError(file: fileName, location: .record(byteOffset: off, index: index), message: m)
    }

    /// The next read or write, or `nil` at end of input.
    public mutating func next() throws -> TraceRecord? {
        while true {
            let off = input.offset
            if recordSize == 0 {
                guard try input.ensure(16) else {
                    if input.available == 0 {
                        throw TraceError(file: fileName, location: .file, message: "empty trace (no records)")
                    }
                    throw error(
                        off, "truncated record: \(input.available) bytes left, expected a 32-byte (v1) or 40-byte (v2) record")
                }
                let ver = input.buffer[input.start + 14 + 1]
                switch ver {
                case 1: recordSize = 32
                case 2: recordSize = 40
                default:
                    let raw = UInt16(input.buffer[input.start + 14]) | UInt16(ver) << 8
                    throw error(
                        off, String(format: "unknown vscsi version 0x%04x (expected 0x01xx for v1 or 0x02xx for v2)", raw))
                }
            }
            guard try input.ensure(recordSize) else {
                if input.available == 0 { return nil }
                throw error(off, "truncated record: \(input.available) bytes left, expected \(recordSize)")
            }
            let s = input.start
            let size = recordSize
            let (len, cmd, ver, lbn, ts) = input.buffer.withUnsafeBytes { raw in
                let p = raw.baseAddress.unsafelyUnwrapped + s
                return (
                    UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                    UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                    UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)),
                    UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                    UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
                )
            }
            guard Int(ver >> 8) == size / 8 - 3 else {
                throw error(off, String(format: "record version 0x%04x differs from the trace's v%d", ver, size == 32 ? 1 : 2))
            }
            input.start += size
            let i = index
            index += 1
            let op: TraceRecord.Op
            switch cmd & 0xFF {
            case 0x08, 0x28, 0xA8, 0x88: op = .read
            case 0x0A, 0x2A, 0xAA, 0x8A: op = .write
            default:
                skippedCommands += 1
                continue
            }
            // Located at this record (`i`): `index` already counts it.
            guard lbn >> 55 == 0 else {
                throw TraceError(
                    file: fileName, location: .record(byteOffset: off, index: i),
                    message: "offset of sector \(lbn) overflows 64 bits")
            }
            lastOffset = off
            lastIndex = i
            return TraceRecord(time: Double(ts) / 1e6, op: op, offset: lbn << 9, length: UInt64(len))
        }
    }
}

import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// Each malformed-input class, per reader, with its exact located message.
@Suite struct MalformedInputTests {
    /// A minimal little-endian blktrace record: `D` issue of a 4 KiB read on 8,0.
    static func blktraceRecord(
        seq: UInt32 = 1, time: UInt64 = 1000, version: UInt32 = 7, sector: UInt64 = 2048, pdu: [UInt8] = []
    ) -> [UInt8] {
        var b: [UInt8] = []
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func put64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        put32(0x6561_7400 | version); put32(seq); put64(time); put64(sector); put32(4096)
        put32(7 | (1 | 1 << 6) << 16)  // __BLK_TA_ISSUE | BLK_TC_READ | BLK_TC_ISSUE
        put32(1); put32(8 << 20); put32(0)
        b += [0, 0]
        withUnsafeBytes(of: UInt16(pdu.count).littleEndian) { b += $0 }
        return b + pdu
    }

    static func vscsiRecord(cmd: UInt16 = 0x28, ver: UInt16 = 0x0100, lbn: UInt64 = 8) -> [UInt8] {
        var b: [UInt8] = []
        func put(_ v: some FixedWidthInteger) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        put(UInt32(1)); put(UInt32(4096)); put(UInt32(1)); put(cmd); put(ver); put(lbn); put(UInt64(1_000_000))
        return b
    }

    /// Past the first record the reader decodes buffered records in batches of 1024
    /// (BlktraceStream.decodeBatch): records and errors across and beyond a batch boundary are the
    /// same as record by record. Record i is at byte 48·i, at time 1000 + 2000·i ns.
    @Test func blktraceBatchesGiveTheSameRecordsAndErrors() throws {
        let good = (0..<1500).flatMap { i in Self.blktraceRecord(seq: UInt32(i + 1), time: 1000 + 2000 * UInt64(i)) }
        guard case .success(let recs) = TraceFixtures.readBytes(good, fileName: "t", format: .blktrace) else {
            Issue.record("failed"); return
        }
        #expect(recs.count == 1500)
        #expect(recs[1234] == TraceRecord(time: 2_468_000 / 1e9, op: .read, offset: 2048 * 512, length: 4096))
        #expect(recs[1499] == TraceRecord(time: 2_998_000 / 1e9, op: .read, offset: 2048 * 512, length: 4096))
        let badMagic = good + [0xDE, 0xAD, 0xBE, 0xEF] + Self.blktraceRecord().dropFirst(4)
        #expect(
            TraceFixtures.errorText(badMagic, fileName: "t.blktrace.0", format: .blktrace)
                == "t.blktrace.0: byte 72000 (record 1500): error: bad magic 0xefbeadde (expected 0x656174xx, a blktrace record)")
        let version = Array(good.prefix(1100 * 48)) + Self.blktraceRecord(version: 6) + good.suffix(10 * 48)
        #expect(
            TraceFixtures.errorText(version, fileName: "t.blktrace.0", format: .blktrace)
                == "t.blktrace.0: byte 52800 (record 1100): error: unsupported blktrace version 6 (expected 7)")
        let payload = Array(good.prefix(1100 * 48)) + Self.blktraceRecord(pdu: [1, 2, 3, 4]).dropLast(3)
        #expect(
            TraceFixtures.errorText(payload, fileName: "t.blktrace.0", format: .blktrace)
                == "t.blktrace.0: byte 52800 (record 1100): error: truncated record: payload of 4 bytes but only 1 left")
        // A record with a payload inside a batch shifts the next record's byte offset by its length.
        let withPdu =
            Array(good.prefix(1030 * 48)) + Self.blktraceRecord(time: 3_000_000, pdu: [9, 9, 9, 9, 9, 9, 9, 9])
            + Self.blktraceRecord(time: 3_002_000, sector: 1 << 55)
        #expect(
            TraceFixtures.errorText(withPdu, fileName: "t.blktrace.0", format: .blktrace)
                == "t.blktrace.0: byte 49496 (record 1031): error: offset of sector 36028797018963968 overflows 64 bits")
    }

    @Test func syntheticBlktraceRecordsDecode() throws {
        let b = Self.blktraceRecord(seq: 1, time: 1000) + Self.blktraceRecord(seq: 2, time: 3000)
        guard case .success(let recs) = TraceFixtures.readBytes(b, fileName: "t", format: nil) else {
            Issue.record("failed"); return
        }
        #expect(
            recs == [
                TraceRecord(time: 0, op: .read, offset: 2048 * 512, length: 4096),
                TraceRecord(time: 2e-6, op: .read, offset: 2048 * 512, length: 4096),
            ])
    }

    static let binaryCases: [(String, [UInt8], TraceFormat, String)] = [
        (
            "blktrace truncated header", blktraceRecord() + Array(blktraceRecord().prefix(20)), .blktrace,
            "t.blktrace.0: byte 48 (record 1): error: truncated record: 20 bytes left, expected a 48-byte header"
        ),
        (
            "blktrace truncated payload", blktraceRecord() + blktraceRecord(pdu: [1, 2, 3, 4]).dropLast(3), .blktrace,
            "t.blktrace.0: byte 48 (record 1): error: truncated record: payload of 4 bytes but only 1 left"
        ),
        (
            "blktrace bad magic", blktraceRecord() + [0xDE, 0xAD, 0xBE, 0xEF] + blktraceRecord().dropFirst(4), .blktrace,
            "t.blktrace.0: byte 48 (record 1): error: bad magic 0xefbeadde (expected 0x656174xx, a blktrace record)"
        ),
        (
            "blktrace bad magic first", [0, 0, 0, 0] + blktraceRecord().dropFirst(4), .blktrace,
            "t.blktrace.0: byte 0 (record 0): error: bad magic 0x00000000 (expected 0x656174xx, a blktrace record)"
        ),
        (
            "blktrace unknown version", blktraceRecord(version: 8), .blktrace,
            "t.blktrace.0: byte 0 (record 0): error: unsupported blktrace version 8 (expected 7)"
        ),
        ("blktrace empty", [], .blktrace, "t.blktrace.0: error: empty trace (no records)"),
        (
            "vscsi truncated", vscsiRecord() + Array(vscsiRecord().prefix(8)), .vscsi,
            "t.blktrace.0: byte 32 (record 1): error: truncated record: 8 bytes left, expected 32"
        ),
        (
            "vscsi unknown version", vscsiRecord(ver: 0x0300), .vscsi,
            "t.blktrace.0: byte 0 (record 0): error: unknown vscsi version 0x0300 (expected 0x01xx for v1 or 0x02xx for v2)"
        ),
        (
            "vscsi mixed version", vscsiRecord() + vscsiRecord(ver: 0x0200), .vscsi,
            "t.blktrace.0: byte 32 (record 1): error: record version 0x0200 differs from the trace's v1"
        ),
        ("vscsi empty", [], .vscsi, "t.blktrace.0: error: empty trace (no records)"),
        // Found by FuzzTests: sectors whose byte offset passes 2^64 wrapped silently (blktrace) or
        // were reported at the next record's index (vscsi). 2^55 sectors × 512 = 2^64 bytes.
        (
            "blktrace sector 2^55", blktraceRecord(sector: 1 << 55), .blktrace,
            "t.blktrace.0: byte 0 (record 0): error: offset of sector 36028797018963968 overflows 64 bits"
        ),
        (
            "blktrace request past 2^64", blktraceRecord() + blktraceRecord(seq: 2, sector: (1 << 55) - 1), .blktrace,
            "t.blktrace.0: byte 48 (record 1): error: request at offset 18446744073709551104 with length 4096 ends beyond 2^64 bytes"
        ),
        (
            "vscsi sector 2^55", vscsiRecord() + vscsiRecord(lbn: 1 << 55), .vscsi,
            "t.blktrace.0: byte 32 (record 1): error: offset of sector 36028797018963968 overflows 64 bits"
        ),
    ]

    @Test(arguments: binaryCases)
    func binaryErrors(_ name: String, _ bytes: [UInt8], _ format: TraceFormat, _ expected: String) {
        #expect(TraceFixtures.errorText(bytes, fileName: "t.blktrace.0", format: format) == expected, "\(name)")
    }

    @Test func vscsiSkipsOtherSCSICommands() throws {
        let b =
            Self.vscsiRecord(cmd: 0x2A) + Self.vscsiRecord(cmd: 0x12) + Self.vscsiRecord(cmd: 0x88) + Self.vscsiRecord(cmd: 0x0A)
        var r = VscsiReader(bytes: b)
        var ops: [TraceRecord.Op] = []
        while let x = try r.next() { ops.append(x.op) }
        #expect(ops == [.write, .read, .write])
        #expect(r.skippedCommands == 1)
    }

    static let textCases: [(String, TraceFormat, String)] = [
        // wrong field count
        (
            "128166385295514663,hm,0,Write,9056014336,2048\n", .msr,
            "t.txt:1: error: expected 7 fields (Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime), found 6"
        ),
        (
            "Timestamp,Response,IOType,LUN,Offset,Size\n1.5,0.1,R,0,4096\n", .systor,
            "t.txt:2: error: expected 6 fields (Timestamp,Response,IOType,LUN,Offset,Size), found 5"
        ),
        ("1,2,3,4\n", .tencent, "t.txt:1: error: expected 5 fields (Timestamp,Offset,Size,IOType,VolumeID), found 4"),
        ("fio version 3 iolog\n10 /dev/sda write 0\n", .fio, "t.txt:2: error: expected 5 fields for 'write', found 4"),
        // non-numeric field
        ("1538323200,abc,128,1,1058\n", .tencent, "t.txt:1: error: invalid offset 'abc' (expected a decimal integer)"),
        ("1,R,4096,x,5\n", .alibaba, "t.txt:1: error: invalid length 'x' (expected a decimal integer)"),
        ("0,20941264,8192,w,zero\n", .spc, "t.txt:1: error: invalid timestamp 'zero' (expected a decimal number)"),
        (
            "version,time,op,size,lbn\n1,5633898,zz,512,42932745\n", .vscsiCSV,
            "t.txt:2: error: invalid op 'zz' (expected a hexadecimal number)"
        ),
        (
            "259,0 1 1 0.5 1 D R abc + 8 [x]\n", .blkparse,
            "t.txt:1: error: invalid sector 'abc' (expected a decimal sector number)"
        ),
        (
            "blk_co_preadv blk 0x1 bs 0x2 offset x bytes 1 flags 0x0\n", .qemu,
            "t.txt:1: error: invalid offset 'x' (expected a decimal integer)"
        ),
        // negative or overflowing offsets
        ("1,R,-5,4096,1\n", .alibaba, "t.txt:1: error: offset '-5' is negative"),
        (
            "1538323200,36028797018963968,8,1,1\n", .tencent,
            "t.txt:1: error: offset '36028797018963968' overflows 64 bits in bytes"
        ),
        (
            "128166385295514663,hm,0,Read,99999999999999999999,2048,1\n", .msr,
            "t.txt:1: error: offset '99999999999999999999' overflows 64 bits"
        ),
        ("0,36028797018963968,8192,r,0.5\n", .spc, "t.txt:1: error: LBA '36028797018963968' overflows 64 bits in bytes"),
        (
            "fio version 2 iolog\nf write 18446744073709551615 2\n", .fio,
            "t.txt:2: error: request at offset 18446744073709551615 with length 2 ends beyond 2^64 bytes"
        ),
        // bad enumerations
        ("128166385295514663,hm,0,Erase,0,2048,1\n", .msr, "t.txt:1: error: invalid type 'Erase' (expected Read or Write)"),
        ("1538323200,0,8,2,1\n", .tencent, "t.txt:1: error: invalid I/O type '2' (expected 0 for read or 1 for write)"),
        ("fio version 4 iolog\n", .fio, "t.txt:1: error: unsupported fio iolog version '4' (expected 2 or 3)"),
        (
            "garbage\n", .blkparse,
            "t.txt:1: error: expected a blkparse event 'MAJ,MIN CPU SEQ TIME PID ACTION RWBS ...', found 'garbage'"
        ),
        // byte offsets past 2^64 (2^55 sectors × 512 = 2^64), found by FuzzTests: they wrapped
        (
            "8,0 0 1 0.5 1 D R 36028797018963968 + 8 [x]\n", .blkparse,
            "t.txt:1: error: offset of sector 36028797018963968 overflows 64 bits"
        ),
        (
            "8,0 0 1 0.5 1 D R 2048 + 8 [x]\n8,0 0 2 0.6 1 D R 36028797018963967 + 8 [x]\n", .blkparse,
            "t.txt:2: error: request at offset 18446744073709551104 with length 4096 ends beyond 2^64 bytes"
        ),
        // empty files
        ("", .msr, "t.txt: error: empty trace (no records)"),
        ("", .blkparse, "t.txt: error: empty trace (no records)"),
        ("\n# nothing\n", .fio, "t.txt: error: empty trace (no records)"),
        ("", .qemu, "t.txt: error: empty trace (no records)"),
    ]

    @Test(arguments: textCases)
    func textErrors(_ input: String, _ format: TraceFormat, _ expected: String) {
        #expect(TraceFixtures.errorText(Array(input.utf8), fileName: "t.txt", format: format) == expected)
    }

    @Test(
        .requires(SharedTraces.requirement),
        arguments: [TraceFormat.native, .blkparse, .msr, .fio, .qemu, .systor])
    func binaryFedToATextReader(_ format: TraceFormat) throws {
        let b = try TraceFixtures.bytes("sample.blktrace.0")
        #expect(
            TraceFixtures.errorText(b, fileName: "sample.blktrace.0", format: format)
                == "sample.blktrace.0:1: error: binary data in a text trace (byte 0x07 at column 1); use --trace-format to pick the right format"
        )
    }

    @Test func summaryBlockEndsBlkparseCleanly() throws {
        let text = """
            8,0    0        1     0.000000000  100  Q   W 2048 + 8 [dd]
            8,0    0        2     0.000001000  100  D   W 2048 + 8 [dd]
            8,0    0        3     0.000002000  100  R   W 2048 + 8 [dd]
            8,0    0        4     0.000003000  100  D   W 2048 + 8 [dd]
            8,0    0        5     0.000004000  100  D  FWS [kworker]
            8,0    0        6     0.000005000  100  D  WFS 4096 + 8 [dd]
            8,0    0        7     0.000006000  100  D   D 8192 + 2048 [fstrim]
            CPU0 (8,0):
             Reads Queued:           0,        0KiB\t Writes Queued:           1,        4KiB
            this line is not an event and must not be read
            """
        var o = TraceOptions()
        o.rebaseTime = false
        guard case .success(let recs) = TraceFixtures.readBytes(Array(text.utf8), fileName: "t", format: .blkparse, options: o)
        else {
            Issue.record("failed"); return
        }
        #expect(
            recs == [
                TraceRecord(time: 0.000001, op: .write, offset: 2048 * 512, length: 4096),
                TraceRecord(time: 0.000004, op: .flush, offset: 0, length: 0),
                TraceRecord(time: 0.000005, op: .write, offset: 4096 * 512, length: 4096, flags: .fua),
                TraceRecord(time: 0.000006, op: .discard, offset: 8192 * 512, length: 2048 * 512),
            ])
    }
}

import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// The message a reader throws for `text`, or nil.
func nativeError(_ text: String) -> String? {
    do { _ = try TraceText.native(text); return nil } catch { return "\(error)" }
}

@Suite struct NativeTraceReaderTests {
    @Test func parsesAllForms() throws {
        let recs = try TraceText.native(
            """
            # a comment
            time,op,offset,length

            0.5 , W , 1M , 64K
            r,0,4096
            1.25,D,1G,2G\r
              2,z,8,8   # no: comments are whole lines only
            """.replacingOccurrences(of: "   # no: comments are whole lines only", with: "") + "\n3,F,0,0")
        #expect(
            recs == [
                TraceRecord(time: 0.5, op: .write, offset: 1 << 20, length: 64 << 10),
                TraceRecord(op: .read, offset: 0, length: 4096),
                TraceRecord(time: 1.25, op: .discard, offset: 1 << 30, length: 2 << 30),
                TraceRecord(time: 2, op: .writeZeroes, offset: 8, length: 8),
                TraceRecord(time: 3, op: .flush, offset: 0, length: 0),
            ])
    }

    @Test("ZU (any case) is write-zeroes with unmap; Z stays without; ZX and U alone are errors")
    func writeZeroesUnmap() throws {
        #expect(
            try TraceText.native("ZU,0,64K\n0.5,zu,1M,4K\nZ,0,4K\n") == [
                TraceRecord(op: .writeZeroes, offset: 0, length: 64 << 10, flags: .unmap),
                TraceRecord(time: 0.5, op: .writeZeroes, offset: 1 << 20, length: 4096, flags: .unmap),
                TraceRecord(op: .writeZeroes, offset: 0, length: 4096),
            ])
        #expect(nativeError("ZX,0,1\n") == "trace.csv:1: error: invalid op 'ZX' (expected R, W, D, Z, ZU or F)")
        #expect(nativeError("U,0,1\n") == "trace.csv:1: error: invalid op 'U' (expected R, W, D, Z, ZU or F)")
    }

    @Test("the writer spells unmap write-zeroes ZU and reads back the same records; FUA has no spelling")
    func writerUnmapRoundTrip() throws {
        var w = NativeTraceWriter(withTime: false)
        let recs = [
            TraceRecord(op: .writeZeroes, offset: 4096, length: 512, flags: .unmap),
            TraceRecord(op: .writeZeroes, offset: 0, length: 4096),
            TraceRecord(op: .discard, offset: 0, length: 4096, flags: .unmap),
            TraceRecord(op: .write, offset: 0, length: 512, flags: .fua),
        ]
        for r in recs { w.append(r) }
        let text = String(decoding: w.bytes, as: UTF8.self)
        #expect(text == "op,offset,length\nZU,4096,512\nZ,0,4096\nD,0,4096\nW,0,512\n")
        #expect(
            try TraceText.native(text) == [
                recs[0], recs[1], TraceRecord(op: .discard, offset: 0, length: 4096),
                TraceRecord(op: .write, offset: 0, length: 512),
            ])
    }

    @Test func headerWithoutTime() throws {
        #expect(try TraceText.native("op,offset,length\nW,1T,4K\n") == [TraceRecord(op: .write, offset: 1 << 40, length: 4096)])
    }

    @Test func suffixesAreBinary() throws {
        let r = try TraceText.native("R,1k,1K\nR,2m,3G\nR,1KiB,4KB\n")
        #expect(r.map(\.offset) == [1024, 2 << 20, 1024])
        #expect(r.map(\.length) == [1024, 3 << 30, 4096])
    }

    @Test func decimalTimes() throws {
        let r = try TraceText.native("0.000250,R,0,1\n1e-3,R,0,1\n12,R,0,1\n")
        #expect(r.map(\.time) == [0.000250, 0.001, 12])
    }

    /// Each bad input with its exact located message.
    static let errorCases: [(String, String)] = [
        (
            "R,0,4096\nW,1,2,3,4,5\n",
            "trace.csv:2: error: expected 3 or 4 fields, or 5 with a volume (time,op,offset,length,volume), found 6"
        ),
        ("R,0\n", "trace.csv:1: error: expected 3 or 4 fields, or 5 with a volume (time,op,offset,length,volume), found 2"),
        // A fifth field is the volume, so its first is a time.
        ("R,0,4096\nW,1,2,3,4\n", "trace.csv:2: error: invalid time 'W' (expected seconds as a decimal number)"),
        ("0,R,0,4096,x\n", "trace.csv:1: error: invalid volume 'x' (expected a decimal volume number from 0 to 4294967294)"),
        (
            "0,R,0,4096,4294967295\n",
            "trace.csv:1: error: invalid volume '4294967295' (expected a decimal volume number from 0 to 4294967294)"
        ),
        ("R,0,1\nX,0,4096\n", "trace.csv:2: error: invalid op 'X' (expected R, W, D, Z, ZU or F)"),
        ("R,0,1\nRW,0,4096\n", "trace.csv:2: error: invalid op 'RW' (expected R, W, D, Z, ZU or F)"),
        ("R,12Q,4096\n", "trace.csv:1: error: invalid offset '12Q' (expected bytes, optionally with a K, M, G or T suffix)"),
        ("R,0,abc\n", "trace.csv:1: error: invalid length 'abc' (expected bytes, optionally with a K, M, G or T suffix)"),
        ("R,,4096\n", "trace.csv:1: error: missing offset (expected bytes, optionally with a K, M, G or T suffix)"),
        ("R,18446744073709551616,1\n", "trace.csv:1: error: offset '18446744073709551616' overflows 64 bits"),
        ("R,16777216T,1\n", "trace.csv:1: error: offset '16777216T' overflows 64 bits"),
        ("R,0,99999999999999999999\n", "trace.csv:1: error: length '99999999999999999999' overflows 64 bits"),
        ("R,-4096,1\n", "trace.csv:1: error: offset '-4096' is negative"),
        ("R,0,-1\n", "trace.csv:1: error: length '-1' is negative"),
        (
            "R,18446744073709551615,2\n",
            "trace.csv:1: error: request at offset 18446744073709551615 with length 2 ends beyond 2^64 bytes"
        ),
        ("-1,R,0,1\n", "trace.csv:1: error: time '-1' is negative"),
        ("R,0,1\nsoon,R,0,1\n", "trace.csv:2: error: invalid time 'soon' (expected seconds as a decimal number)"),
        ("", "trace.csv: error: empty trace (no records)"),
        ("# only comments\n\n   \n", "trace.csv: error: empty trace (no records)"),
        ("time,op,offset,length\n", "trace.csv: error: empty trace (no records)"),
        (
            "R,0,1\nR,0\u{0},1\n",
            "trace.csv:2: error: binary data in a text trace (byte 0x00 at column 4); use --trace-format to pick the right format"
        ),
        ("R,0,1\ntime,op,offset,length\n", "trace.csv:2: error: invalid time 'time' (expected seconds as a decimal number)"),
    ]

    @Test(arguments: errorCases)
    func errorMessages(_ input: String, _ expected: String) {
        #expect(nativeError(input) == expected)
    }

    @Test func missingFileIsLocatedAtTheFile() {
        do {
            _ = try TraceFile.open(path: "nope.csv")
            Issue.record("expected an error")
        } catch let e as TraceError {
            #expect(e.description == "nope.csv: error: cannot open: No such file or directory")
            #expect(e.exitCode == 66)
        } catch { Issue.record("\(error)") }
    }

    @Test func longInputAcrossChunks() throws {
        // Lines straddle the 1 MiB read chunks of a file-backed reader.
        let n = 200_000
        var text = "time,op,offset,length\n"
        for i in 0..<n { text += "\(i),W,\(i * 4096),4K\n" }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tk-native-\(getpid()).csv")
        try Data(text.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        var r = try TraceFile.open(path: url.path)
        var count = 0
        while let rec = try r.next() {
            #expect(rec.offset == UInt64(count) * 4096 && rec.time == Double(count))
            count += 1
        }
        #expect(count == n)
        #expect(r.location == .line(n + 1))
    }
}

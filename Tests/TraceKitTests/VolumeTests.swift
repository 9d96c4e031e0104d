import Foundation
import Testing

@testable import TraceKit

/// Volumes on records (issue 16, item 1): the native formats' volume field, tagging and
/// `--device` selection, the per-volume order, `--volume-sizes` files and the percentiles'
/// inputs, the volume index.
@Suite struct VolumeTests {
    static func read(_ text: String, tag: Bool = true, device: String? = nil, fast: Bool = true) throws -> (
        [TraceRecord], [String]
    ) {
        var o = TraceOptions()
        o.tagVolumes = tag
        o.device = device
        var r = try TraceFile.open(bytes: Array(text.utf8), fileName: "v.csv", options: o)
        var out: [TraceRecord] = []
        while let x = try r.next() { out.append(x) }
        return (out, r.volumeNames)
    }

    /// The fifth column, in first-appearance IDs; untagged reads leave 0; the fast path (plain
    /// timed lines) and the general path (an empty time, blanks) agree.
    @Test func nativeCSVVolumeColumn() throws {
        let text = "time,op,offset,length,volume\n0.5,W,0,4096,17\n1,R,4096,512,3\n, R , 8K , 4K , 17\n2,R,0,4096,0\n"
        let (recs, names) = try Self.read(text)
        #expect(names == ["17", "3", "0"])
        #expect(
            recs == [
                TraceRecord(time: 0.5, op: .write, offset: 0, length: 4096, volume: 1),
                TraceRecord(time: 1, op: .read, offset: 4096, length: 512, volume: 2),
                TraceRecord(op: .read, offset: 8192, length: 4096, volume: 1),
                TraceRecord(time: 2, op: .read, offset: 0, length: 4096, volume: 3),
            ])
        let (plain, none) = try Self.read(text, tag: false)
        #expect(none.isEmpty)
        #expect(plain.map(\.volume) == [0, 0, 0, 0])
        // --device keeps one volume number (it reads every line through the general path).
        let (seventeen, _) = try Self.read(text, device: "17")
        #expect(seventeen.map(\.offset) == [0, 8192])
        #expect(throws: TraceError.self) { try Self.read(text, device: "x") }
    }

    /// The binary format's flag 0x08 and bytes 28–31: written, read back, selected; an old file
    /// (no flag, zeros) reads with no volume.
    @Test func binaryVolumeField() throws {
        var w = NativeBinaryTraceWriter(count: 3)
        w.append(TraceRecord(time: 1, op: .read, offset: 0, length: 4096), volume: 9)
        w.append(TraceRecord(op: .write, offset: 65536, length: 512, flags: .fua), volume: 4_294_967_294)
        w.append(TraceRecord(op: .read, offset: 4096, length: 4096))
        let bytes = w.take()
        // Record 0's tail: op 0, flags 0x08, reserved 0, volume 9 little-endian.
        #expect(Array(bytes[32 + 24..<32 + 32]) == [0, 8, 0, 0, 9, 0, 0, 0])
        var o = TraceOptions()
        o.tagVolumes = true
        var r = try TraceFile.open(bytes: bytes, fileName: "v.bin", options: o)
        var recs: [TraceRecord] = []
        while let x = try r.next() { recs.append(x) }
        #expect(r.volumeNames == ["9", "4294967294"])
        #expect(recs.map(\.volume) == [1, 2, 0])
        #expect(recs[1].flags == .fua)
        var untagged = try TraceFile.open(bytes: bytes, fileName: "v.bin")
        var volumes: [UInt32] = []
        while let x = try untagged.next() { volumes.append(x.volume) }
        #expect(volumes == [0, 0, 0])
        o.device = "4294967294"
        var one = try TraceFile.open(bytes: bytes, fileName: "v.bin", options: o)
        var kept: [UInt64] = []
        while let x = try one.next() { kept.append(x.offset) }
        #expect(kept == [65536])
    }

    /// The formats with a volume field tag it (Tencent's VolumeID, MSR's HOST:DISK).
    @Test func publicFormatsTagTheirVolumes() throws {
        let tencent = "1538323200,8,8,1,1058\n1538323199,16,8,0,1063\n1538323201,24,8,0,1058\n"
        var o = TraceOptions()
        o.tagVolumes = true
        var r = try TraceFile.open(bytes: Array(tencent.utf8), fileName: "t.csv", format: .tencent, options: o)
        var v: [String] = []
        while let x = try r.next() { v.append(r.volumeNames[Int(x.volume) - 1]) }
        // Sorted by time (the reorder window): 1063 first.
        #expect(v == ["1063", "1058", "1058"])
        let msr = "128166372003061629,hm,1,Read,0,4096,100\n128166372003061630,hm,0,Write,0,4096,100\n"
        r = try TraceFile.open(bytes: Array(msr.utf8), fileName: "m.csv", format: .msr, options: o)
        v = []
        while let x = try r.next() { v.append(r.volumeNames[Int(x.volume) - 1]) }
        #expect(v == ["hm:1", "hm:0"])
    }

    @Test func perVolumeOrder() {
        #expect(VolumeTable.sorted(["10", "9", "100", "0"]) == ["0", "9", "10", "100"])
        #expect(VolumeTable.sorted(["hm:1", "hm:0", "b", "10"]) == ["10", "b", "hm:0", "hm:1"])
    }

    @Test func volumeSizeFiles() throws {
        let t = try VolumeSizeTable(text: "# fleet\nvolume,size\n1063, 32G\nhm:0,4096K\r\n\n", file: "s.csv")
        #expect(t.sizes == ["1063": 32 << 30, "hm:0": 4 << 20])
        for (text, message) in [
            ("1,1G\n2\n", "s.csv:2: error: expected 2 fields (volume,size), found 1"),
            (",1G\n", "s.csv:1: error: empty volume name"),
            ("1,0\n", "s.csv:1: error: invalid size '0' for volume '1' (expected a positive multiple of 512 bytes)"),
            ("# nothing\n", "s.csv: error: no volume sizes (expected volume,size lines)"),
        ] {
            #expect(throws: TraceError.self) { try VolumeSizeTable(text: text, file: "s.csv") }
            do { _ = try VolumeSizeTable(text: text, file: "s.csv") } catch { #expect("\(error)" == message) }
        }
    }

    /// The index over records: counts, times, highest end and the distinct bytes (merged
    /// ranges: 0–8K and 4K–12K are 12 KiB), and whether the trace is grouped by volume.
    @Test func volumeIndex() throws {
        let (recs, names) = try Self.read(
            "time,op,offset,length,volume\n0,W,0,8192,5\n1,R,4096,8192,5\n2,R,1M,4096,2\n3,F,0,0,5\n")
        var index = VolumeIndex(footprint: true)
        for r in recs { index.add(r, names: names) }
        #expect(!index.grouped)
        let v = index.volumes
        #expect(v.map(\.name) == ["2", "5"])
        #expect(v[1].records == 3 && v[1].reads == 1 && v[1].writes == 1 && v[1].others == 1)
        #expect(v[1].firstTime == 0 && v[1].lastTime == 3)
        #expect(v[1].maxEnd == 12288 && v[1].footprintBytes == 12288)
        #expect(v[0].maxEnd == (1 << 20) + 4096 && v[0].footprintBytes == 4096)
    }
}

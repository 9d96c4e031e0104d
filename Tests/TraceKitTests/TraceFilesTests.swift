import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// Every public trace parses, and decodes to the facts its README states (or that an
/// independent tool — blkparse, awk — reports).
@Suite(.requires(SharedTraces.requirement)) struct TraceFilesTests {
    @Test(arguments: [
        ("cloudPhysicsIO.vscsi", TraceFormat.vscsi), ("cloudPhysicsIO.csv", .vscsiCSV), ("sample.blktrace.0", .blktrace),
        ("sample.blkparse.txt", .blkparse), ("msr-cambridge1-sample.csv", .msr), ("systor17-traces-sample.csv.gz", .systor),
        ("tencent-cbs-cloud_storage-sample.bz2", .tencent), ("fio-t0038.iolog", .fio),
    ])
    func detectsEveryFormat(_ name: String, _ format: TraceFormat) throws {
        let r = try TraceFile.open(path: TraceFixtures.path(name))
        #expect(r.format == format)
    }

    @Test func vscsiHas113872Requests() throws {
        let recs = try TraceFixtures.read("cloudPhysicsIO.vscsi")
        #expect(recs.count == 113_872)
        // First CSV twin row: `1,5633898,2a,512,42932745`.
        #expect(recs[0].op == .write && recs[0].offset == 42_932_745 * 512 && recs[0].length == 512)
        #expect(recs[0].time == 0)
    }

    @Test func vscsiAndItsCSVTwinDecodeToTheSameRequests() throws {
        var o = TraceOptions()
        o.rebaseTime = false
        let bin = try TraceFixtures.read("cloudPhysicsIO.vscsi", options: o)
        let csv = try TraceFixtures.read("cloudPhysicsIO.csv", options: o)
        #expect(bin.count == csv.count)
        var mismatches = 0
        for (b, c) in zip(bin, csv)
        where b.op != c.op || b.offset != c.offset || b.length != c.length
            || (b.time ?? -1).rounded(.down) != c.time
        {
            mismatches += 1
        }
        #expect(mismatches == 0)
    }

    @Test func blktraceSampleHas963IssueEventsLikeBlkparse() throws {
        let bin = try TraceFixtures.read("sample.blktrace.0")
        let text = try TraceFixtures.read("sample.blkparse.txt")
        #expect(bin.count == 963)
        #expect(text.count == 963)
        // blkparse: `259,0 1 6 0.000001676 21279 D RA 2348060440 + 8 [(null)]`
        #expect(bin[0] == TraceRecord(time: 0, op: .read, offset: 2_348_060_440 * 512, length: 4096))
        // Last D: `259,0 1 6740 0.345489070 21279 D RA 2336681576 + 8`
        #expect(bin[962].offset == 2_336_681_576 * 512)
        #expect(abs((bin[962].time ?? 0) - (0.345489070 - 0.000001676)) < 1e-9)
        for (a, b) in zip(bin, text) {
            #expect(a.op == b.op && a.offset == b.offset && a.length == b.length && a.flags == b.flags)
            #expect(abs((a.time ?? -1) - (b.time ?? 1)) < 1e-9)
        }
    }

    @Test func blktraceQueueAndCompleteEventsAreOnePerIO() throws {
        for event in [TraceOptions.BlktraceEvent.queue, .complete] {
            var o = TraceOptions()
            o.event = event
            #expect(try TraceFixtures.read("sample.blktrace.0", options: o).count == 963)
            #expect(try TraceFixtures.read("sample.blkparse.txt", options: o).count == 963)
        }
    }

    @Test func blktraceDeviceFilter() throws {
        var o = TraceOptions()
        o.device = "259,0"
        #expect(try TraceFixtures.read("sample.blktrace.0", options: o).count == 963)
        o.device = "8,0"
        let msg = "\(TraceFixtures.path("sample.blktrace.0")): error: no 'D' events in the trace (try --event Q, D or C)"
        #expect(throws: (any Error).self) { try TraceFixtures.read("sample.blktrace.0", options: o) }
        do { _ = try TraceFixtures.read("sample.blktrace.0", options: o) } catch { #expect("\(error)" == msg) }
    }

    @Test func blktraceIsReadInEitherByteOrder() throws {
        // Byte-swap every header field of the sample (the remap PDU is big-endian already).
        var b = try TraceFixtures.bytes("sample.blktrace.0")
        var off = 0
        while off + 48 <= b.count {
            for (o, w) in [(0, 4), (4, 4), (8, 8), (16, 8), (24, 4), (28, 4), (32, 4), (36, 4), (40, 4), (44, 2), (46, 2)] {
                b[(off + o)..<(off + o + w)].reverse()
            }
            let pdu = Int(b[off + 46]) << 8 | Int(b[off + 47])
            off += 48 + pdu
        }
        guard case .success(let swapped) = TraceFixtures.readBytes(b, fileName: "be", format: nil) else {
            Issue.record("big-endian copy failed to parse")
            return
        }
        #expect(swapped == (try TraceFixtures.read("sample.blktrace.0")))
    }

    @Test func msrCambridgeSample() throws {
        let recs = try TraceFixtures.read("msr-cambridge1-sample.csv")
        #expect(recs.count == 1000)
        #expect(recs.filter { $0.op == .read }.count == 508)
        #expect(recs.filter { $0.op == .write }.count == 492)
        #expect(recs[0] == TraceRecord(time: 0, op: .write, offset: 9_056_014_336, length: 2048))
        let span = (recs.last?.time ?? 0) - (recs.first?.time ?? 0)
        #expect(span > 126 && span < 128)
        var o = TraceOptions()
        o.device = "hm:0"
        #expect(try TraceFixtures.read("msr-cambridge1-sample.csv", options: o).count == 1000)
        o.device = "hm:1"
        #expect(throws: (any Error).self) { try TraceFixtures.read("msr-cambridge1-sample.csv", options: o) }
    }

    @Test func systorSampleIsSortedAndRebased() throws {
        let recs = try TraceFixtures.read("systor17-traces-sample.csv.gz")
        #expect(recs.count == 999)
        #expect(recs.filter { $0.op == .read }.count == 826)
        #expect(recs.filter { $0.op == .write }.count == 173)
        // Earliest row (sort -t, -k1n): 1456095145.126285000,…,R,0,4256049987072,122880
        #expect(recs[0].time == 0 && recs[0].offset == 4_256_049_987_072 && recs[0].length == 122_880)
        #expect(zip(recs, recs.dropFirst()).allSatisfy { ($0.time ?? 0) <= ($1.time ?? 0) })
        // Last timestamp 1456095147.574052000 → 2.447767 s after the first.
        #expect(abs((recs.last?.time ?? 0) - 2.447767) < 1e-6)
    }

    @Test func tencentSampleWithVolumeSelection() throws {
        let recs = try TraceFixtures.read("tencent-cbs-cloud_storage-sample.bz2")
        #expect(recs.count == 50_000)
        #expect(recs.filter { $0.op == .read }.count == 24_521)
        #expect(recs.filter { $0.op == .write }.count == 25_479)
        // awk -F, '$5==1063' → 434 rows, 325 reads (IOType 0), 65941 sectors.
        var o = TraceOptions()
        o.device = "1063"
        let vol = try TraceFixtures.read("tencent-cbs-cloud_storage-sample.bz2", options: o)
        #expect(vol.count == 434)
        #expect(vol.filter { $0.op == .read }.count == 325)
        #expect(vol.reduce(0) { $0 + $1.length } == 65_941 * 512)
        // Timestamps 1538323199 … 1538323200.
        #expect(recs.first?.time == 0 && recs.last?.time == 1)
    }

    @Test func noRebaseKeepsEachSampleAbsoluteClock() throws {
        var o = TraceOptions()
        o.rebaseTime = false
        // First row 128166385295514663 FILETIME ticks = 12816638529.5514663 s since 1601.
        let msr = try TraceFixtures.read("msr-cambridge1-sample.csv", options: o)
        #expect(msr.count == 1000 && msr[0].time == 12_816_638_529.551_4663)
        // Sorted rows: earliest 1456095145.126285000, last 1456095147.574052000 (epoch s).
        let systor = try TraceFixtures.read("systor17-traces-sample.csv.gz", options: o)
        #expect(systor.first?.time == 1_456_095_145.126_285 && systor.last?.time == 1_456_095_147.574_052)
        // Timestamps 1538323199 … 1538323200 (epoch s).
        let tencent = try TraceFixtures.read("tencent-cbs-cloud_storage-sample.bz2", options: o)
        #expect(tencent.first?.time == 1_538_323_199 && tencent.last?.time == 1_538_323_200)
    }

    @Test func fioVersion3Iolog() throws {
        let recs = try TraceFixtures.read("fio-t0038.iolog")
        #expect(recs.count == 20)
        #expect(recs[0] == TraceRecord(time: 0.010736, op: .discard, offset: 0, length: 2_147_483_648))
        #expect(recs[1] == TraceRecord(time: 0.010752, op: .write, offset: 0, length: 4096))
        #expect(recs[19] == TraceRecord(time: 0.010809, op: .write, offset: 36864, length: 4096))
    }

    @Test func compressedCopiesReadTheSame() throws {
        // The same bytes through every decompressor the machine has.
        let plain = try TraceFixtures.read("msr-cambridge1-sample.csv")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tk-comp-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (tool, ext) in [("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz"), ("zstd", "zst")] {
            guard ByteInput.findExecutable(tool) != nil else {
                print("skipping the \(tool) copy: \(tool) is not installed (.ci/setup installs it)")
                continue
            }
            let out = dir.appendingPathComponent("t.\(ext)")
            let p = Process()
            p.executableURL = ByteInput.findExecutable(tool)
            p.arguments = ["-c", TraceFixtures.path("msr-cambridge1-sample.csv")]
            FileManager.default.createFile(atPath: out.path, contents: nil)
            p.standardOutput = try FileHandle(forWritingTo: out)
            try p.run()
            p.waitUntilExit()
            var r = try TraceFile.open(path: out.path)
            var recs: [TraceRecord] = []
            while let x = try r.next() { recs.append(x) }
            #expect(recs == plain, "\(tool)")
        }
    }

    @Test func qemuIOTraceLogFromRealQemu() throws {
        // Lines as qemu-io 7.2 prints them with -T 'blk_co_*' (checked against the installed QEMU).
        let log = """
            blk_co_pwritev blk 0x55b1720f1990 bs 0x55b1720fcbf0 offset 0 bytes 4096 flags 0x0
            bdrv_co_pwritev_part bs 0x55b1720fcbf0 offset 0 bytes 4096 flags 0x10
            blk_co_preadv blk 0x55b1720f1990 bs 0x55b1720fcbf0 offset 0 bytes 4096 flags 0x0
            blk_co_pwritev blk 0x55b1720f1990 bs 0x55b1720fcbf0 offset 8192 bytes 4096 flags 0x2
            blk_co_pwritev blk 0x55a437887990 bs 0x55a437892be0 offset 0 bytes 65536 flags 0x6
            4242@1700000000.500000:blk_co_pwritev blk 0x55a437887990 bs 0x55a437892be0 offset 0 bytes 512 flags 0x10
            """
        guard case .success(let recs) = TraceFixtures.readBytes(Array(log.utf8), fileName: "q.log", format: nil) else {
            Issue.record("qemu log failed")
            return
        }
        #expect(
            recs == [
                TraceRecord(op: .write, offset: 0, length: 4096),
                TraceRecord(op: .read, offset: 0, length: 4096),
                TraceRecord(op: .writeZeroes, offset: 8192, length: 4096),
                TraceRecord(op: .writeZeroes, offset: 0, length: 65536, flags: .unmap),
                TraceRecord(time: 0, op: .write, offset: 0, length: 512, flags: .fua),
            ])
    }
}

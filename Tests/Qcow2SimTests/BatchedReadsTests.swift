import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// The engine takes plain reads in batches (`RecordSource.nextPlainReads`) when nothing reads a
/// record's location while it is replayed: errors must still name their own record, a reader's
/// error must come after the records before it, and the counts must be those of the one-record-
/// at-a-time path (taken whenever an event log is attached).
@Suite(.serialized) struct BatchedReadsTests {
    /// A reader that throws a located error instead of record `failAt` (1-based).
    struct FailingReader: TraceReader {
        var inner: ArrayTraceReader
        let failAt: Int
        var position = 0
        let fileName = "failing"
        mutating func next() throws -> TraceRecord? {
            position += 1
            if position == failAt { throw TraceError(file: fileName, location: .line(position), message: "bad record") }
            return try inner.next()
        }
        var location: TraceLocation { .line(position) }
    }

    static let size: UInt64 = 1 << 30
    static func reads(_ n: Int, stride: UInt64 = 4096) -> [TraceRecord] {
        (0..<n).map { TraceRecord(op: .read, offset: UInt64($0) * stride % size, length: 4096) }
    }

    /// 1000 plain reads (four batches), then one past the end: the error names record 1001.
    @Test func aRecordBeyondTheDiskAfterABatchIsLocatedAtItself() throws {
        var records = Self.reads(1000)
        records.append(TraceRecord(op: .read, offset: Self.size - 512, length: 4096))
        var reader = ArrayTraceReader(records, fileName: "lib")
        let message = "request [1073741312, 1073745408) lies beyond the virtual size 1073741824"
        #expect(throws: SimulationError.trace(TraceError(file: "lib", location: .line(1001), message: message))) {
            try Simulation.run(config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader)
        }
    }

    /// A bad time in the middle of a batch: located at its record (600), not at the batch's end.
    @Test func aBadTimeInsideABatchIsLocatedAtItself() throws {
        var records = (0..<1000).map { TraceRecord(time: Double($0), op: .read, offset: UInt64($0) * 4096, length: 4096) }
        records[599].time = -1
        var reader = ArrayTraceReader(records, fileName: "lib")
        #expect(throws: SimulationError.trace(TraceError(file: "lib", location: .line(600), message: "time -1.0 is negative"))) {
            try Simulation.run(config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader)
        }
    }

    /// QEMU's policy, counting the L2 lookups it is told about (a hit or a fill each), so a test
    /// can see how many reads ran before an error. The count is global: the suite runs its
    /// tests one at a time.
    struct CountingPolicy: EvictionPolicy {
        nonisolated(unsafe) static var l2Lookups = 0
        static let name = "counting"
        static let summary = "QEMU's policy, counting L2 lookups (a test's)"
        private var inner: QemuPolicy
        private let kind: CacheKind
        init(capacity: Int, kind: CacheKind) {
            inner = QemuPolicy(capacity: capacity, kind: kind)
            self.kind = kind
        }
        mutating func filled(_ slot: Int, offset: UInt64) {
            if kind == .l2 { Self.l2Lookups += 1 }
            inner.filled(slot, offset: offset)
        }
        mutating func hit(_ slot: Int, offset: UInt64) {
            if kind == .l2 { Self.l2Lookups += 1 }
            inner.hit(slot, offset: offset)
        }
        mutating func released(_ slot: Int, offset: UInt64) { inner.released(slot, offset: offset) }
        mutating func emptied(_ slot: Int, offset: UInt64) { inner.emptied(slot, offset: offset) }
        mutating func victim(_ pins: PinCounts) -> Int? { inner.victim(pins) }
    }

    /// The reader fails at record 700, inside the third batch (records 513 to 768): its own
    /// error, thrown after the 699 reads before it ran (699 more L2 lookups than a reader failing
    /// at its first record, whose run does only the image's opening), as one at a time would.
    @Test func aReaderErrorInsideABatchComesAfterTheRecordsBeforeIt() throws {
        func lookups(failingAt k: Int) -> Int {
            var reader = FailingReader(inner: ArrayTraceReader(Self.reads(1000)), failAt: k)
            CountingPolicy.l2Lookups = 0
            #expect(throws: SimulationError.trace(TraceError(file: "failing", location: .line(k), message: "bad record"))) {
                try Simulation.run(
                    config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader,
                    policy: CountingPolicy.self)
            }
            return CountingPolicy.l2Lookups
        }
        #expect(lookups(failingAt: 700) - lookups(failingAt: 1) == 699)
    }

    /// A binary trace of 1000 reads whose record `bad` has op code 6: the reader's located error,
    /// thrown after the reads before it ran (700 more L2 lookups with the bad record at 700 than
    /// at 0, whose run does only the image's opening), as one at a time would.
    @Test func aBadBinaryRecordInsideABatchComesAfterTheRecordsBeforeIt() throws {
        func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func lookups(bad: Int) throws -> Int {
            var bytes: [UInt8] = [0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0A, 0x00] + le32(1) + le32(32) + le64(1000) + le64(0)
            for k in 0..<1000 {
                // Untimed (every time bit set), a read (op 0) or, at record `bad`, op code 6.
                bytes += le64(.max) + le64(UInt64(k) * 65536) + le64(4096) + [k == bad ? 6 : 0, 0, 0, 0, 0, 0, 0, 0]
            }
            var reader = try TraceFile.open(bytes: bytes, fileName: "t.bin")
            CountingPolicy.l2Lookups = 0
            let message = "invalid op code 6 (expected 0 R, 1 W, 2 D, 3 Z, 4 ZU or 5 F)"
            let at = TraceLocation.record(byteOffset: 32 + UInt64(bad) * 32, index: bad)
            #expect(throws: SimulationError.trace(TraceError(file: "t.bin", location: at, message: message))) {
                try Simulation.run(
                    config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader,
                    policy: CountingPolicy.self)
            }
            return CountingPolicy.l2Lookups
        }
        #expect(try lookups(bad: 700) - lookups(bad: 0) == 700)
    }

    /// A library record ending past 2^64 is a located error, its end printed exactly.
    @Test func aRecordEndingPast2To64IsALocatedError() throws {
        var reader = ArrayTraceReader(
            [TraceRecord(op: .read, offset: 0, length: 4096), TraceRecord(op: .read, offset: .max - 10, length: 4096)],
            fileName: "lib")
        let message = "request [18446744073709551605, 18446744073709555701) lies beyond the virtual size 1073741824"
        #expect(throws: SimulationError.trace(TraceError(file: "lib", location: .line(2), message: message))) {
            try Simulation.run(config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader)
        }
    }

    /// Hand-worked: 1000 reads of one cluster of a preallocated image are one cold L2 miss and
    /// 999 hits, 4096000 guest bytes read, whether batched or not.
    @Test func repeatedReadsOfOneClusterAreOneMissAndHits() throws {
        for logged in [false, true] {
            var reader = ArrayTraceReader(Array(repeating: TraceRecord(op: .read, offset: 65536, length: 4096), count: 1000))
            let report = try Simulation.run(
                config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader,
                log: logged ? EventLog() : nil)
            let l2 = report.images[0].l2
            #expect(l2.lookups == 1000)
            #expect(l2.hits == 999)
            #expect(l2.misses == 1)
            #expect(l2.missesCold == 1)
            #expect(report.images[0].image.guestBytesRead == 4_096_000)
            #expect(report.requestsByOp[.read] == 1000)
        }
    }

    /// Reads mixed with what leaves a batch (flushes), what leaves the quick path inside one
    /// (writes, reads across L2 slices), zero-length reads, timed and untimed records: every
    /// counter equals the one-at-a-time path's.
    @Test(arguments: [false, true])
    func mixedTracesCountTheSameBatchedAndOneAtATime(timed: Bool) throws {
        var rng = SplitMix64(seed: 7)
        var records: [TraceRecord] = []
        for k in 0..<3000 {
            let offset = (rng.next() % (Self.size >> 12)) << 12
            let time: Double? = timed ? Double(k) * 0.01 : nil
            switch rng.next() % 20 {
            case 0: records.append(TraceRecord(time: time, op: .write, offset: offset, length: 8192))
            case 1: records.append(TraceRecord(time: time, op: .flush, offset: 0, length: 0))
            // 1 MiB from the last cluster of a 4 KiB slice (512 entries, 32 MiB): two MAPs.
            case 2:
                let o = (offset | 0x1FF_FFFF) & ~0xFFFF
                let inside = o + (1 << 20) <= Self.size ? o : o - (1 << 25)
                records.append(TraceRecord(time: time, op: .read, offset: inside, length: 1 << 20))
            case 3: records.append(TraceRecord(time: time, op: .read, offset: offset, length: 0))
            case 4:
                // Across two clusters.
                let o = (offset & ~0xFFFF) | 0xF000
                records.append(TraceRecord(time: time, op: .read, offset: o + 8192 <= Self.size ? o : o - 0x10000, length: 8192))
            default: records.append(TraceRecord(time: time, op: .read, offset: offset, length: 4096))
            }
        }
        // 16 slices of 4 KiB for the disk's 32: evictions, dirty ones among them (the writes).
        let small = "l2-cache-size=64K,l2-cache-entry-size=4K"
        for drive in [small, small + ",cache-clean-interval=5"] {
            let config = SimulationConfig(
                virtualSize: Self.size, populate: .ranges([ByteRange(start: 0, length: Self.size / 2)]), populateMode: .data,
                driveOptions: try DriveOptions(parsing: drive))
            let batched = try runBatchedAndOneAtATime(config, drive) { ArrayTraceReader(records) }
            #expect(batched.images[0].l2.lookups > 2000, "\(drive)")
            #expect(batched.images[0].l2.evictions > 1000, "\(drive)")
            #expect(batched.images[0].l2.dirtyEvictions > 10, "\(drive)")
        }
    }
}

/// Writes ride in the batches too (an image that is not read-only): the counts stay those of the
/// one-record-at-a-time path, and on a read-only image, where a write is a located error, the
/// batch ends before it.
@Suite struct BatchedWritesTests {
    static let size: UInt64 = 1 << 30

    /// Half 4 KiB writes over a fresh image (new clusters, rewrites of a few, new L2 tables),
    /// half reads: every counter equals the one-at-a-time path's.
    @Test func aWriteHeavyTraceCountsTheSameBatchedAndOneAtATime() throws {
        var rng = SplitMix64(seed: 11)
        var records: [TraceRecord] = []
        for _ in 0..<4000 {
            // 2048 clusters of the first 128 MiB: about a third of the writes are rewrites.
            let offset = (rng.next() % 2048) << 16 | (rng.next() % 16) << 12
            records.append(TraceRecord(op: rng.next() % 2 == 0 ? .write : .read, offset: offset, length: 4096))
        }
        for drive in ["l2-cache-size=64K,l2-cache-entry-size=4K", "l2-cache-size=1M"] {
            let config = SimulationConfig(virtualSize: Self.size, driveOptions: try DriveOptions(parsing: drive))
            let batched = try runBatchedAndOneAtATime(config, drive) { ArrayTraceReader(records) }
            #expect(batched.requestsByOp[.write] ?? 0 > 1900)
            #expect(batched.images[0].image.clustersAllocated > 1000, "\(drive)")
        }
    }

    /// A write on a read-only image after 300 reads: located at its own record (301).
    @Test func aWriteOnAReadOnlyImageIsLocatedAtItself() throws {
        var records = (0..<1000).map { TraceRecord(op: .read, offset: UInt64($0) << 12, length: 4096) }
        records[300] = TraceRecord(op: .write, offset: 0, length: 4096)
        var reader = ArrayTraceReader(records, fileName: "lib")
        var config = SimulationConfig(virtualSize: Self.size, populate: .full)
        config.readOnly = true
        #expect(
            throws: SimulationError.trace(
                TraceError(file: "lib", location: .line(301), message: "write request on an image opened read-only"))
        ) {
            try Simulation.run(config: config, reader: &reader)
        }
    }
}

/// The two native formats fill a batch in their own loop (`AnyTraceReader.next(into:admitting:)`):
/// what ends a batch is still located at its own record, after the records before it ran.
@Suite struct BatchedNativeFormatTests {
    static let size: UInt64 = 1 << 30

    /// A native CSV: 1000 reads (lines 2 to 1001), then one past the disk's end on line 1002.
    @Test func aCSVRecordBeyondTheDiskAfterABatchIsLocatedAtItsLine() throws {
        var text = "op,offset,length\n"
        for k in 0..<1000 { text += "R,\(k * 4096),4096\n" }
        text += "R,\(Self.size - 512),4096\n"
        var reader = try TraceFile.open(bytes: Array(text.utf8), fileName: "t.csv")
        let message = "request [1073741312, 1073745408) lies beyond the virtual size 1073741824"
        #expect(throws: SimulationError.trace(TraceError(file: "t.csv", location: .line(1002), message: message))) {
            try Simulation.run(config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader)
        }
    }

    /// A native CSV of 3000 reads and writes (a third writes, some rewrites) over a fresh image:
    /// the batches of the CSV reader's own loop count the same as one record at a time.
    @Test func aCSVOfReadsAndWritesCountsTheSameBatchedAndOneAtATime() throws {
        var rng = SplitMix64(seed: 5)
        var text = "op,offset,length\n"
        for _ in 0..<3000 {
            let offset = (rng.next() % 1024) << 16 | (rng.next() % 16) << 12
            text += "\(rng.next() % 3 == 0 ? "W" : "R"),\(offset),4096\n"
        }
        let config = SimulationConfig(virtualSize: Self.size, driveOptions: try DriveOptions(parsing: "l2-cache-size=64K"))
        let batched = try runBatchedAndOneAtATime(config) { try TraceFile.open(bytes: Array(text.utf8), fileName: "t.csv") }
        #expect(batched.requestsByOp[.write] ?? 0 > 900)
    }

    /// 10 000 binary records (more than two of the reader's 4096-record batches): untimed reads
    /// and writes of 4 KiB and some of 64 MiB, among them runs of timed ones, flushes and
    /// discards, which the binary reader's untimed run (`takeUntimed`) leaves to the general
    /// mapping; the batches count the same as one record at a time.
    @Test func aBinaryTraceOfMixedRecordsCountsTheSameBatchedAndOneAtATime() throws {
        var rng = SplitMix64(seed: 11)
        var w = NativeBinaryTraceWriter()
        var t = 0.0
        for k in 0..<10_000 {
            let offset = (rng.next() % 1024) << 16 | (rng.next() % 16) << 12
            let r = rng.next() % 100
            let op: TraceRecord.Op = r < 60 ? .read : r < 90 ? .write : r < 95 ? .discard : .flush
            let length: UInt64 = op == .flush ? 0 : k % 997 == 0 ? 64 << 20 : 4096
            // Records 3000 to 3099 and 7000 to 7049 carry times.
            let timed = (3000..<3100).contains(k) || (7000..<7050).contains(k)
            if timed { t += 0.001 }
            w.append(TraceRecord(time: timed ? t : nil, op: op, offset: min(offset, Self.size - length), length: length))
        }
        let bytes = w.take()
        let config = SimulationConfig(virtualSize: Self.size, driveOptions: try DriveOptions(parsing: "l2-cache-size=64K"))
        let batched = try runBatchedAndOneAtATime(config) { try TraceFile.open(bytes: bytes, fileName: "t.bin") }
        #expect(batched.requests == 10_000)
        #expect(batched.requestsByOp[.flush] ?? 0 > 300)
        #expect(batched.requestsByOp[.discard] ?? 0 > 300)
    }

    /// A binary trace: 5000 untimed reads, then one past the disk's end (record 5000, in the
    /// reader's second batch): located at its byte offset and index, after the reads ran.
    @Test func aBinaryRecordBeyondTheDiskAfterABatchIsLocatedAtItsRecord() throws {
        var w = NativeBinaryTraceWriter(count: 5001)
        for k in 0..<5000 { w.append(TraceRecord(op: .read, offset: UInt64(k) * 4096, length: 4096)) }
        w.append(TraceRecord(op: .read, offset: Self.size - 512, length: 4096))
        var reader = try TraceFile.open(bytes: w.take(), fileName: "t.bin")
        let message = "request [1073741312, 1073745408) lies beyond the virtual size 1073741824"
        let location = TraceLocation.record(byteOffset: 32 + 5000 * 32, index: 5000)
        #expect(throws: SimulationError.trace(TraceError(file: "t.bin", location: location, message: message))) {
            try Simulation.run(config: SimulationConfig(virtualSize: Self.size, populate: .full), reader: &reader)
        }
    }
}

/// Replays `make()`'s records with `config` twice, batched and one record at a time (an event
/// log turns batching off), expects every counter of the two reports equal, and returns the
/// batched one.
private func runBatchedAndOneAtATime<R: TraceReader>(
    _ config: SimulationConfig, _ label: String = "", _ make: () throws -> R
) throws -> SimulationReport {
    var a = try make()
    var b = try make()
    let batched = try Simulation.run(config: config, reader: &a)
    let single = try Simulation.run(config: config, reader: &b, log: EventLog())
    #expect(batched.images[0].l2 == single.images[0].l2, "\(label)")
    #expect(batched.images[0].refcount == single.images[0].refcount, "\(label)")
    #expect(batched.images[0].image == single.images[0].image, "\(label)")
    #expect(batched.images[0].hostAllocatedBytes == single.images[0].hostAllocatedBytes, "\(label)")
    #expect(batched.images[0].hostLengthBytes == single.images[0].hostLengthBytes, "\(label)")
    #expect(batched.requestsByOp == single.requestsByOp, "\(label)")
    #expect(batched.multiSegmentReads == single.multiSegmentReads, "\(label)")
    #expect(batched.duration == single.duration, "\(label)")
    return batched
}

import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// The binary reader's batches (`next(into:admitting:)`, which decodes untimed plain records
/// straight from the input's buffer): from a file several 1 MiB chunks long, with timed runs,
/// flags, flushes, refused records and a bad or truncated end, they hold what `next()` returns,
/// in order, each refusal and error located where `next()` locates it.
@Suite struct BinaryBatchTests {
    /// 100 000 records (3.2 MB: four chunks of the input): 4 KiB reads and writes; records 40 000
    /// to 40 099 timed; every 1 001st a flush, every 1 999th a FUA write, every 3 001st a 4 MiB
    /// read (refused: longer than the filter's 1 MiB), every 5 003rd a read ending past the
    /// filter's 1 GiB, every 7 001st a write-zeroes.
    static func records() -> [TraceRecord] {
        var rng = SplitMix64(seed: 5)
        var t = 0.0
        return (0..<100_000).map { k -> TraceRecord in
            let offset = (rng.next() % (1 << 18)) << 12
            let timed = (40_000..<40_100).contains(k)
            if timed { t += 0.25 }
            let time = timed ? t : nil
            if k % 1001 == 1000 { return TraceRecord(time: time, op: .flush, offset: 0, length: 0) }
            if k % 1999 == 1998 { return TraceRecord(time: time, op: .write, offset: offset, length: 4096, flags: .fua) }
            if k % 3001 == 3000 { return TraceRecord(time: time, op: .read, offset: 0, length: 4 << 20) }
            if k % 5003 == 5002 { return TraceRecord(time: time, op: .read, offset: (1 << 30) - 2048, length: 4096) }
            if k % 7001 == 7000 { return TraceRecord(time: time, op: .writeZeroes, offset: offset, length: 65536) }
            return TraceRecord(time: time, op: rng.next() % 3 == 0 ? .write : .read, offset: offset, length: 4096)
        }
    }

    /// A batch's outcome, one record or event at a time: the records it held, then how it ended.
    enum Step: Equatable {
        case record(TraceRecord)
        case refused(TraceRecord, TraceLocation)
        case failed(String)
    }

    /// Every record of the file at `path` through batches of `size`, refusals and the error in
    /// place.
    static func batched(_ path: String, size: Int, writes: Bool) throws -> [Step] {
        var reader = try TraceFile.open(path: path)
        let buffer = UnsafeMutableBufferPointer<TraceRecord>.allocate(capacity: size)
        buffer.initialize(repeating: TraceRecord(op: .read, offset: 0, length: 0))
        defer { buffer.deallocate() }
        let filter = PlainReads(size: 1 << 30, maxLength: 1 << 20, writes: writes)
        var steps: [Step] = []
        while true {
            let (n, end) = reader.next(into: buffer, admitting: filter)
            steps += buffer[0..<n].map { .record($0) }
            switch end {
            case .full: continue
            case .ended: return steps
            case .refused(let r): steps.append(.refused(r, reader.location))
            case .failed(let e): return steps + [.failed("\(e)")]
            }
        }
    }

    /// The same through `next()`, refusing what the filter refuses.
    static func oneAtATime(_ path: String, writes: Bool) throws -> [Step] {
        var reader = try TraceFile.open(path: path)
        let filter = PlainReads(size: 1 << 30, maxLength: 1 << 20, writes: writes)
        var steps: [Step] = []
        do {
            while let r = try reader.next() {
                steps.append(filter.admits(r) ? .record(r) : .refused(r, reader.location))
            }
        } catch {
            steps.append(.failed("\(error)"))
        }
        return steps
    }

    /// `got == expected`, reported at the first step where they differ.
    static func expectSame(_ got: [Step], _ expected: [Step], _ label: String) {
        #expect(got.count == expected.count, "\(label)")
        if let i = (0..<min(got.count, expected.count)).first(where: { got[$0] != expected[$0] }) {
            Issue.record("\(label): step \(i): \(got[i]) instead of \(expected[i])")
        }
    }

    static func withFile(_ bytes: [UInt8], _ body: (String) throws -> Void) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("batch-\(UUID().uuidString).bin").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }

    @Test(arguments: [4096, 1000, 1])
    func batchesHoldWhatNextReturns(size: Int) throws {
        var w = NativeBinaryTraceWriter(count: 100_000)
        for r in Self.records() { w.append(r) }
        try Self.withFile(w.take()) { path in
            for writes in [true, false] {
                let expected = try Self.oneAtATime(path, writes: writes)
                #expect(expected.count == 100_000)
                let got = try Self.batched(path, size: size, writes: writes)
                Self.expectSame(got, expected, "batch \(size), writes \(writes)")
                // Hand-counted refusals: 99 flushes, 33 long reads, 19 reads past 1 GiB and 14
                // write-zeroes (no position is in two of these series), and every write when
                // writes are not admitted (the 50 FUA writes among them: the filter admits a
                // write whatever its flags, as `next()` and the replay do).
                let refused = got.filter { if case .refused = $0 { return true } else { return false } }
                let writesRefused = writes ? 0 : Self.records().filter { $0.op == .write }.count
                #expect(refused.count == 99 + 33 + 19 + 14 + writesRefused, "writes \(writes)")
                // Record 3000 is the first long read: located at its byte offset and index.
                #expect(
                    refused.contains(
                        .refused(
                            TraceRecord(op: .read, offset: 0, length: 4 << 20), .record(byteOffset: 32 + 3000 * 32, index: 3000)))
                )
            }
        }
    }

    /// An unknown count (a trace streamed to a pipe) and a last record cut short: every whole
    /// record comes first, then the error at the cut record.
    @Test func aTruncatedEndComesAfterEveryWholeRecord() throws {
        var w = NativeBinaryTraceWriter()
        for k in 0..<70_000 { w.append(TraceRecord(op: .read, offset: UInt64(k) << 12, length: 4096)) }
        let bytes = Array(w.take().dropLast(5))
        try Self.withFile(bytes) { path in
            let got = try Self.batched(path, size: 4096, writes: false)
            #expect(got.count == 70_000)
            #expect(got.dropLast().allSatisfy { if case .record = $0 { return true } else { return false } })
            let at = "byte \(32 + 69_999 * 32) (record 69999)"
            #expect(got.last == .failed("\(path): \(at): error: truncated record: 27 bytes left, expected a 32-byte record"))
            Self.expectSame(got, try Self.oneAtATime(path, writes: false), "one at a time")
        }
    }

    /// A header announcing more records than the file holds, and a bad op code in the middle of
    /// a chunk: each error after the records before it, located as `next()` locates it.
    @Test func aShortCountAndABadRecordAreLocated() throws {
        var w = NativeBinaryTraceWriter(count: 50_000)
        for k in 0..<40_000 { w.append(TraceRecord(op: .read, offset: UInt64(k) << 12, length: 4096)) }
        try Self.withFile(w.take()) { path in
            let got = try Self.batched(path, size: 4096, writes: false)
            #expect(got.count == 40_001)
            let message = "record count mismatch: the header says 50000 records but the file ends after 40000"
            #expect(got.last == .failed("\(path): byte \(32 + 40_000 * 32) (record 40000): error: \(message)"))
            Self.expectSame(got, try Self.oneAtATime(path, writes: false), "one at a time")
        }
        var bytes = NativeBinaryTraceTests.header(count: 40_000)
        for k in 0..<40_000 {
            bytes += NativeBinaryTraceTests.record(time: nil, op: k == 33_333 ? 9 : 0, offset: UInt64(k) << 12, length: 4096)
        }
        try Self.withFile(bytes) { path in
            let got = try Self.batched(path, size: 4096, writes: false)
            #expect(got.count == 33_334)
            let message = "invalid op code 9 (expected 0 R, 1 W, 2 D, 3 Z, 4 ZU or 5 F)"
            #expect(got.last == .failed("\(path): byte \(32 + 33_333 * 32) (record 33333): error: \(message)"))
            Self.expectSame(got, try Self.oneAtATime(path, writes: false), "one at a time")
        }
    }
}

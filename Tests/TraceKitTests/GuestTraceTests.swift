import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// The real guest recording in Traces/ (issue 5): `guest-ext4.trace.csv`, the qcow2 node's
/// complete request stream, decodes to the per-op counts Traces/README.md states. Those counts
/// were taken independently of TraceKit, with grep/awk on the raw QEMU trace log and
/// blklogwrites TSV (see the README's "guest-ext4.trace.csv" section).
@Suite struct GuestTraceTests {
    static let csv = Repository.path("Traces/guest-ext4.trace.csv")

    static func records(options: TraceOptions = TraceOptions()) throws -> [TraceRecord] {
        var r = try TraceFile.open(path: csv, options: options)
        #expect(r.format == .native)
        var out: [TraceRecord] = []
        while let x = try r.next() { out.append(x) }
        return out
    }

    @Test("guest-ext4.trace.csv has the README's records per op")
    func countsPerOp() throws {
        let recs = try Self.records()
        #expect(recs.count == 2883)
        func count(_ op: TraceRecord.Op) -> Int { recs.reduce(0) { $0 + ($1.op == op ? 1 : 0) } }
        func bytes(_ op: TraceRecord.Op) -> UInt64 { recs.reduce(0) { $0 + ($1.op == op ? $1.length : 0) } }
        // qcow2-node bdrv_co_preadv_part: 1113 guest reads (flags 0x8) + QEMU's 512-byte probe.
        #expect(count(.read) == 1114)
        #expect(bytes(.read) == 49_169_920 + 512)
        #expect(count(.write) == 732)
        #expect(bytes(.write) == 105_844_736)
        #expect(count(.writeZeroes) == 67)
        #expect(bytes(.writeZeroes) == 201_396_224)
        // blklogwrites discard entries.
        #expect(count(.discard) == 449)
        #expect(bytes(.discard) == 16_891_568_128)
        // qcow2_write_caches starts: 2 × 257 logged flushes + 7 the blklogwrites node did not log.
        #expect(count(.flush) == 521)
        #expect(recs.allSatisfy { $0.offset + $0.length <= 8 << 30 })
    }

    @Test("first and last records, time base and order")
    func firstAndLast() throws {
        let recs = try Self.records()
        // QEMU's probe read of sector 0, then the guest kernel's first read 40.839 ms later.
        #expect(recs[0] == TraceRecord(time: 0, op: .read, offset: 0, length: 512))
        #expect(recs[1].op == .read && recs[1].offset == 0 && recs[1].length == 512)
        #expect(abs((recs[1].time ?? 0) - 0.040839) < 1e-9)
        // mke2fs's first discard: one 4 KiB block at offset 0.
        #expect(
            recs.first { $0.op == .discard }
                == TraceRecord(time: recs.first { $0.op == .discard }?.time, op: .discard, offset: 0, length: 4096))
        // umount: the superblock write, then one logged flush that reaches qcow2 twice.
        #expect(recs.suffix(3).map(\.op) == [.write, .flush, .flush])
        #expect(recs[recs.count - 3].offset == 0 && recs[recs.count - 3].length == 4096)
        #expect(abs((recs.last?.time ?? 0) - 15.204880) < 1e-9)
        #expect(zip(recs, recs.dropFirst()).allSatisfy { ($0.time ?? 0) <= ($1.time ?? 0) })
    }
}

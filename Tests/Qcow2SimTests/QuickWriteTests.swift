import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// `Qcow2Image.quickWrite` (an overwrite of a cluster of the image's own, or the allocation of an
/// unallocated one, inside one cluster) makes the calls the general path of ALLOC_HOST and the
/// task makes: the same events, counters and host file, on workloads that mix those writes with
/// every case it leaves to the general path (spanning writes, zero and discarded entries, tables
/// not yet allocated, clusters shared after a write-zeroes), at cache sizes that evict.
@Suite struct QuickWriteTests {
    /// Writes (4 KiB and odd sizes, aligned to 512 bytes, some spanning clusters, some whole
    /// clusters), rewrites of earlier offsets, reads, discards and write-zeroes over `size` bytes.
    static func records(count: Int, size: UInt64, seed: UInt64) -> [TraceRecord] {
        var rng = XorShift64(seed: seed)
        func next() -> UInt64 { rng.next() }
        var earlier: [UInt64] = []
        var records: [TraceRecord] = []
        for _ in 0..<count {
            let r = next() % 100
            let op: TraceRecord.Op = r < 60 ? .write : r < 85 ? .read : r < 93 ? .discard : .writeZeroes
            let length: UInt64
            switch next() % 6 {
            case 0: length = 65536
            case 1: length = (1 + next() % 40) * 512
            case 2: length = (1 + next() % 300) * 512
            default: length = 4096
            }
            var offset = (next() % (size / 512)) * 512
            if !earlier.isEmpty && next() % 3 == 0 { offset = earlier[Int(next() % UInt64(earlier.count))] }
            // Some requests end at the disk's end (its last cluster, partial or not).
            if next() % 20 == 0 { offset = size }
            offset = min(offset, size - length)
            if op == .write { earlier.append(offset) }
            records.append(TraceRecord(op: op, offset: offset, length: length))
        }
        return records
    }

    struct Outcome: Equatable {
        var events: [CacheEvent]
        var l2: [CacheStats]
        var refcount: [CacheStats]
        var image: [ImageStats]
        var host: [[UInt64]]
    }

    /// `general`: every write takes the general path. Otherwise quick writes run as a live run
    /// runs them, their operations applied as they are made (`DirectOps`), or, with `recorded`,
    /// through the operation buffer a recording reads (a recorder is attached).
    static func run(_ config: SimulationConfig, _ records: [TraceRecord], general: Bool, recorded: Bool = false) throws
        -> Outcome
    {
        var config = config
        config.debugGeneralWrites = general
        var reader = ArrayTraceReader(records)
        let log = EventLog()
        let report: SimulationReport
        if recorded {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("quickwrite-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            report = try Simulation.record(config: config, reader: &reader, to: dir.appendingPathComponent("ops").path, log: log)
                .report
        } else {
            report = try Simulation.run(config: config, reader: &reader, log: log)
        }
        return Outcome(
            events: log.events, l2: report.images.map(\.l2), refcount: report.images.map(\.refcount),
            image: report.images.map(\.image), host: report.images.map { [$0.hostLengthBytes, $0.hostAllocatedBytes] })
    }

    static let size: UInt64 = 3 << 30

    static func configs() throws -> [(String, SimulationConfig)] {
        var small = SimulationConfig(
            virtualSize: size, driveOptions: try DriveOptions(parsing: "l2-cache-size=64K,refcount-cache-size=64K"))
        small.cacheMode = .writethrough
        var populated = SimulationConfig(virtualSize: size, populate: .full)
        populated.driveOptions = try DriveOptions(parsing: "l2-cache-size=128K")
        let data = SimulationConfig(
            virtualSize: size, populate: .ranges([ByteRange(start: 0, length: 1 << 30)]), populateMode: .data)
        let small4K = SimulationConfig(
            virtualSize: 1 << 30, createOptions: CreateOptions(clusterSize: 4096),
            driveOptions: try DriveOptions(parsing: "l2-cache-size=16K"))
        // The last cluster partly past the disk's end, and 2 MiB clusters.
        let unaligned = SimulationConfig(virtualSize: (1 << 30) + 5 * 4096 + 512)
        let huge = SimulationConfig(virtualSize: (2 << 30) + 4096, createOptions: CreateOptions(clusterSize: 2 << 20))
        return [
            ("fresh, default caches", SimulationConfig(virtualSize: size)),
            ("size not a multiple of the cluster size", unaligned),
            ("2 MiB clusters, size not a multiple of them", huge),
            (
                "512-byte clusters, 1-bit refcounts",
                SimulationConfig(virtualSize: 256 << 20, createOptions: CreateOptions(clusterSize: 512, refcountBits: 1))
            ),
            (
                "qcow2 v2, 64-bit refcounts",
                SimulationConfig(virtualSize: size, createOptions: CreateOptions(refcountBits: 64, version: 2))
            ),
            ("fresh, 64 KiB caches, writethrough", small),
            ("preallocated metadata, 128 KiB L2 cache", populated),
            ("first GiB of data", data),
            ("4 KiB clusters, 16 KiB L2 cache", small4K),
        ]
    }

    /// The last cluster of a disk whose size is not a multiple of the cluster size: block status
    /// stops at the disk's end, so the zero probe of a 4 KiB write's 60 KiB COW tail fails there
    /// and the tail is copied (read and written), where a cluster inside the disk skips its COW.
    /// Hand-worked: the first write (inside) skips one COW; the second copies 61 440 bytes.
    @Test(arguments: [UInt64(4096), 8192])
    func theLastClusterOfAnUnalignedDiskCopiesItsTail(beyond: UInt64) throws {
        let config = SimulationConfig(virtualSize: (1 << 20) + beyond)
        let records = [
            TraceRecord(op: .write, offset: 4096, length: 4096), TraceRecord(op: .write, offset: 1 << 20, length: 4096),
        ]
        let general = try Self.run(config, records, general: true)
        let quick = try Self.run(config, records, general: false)
        #expect(general.image[0].cowSkipped == 1)
        #expect(general.image[0].cowBytesRead == 61440)
        #expect(general.image[0].cowBytesWritten == 61440)
        #expect(quick.image == general.image)
        #expect(quick.events == general.events)
        #expect(quick.host == general.host)
    }

    /// Whole-cluster writes (no COW regions) on a fresh image, then one inside a cluster and a
    /// rewrite of a whole one. Hand-worked: one L2 table (the first GiB's), four new data
    /// clusters (three whole, one with a 60 KiB COW that reads as zeroes and is skipped), the
    /// rewrite an overwrite, nothing copied, 4 × 64 KiB + 4 KiB written.
    @Test func wholeClusterWritesMatchTheGeneralPath() throws {
        let config = SimulationConfig(virtualSize: 1 << 30)
        let records = [
            TraceRecord(op: .write, offset: 0, length: 65536), TraceRecord(op: .write, offset: 1 << 20, length: 65536),
            TraceRecord(op: .write, offset: 65536, length: 65536), TraceRecord(op: .write, offset: 3 << 20, length: 4096),
            TraceRecord(op: .write, offset: 1 << 20, length: 65536),
        ]
        let general = try Self.run(config, records, general: true)
        let quick = try Self.run(config, records, general: false)
        #expect(general.image[0].clustersAllocated == 4)
        #expect(general.image[0].l2TablesAllocated == 1)
        #expect(general.image[0].cowSkipped == 1)
        #expect(general.image[0].cowBytesRead == 0)
        #expect(general.image[0].guestBytesWritten == 4 * 65536 + 4096)
        #expect(quick.image == general.image)
        #expect(quick.events == general.events)
        #expect(quick.l2 == general.l2)
        #expect(quick.refcount == general.refcount)
        #expect(quick.host == general.host)
    }

    @Test func quickWritesMatchTheGeneralPath() throws {
        for (name, config) in try Self.configs() {
            let records = Self.records(count: 4000, size: config.virtualSize, seed: 0x9E37_79B9_7F4A_7C15)
            let general = try Self.run(config, records, general: true)
            let quick = try Self.run(config, records, general: false)
            // Quick writes through the operation buffer (a recorded run) against direct ones.
            let buffered = try Self.run(config, records, general: false, recorded: true)
            #expect(buffered == quick, "\(name): quick writes through the buffer differ from direct ones")
            // Every configuration has 2364 writes; all but the preallocated one allocate.
            #expect(general.events.count > 3 * records.count, "\(name): too few events to compare")
            #expect(general.image.reduce(0) { $0 + $1.guestBytesWritten } > 60 << 20, "\(name): the workload writes")
            if config.populate != .full {
                #expect(general.image.reduce(0) { $0 + $1.clustersAllocated } > 200, "\(name): the workload allocates")
            }
            // Compared as a whole, reported by part (a failed comparison of the whole would print
            // every event).
            #expect(quick.l2 == general.l2, "\(name)")
            #expect(quick.refcount == general.refcount, "\(name)")
            #expect(quick.image == general.image, "\(name)")
            #expect(quick.host == general.host, "\(name)")
            let sameEvents = quick.events == general.events
            #expect(sameEvents, "\(name): \(quick.events.count) events instead of \(general.events.count)")
            if !sameEvents,
                let i = quick.events.indices.first(where: { $0 >= general.events.count || quick.events[$0] != general.events[$0] }
                )
            {
                Issue.record("\(name): first difference at event \(i): \(quick.events[i]) instead of \(general.events[i])")
            }
        }
    }
}

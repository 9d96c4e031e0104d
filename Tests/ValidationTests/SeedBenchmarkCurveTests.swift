import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

extension SeedBenchmarkTests {
    /// Issue 10, item 3: the one-pass curve (`MissRatioCurveRunner`, as `mrc` runs it) on the seed
    /// benchmark equals real QEMU's counts at 1M, 1.5M, 2M and 2.5M, with whole-table entries
    /// and with QEMU's default 4 KiB slices (which become whole tables at 2.5M, where the cache
    /// covers the 20 GiB disk). Each size also runs through qemu-io event by event (`run`).
    @Test("mrc: the one-pass curve at 1M/1.5M/2M/2.5M equals qemu-io's counts")
    func curveEqualsQemu() throws {
        let size: UInt64 = 20 << 30
        let input = try Self.trace(size: size)
        for entry in ["64K", nil] as [String?] {
            var base = SimulationConfig(virtualSize: size, populate: .full)
            if let entry { base.driveOptions = try DriveOptions(parsing: "l2-cache-entry-size=\(entry)") }
            let key = SweepKey.drive("l2-cache-size")
            let grid = try SweepGrid(
                base: base, axes: [SweepAxis(key: key, values: try SweepValues.parse("1M,1.5M,2M,2.5M", key: key, argument: "--sizes"))])
            let points = grid.points
            let (reports, methods) = try MissRatioCurveRunner().run(
                points, open: { ArrayTraceReader(input.records, fileName: input.fileName) })
            // The first size is the template (its own run); at 2.5M the default entry size is the
            // cluster size, another stream: replayed. The rest come from the stack pass.
            #expect(methods == (entry == nil ? [.replay, .stack, .stack, .replay] : [.replay, .stack, .stack, .stack]))
            for (p, r) in zip(points, reports) {
                let drive = "l2-cache-size=\(p.values[0].text)" + (entry.map { ",l2-cache-entry-size=\($0)" } ?? "")
                let (_, qemu) = try run(size: size, drive: drive, input: input)
                let l2 = r.images[0].l2
                #expect(l2.lookups == qemu.lookups, "\(drive)")
                #expect(l2.hits == qemu.hits, "\(drive)")
                #expect(l2.misses == qemu.misses, "\(drive)")
                #expect(l2.emptyGets == qemu.emptyGets, "\(drive)")
                #expect(l2.evictions == qemu.evictions, "\(drive)")
                #expect(l2.writebacks == qemu.writebacks, "\(drive)")
                #expect(l2.flushes == qemu.flushes, "\(drive)")
            }
            if entry != nil {
                // 40 whole tables: 2.5M holds all of them, only the cold misses remain.
                #expect(reports[3].images[0].l2.misses == 40)
            }
        }
    }
}

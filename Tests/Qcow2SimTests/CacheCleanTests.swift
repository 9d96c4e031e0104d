import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// `cache-clean-interval` driven by trace time (qcow2-model.md §3.7 and TV9): ticks at I, 2I, …;
/// an entry is dropped at the first tick k whose predecessor tick k-1 came after its last release;
/// the memory of runs of cleaned entries is returned.
@Suite struct CacheCleanTests {
    /// TV9's image: data at 0 and at 600M; `read 0 4k` twice, `gap` seconds apart, first at 0.3 s.
    static func run(gap: Double) throws -> (events: [String], timeline: MemoryTimeline, stats: CacheStats) {
        let r = try runReport(gap: gap)
        return (r.events, r.timeline, r.report.l2)
    }

    /// `run(gap:)` with the whole image report (BoundedWorkTests reads its tick counts).
    static func runReport(gap: Double) throws -> (events: [String], timeline: MemoryTimeline, report: ImageReport) {
        var config = SimulationConfig(virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "cache-clean-interval=1"))
        config.preparation = [
            PreparationSession(
                image: 0,
                records: [
                    TraceRecord(op: .write, offset: 0, length: 4096), TraceRecord(op: .write, offset: 600 << 20, length: 4096),
                ])
        ]
        let log = EventLog()
        let timeline = MemoryTimeline()
        var reader = ArrayTraceReader([
            TraceRecord(time: 0.3, op: .read, offset: 0, length: 4096),
            TraceRecord(time: 0.3 + gap, op: .read, offset: 0, length: 4096),
        ])
        let report = try Simulation.run(config: config, reader: &reader, log: log, memoryTimeline: timeline)
        return (log.events.map { $0.line(includeImage: false) }, timeline, report.images[0])
    }

    @Test func gapOfOneAndAHalfIntervalsStillHits() throws {
        let r = try Self.run(gap: 1.5)
        #expect(Array(r.events.prefix(6)) == SpecNotation.lines("L2 get 0x40000 miss 0 ; L2 get 0x40000 hit 0"))
        #expect(r.stats.cleaned == 0)
    }

    @Test func gapOfTwoAndAHalfIntervalsMissesAgainAtTheSameIndex() throws {
        let r = try Self.run(gap: 2.5)
        #expect(Array(r.events.prefix(8)) == SpecNotation.lines("L2 get 0x40000 miss 0 ; L2 get 0x40000 miss 0"))
        #expect(r.stats.cleaned == 1)
        // Issue 13's miss classes: the first read's miss is cold, the second's the timer's.
        #expect(r.stats.missesCold == 1 && r.stats.missesCleaned == 1 && r.stats.missesEvicted == 0)
        #expect(r.stats.missesDiscarded == 0)
        // The whole 64 KiB table's pages are returned at the tick at 2 s, then refilled at 2.8 s.
        let l2 = r.timeline.samples.filter { $0.isL2 }.map { [$0.time, Double($0.residentBytes)] }
        #expect(l2 == [[0, 0], [0.3, 65536], [2, 0], [2.8, 65536]])
    }

    @Test func noTimestampsNoTicks() throws {
        var config = SimulationConfig(
            virtualSize: 1 << 30, populate: .full, driveOptions: try DriveOptions(parsing: "cache-clean-interval=1"))
        config.readOnly = true
        var reader = ArrayTraceReader([
            TraceRecord(op: .read, offset: 0, length: 4096), TraceRecord(op: .read, offset: 0, length: 4096),
        ])
        let report = try Simulation.run(config: config, reader: &reader)
        #expect(report.images[0].l2.hits == 1)
    }
}

/// Cache memory accounting without timestamps: every request weighs the same.
@Suite struct MemoryAccountingTests {
    @Test func untimedTraceAveragesPerRequest() throws {
        // 1 GiB populated: the default L2 cache holds both 64 KiB tables (2 entries).
        var config = SimulationConfig(virtualSize: 1 << 30, populate: .full)
        config.readOnly = true
        var reader = ArrayTraceReader([
            TraceRecord(op: .read, offset: 0, length: 4096),
            TraceRecord(op: .read, offset: 600 << 20, length: 4096),
        ])
        let report = try Simulation.run(config: config, reader: &reader)
        let l2 = report.images[0].l2
        #expect(l2.memoryPeakBytes == 131_072)
        // After request 1: one table resident (64 KiB); after request 2: two (128 KiB).
        #expect(SimulationReport.meanMemory(l2, span: report.memorySpan) == 98_304)
    }

    /// Cold misses are first loads: on a read-only trace without a clean timer or discards, one
    /// per distinct 4 KiB slice the trace touches (counted here from the trace itself), and
    /// every other miss is a capacity miss.
    @Test func coldMissesAreTheDistinctSlices() throws {
        let path = Repository.path("Traces/seed-uniform-20G-20000.csv")
        var slices = Set<UInt64>()
        var reader = try TraceFile.open(path: path)
        while let r = try reader.next() {
            // 512 entries of 64 KiB clusters per 4 KiB slice: 32 MiB of guest space each.
            var g = r.offset
            while g < r.offset + r.length {
                slices.insert(g >> 25)
                g = (g >> 25 + 1) << 25
            }
        }
        var config = SimulationConfig(virtualSize: 20 << 30, populate: .full, driveOptions: "l2-cache-size=64K")
        config.readOnly = true
        var r2 = try TraceFile.open(path: path)
        let l2 = try Simulation.run(config: config, reader: &r2).images[0].l2
        #expect(l2.missesCold == slices.count)
        #expect(l2.missesEvicted == l2.misses - slices.count)
        #expect(l2.missesCleaned == 0 && l2.missesDiscarded == 0)
        #expect(l2.misses > slices.count)
    }
}

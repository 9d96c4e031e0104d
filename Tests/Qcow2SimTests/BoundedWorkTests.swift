import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// Issue 14 items 8, 9 and 3 (populate): work bounded by what the trace does, not by its
/// timestamps or request lengths, and bad values refused with their exact messages.
@Suite struct BoundedWorkTests {
    /// CacheCleanTests' TV9 run with a gap of `gap` seconds between the two reads.
    static func tv9(gap: Double) throws -> (events: [String], timeline: MemoryTimeline, report: ImageReport) {
        try CacheCleanTests.runReport(gap: gap)
    }

    /// 10^6 s between two reads with a 1 s interval: 10^6 ticks fire, three are run (the mark
    /// moves, the entry is cleaned, then one that changes nothing); the tick-by-tick loop ran all.
    @Test func idleCleanTicksAreCountedNotRun() throws {
        let r = try Self.tv9(gap: 1_000_000)
        #expect(Array(r.events.prefix(8)) == SpecNotation.lines("L2 get 0x40000 miss 0 ; L2 get 0x40000 miss 0"))
        #expect(r.report.image.cleanTicks == 1_000_000)
        #expect(r.report.image.cleanTicksEvaluated == 3)
        #expect(r.report.l2.cleaned == 1)
    }

    /// A timestamp of 10^12 s (issue 14 item 8: hung `simulate`): the same events and memory
    /// timeline as a gap of 2.5 intervals (CacheCleanTests), 10^12 ticks counted, 3 run.
    @Test func aTimestampOf1e12SecondsCostsThreeTicks() throws {
        let far = try Self.tv9(gap: 1e12)
        let near = try Self.tv9(gap: 2.5)
        #expect(far.events == near.events)
        #expect(Array(far.events.prefix(8)) == SpecNotation.lines("L2 get 0x40000 miss 0 ; L2 get 0x40000 miss 0"))
        #expect(far.report.image.cleanTicks == 1_000_000_000_000)
        #expect(far.report.image.cleanTicksEvaluated == 3)
        #expect(near.report.image.cleanTicks == 2)
        let l2 = far.timeline.samples.filter { $0.isL2 }.map { [$0.time, Double($0.residentBytes)] }
        #expect(l2 == [[0, 0], [0.3, 65536], [2, 0], [0.3 + 1e12, 65536]])
    }

    /// Several gaps: every request gap of k ≥ 3 intervals runs 3 ticks and counts k.
    @Test func ticksAcrossSeveralGapsLandOnTheIntervalGrid() throws {
        var config = SimulationConfig(
            virtualSize: 1 << 30, populate: .full, driveOptions: try DriveOptions(parsing: "cache-clean-interval=7"))
        config.readOnly = true
        let times: [Double] = [0, 100, 100.5, 1e9, 1e9 + 13]
        var reader = ArrayTraceReader(times.map { TraceRecord(time: $0, op: .read, offset: 0, length: 4096) })
        let log = EventLog()
        let report = try Simulation.run(config: config, reader: &reader, log: log)
        // Ticks at 7, 14, …: floor((10^9 + 13) / 7) = 142857144 of them by the last request.
        #expect(report.images[0].image.cleanTicks == 142_857_144)
        // Gaps: 0→100 (14 ticks: 3 run), 100→100.5 (none), →1e9 (3 run), →1e9+13 (2 ticks, 2 run).
        #expect(report.images[0].image.cleanTicksEvaluated == 8)
        // Each read after a gap of two ticks or more misses (the table was cleaned, and the
        // refill takes its start index 0 again); the one 0.5 s later hits.
        let l2 = log.events.map { $0.line(includeImage: false) }.filter { $0.contains("is_l2_cache 1") }
        #expect(
            l2
                == SpecNotation.lines(
                    "L2 get 0x40000 miss 0 ; L2 get 0x40000 miss 0 ; L2 get 0x40000 hit 0 ; L2 get 0x40000 miss 0 ; L2 get 0x40000 miss 0"
                ) + SpecNotation.lines("flush L2"))
    }

    @Test(arguments: [
        (Double.infinity, "time inf is not a finite number of seconds"),
        (-Double.infinity, "time -inf is not a finite number of seconds"),
        (Double.nan, "time nan is not a finite number of seconds"),
        (-1, "time -1.0 is negative"),
        (
            1e20,
            "time 1e+20 s is beyond the limit of 4503599627370496 s (2^52; a clock in micro- or nanoseconds read as seconds? scale it with --time-scale)"
        ),
    ])
    func unusableTimesFromALibraryReaderAreLocatedErrors(time: Double, message: String) throws {
        var reader = ArrayTraceReader(
            [
                TraceRecord(time: 0, op: .read, offset: 0, length: 4096),
                TraceRecord(time: time, op: .read, offset: 0, length: 4096),
            ],
            fileName: "lib")
        let config = SimulationConfig(virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "cache-clean-interval=1"))
        #expect(throws: SimulationError.trace(TraceError(file: "lib", location: .line(2), message: message))) {
            try Simulation.run(config: config, reader: &reader)
        }
        #expect(SimulationError.trace(TraceError(file: "lib", location: .line(2), message: message)).exitCode == 65)
    }

    @Test func theTimeLimitItselfIsAccepted() throws {
        var reader = ArrayTraceReader([
            TraceRecord(time: 0, op: .read, offset: 0, length: 4096),
            TraceRecord(time: 0x1p52, op: .read, offset: 0, length: 4096),
        ])
        let config = SimulationConfig(
            virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "cache-clean-interval=4294967295"))
        let report = try Simulation.run(config: config, reader: &reader)
        // floor(2^52 / (2^32 - 1)) = 1048576 ticks.
        #expect(report.images[0].image.cleanTicks == 1_048_576)
        #expect(report.images[0].image.cleanTicksEvaluated <= 3)
    }

    /// Issue 14 item 3: `--populate 18446744073709551615:2 --populate-mode data` trapped on the
    /// range's end overflowing.
    @Test func populateRangeEndingPast2To64IsAUsageError() throws {
        let config = SimulationConfig(
            virtualSize: 1 << 30, populate: .ranges([ByteRange(start: .max, length: 2)]), populateMode: .data)
        var reader = ArrayTraceReader([TraceRecord(op: .write, offset: 0, length: 4096)])
        let expected = SimulationError.usage("--populate: range 18446744073709551615:2 lies beyond the virtual size 1073741824")
        #expect(throws: expected) { try Simulation.run(config: config, reader: &reader) }
        #expect(expected.exitCode == 64)
        #expect(!ByteRange(start: .max, length: 2).endsWithin(1 << 30))
        #expect(ByteRange(start: 1 << 29, length: 1 << 29).endsWithin(1 << 30))
    }

    @Test func populateOverflowOnTheCommandLine() throws {
        let path = try CLITests.trace("W,0,4096\n")
        let (status, out, err) = try CLITests.run([
            "simulate", path, "--size", "1G", "--populate", "18446744073709551615:2", "--populate-mode", "data",
        ])
        #expect(status == 64)
        #expect(out.isEmpty)
        #expect(
            err
                == "qcow2sim simulate: error: invalid value '18446744073709551615:2' for --populate (the range ends beyond the virtual size 1073741824)\n"
        )
    }

    /// Issue 14 item 8 on the command line: a 10^12 s timestamp simulates; 10^20 s and
    /// `generate --interval 1e308` (which wrote `inf` times) are refused with their messages.
    @Test func timeLimitsOnTheCommandLine() throws {
        let far = try CLITests.trace("0,W,0,4096\n1e12,R,0,4096\n")
        let (ok, report, _) = try CLITests.run(["simulate", far, "--size", "1G"])
        #expect(ok == 0)
        #expect(report.hasPrefix("requests: 2"))
        let bad = try CLITests.trace("0,W,0,4096\n1e20,R,0,4096\n")
        let (status, out, err) = try CLITests.run(["simulate", bad, "--size", "1G"])
        #expect(status == 65)
        #expect(out.isEmpty)
        #expect(
            err
                == "\(bad):2: error: time 1e+20 s is beyond the limit of 4503599627370496 s (2^52; a clock in micro- or nanoseconds read as seconds? scale it with --time-scale)\n"
        )
        let target = URL(fileURLWithPath: bad).deletingLastPathComponent().appendingPathComponent("g.csv").path
        let (gs, gout, gerr) = try CLITests.run([
            "generate", "--pattern", "uniform", "--count", "3", "--size", "1G", "--interval", "1e308", "-o", target,
        ])
        #expect(gs == 64)
        #expect(gout.isEmpty)
        #expect(
            gerr
                == "qcow2sim generate: error: interval '1e+308' puts record 3 beyond the trace time limit of 4503599627370496 s (2^52)\n"
        )
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    /// Issue 14 item 9 (`W,0,16T --size 64T`: 28 s, 2.5 GB), at a size a debug test build
    /// runs quickly: one 16 GiB write over a fresh 64 TiB image (QEMU splits it into 9 requests
    /// of at most 2147483136 bytes; each refcount block covers 2 GiB). Hand-computed: 2^34 / 2^16
    /// data clusters, one L2 table per 8192 clusters (512 MiB of guest).
    @Test func aLongWriteAllocatesEveryClusterOnce() throws {
        let config = SimulationConfig(virtualSize: 64 << 40)
        var reader = ArrayTraceReader([TraceRecord(op: .write, offset: 0, length: 16 << 30)])
        let report = try Simulation.run(config: config, reader: &reader)
        let image = report.images[0]
        #expect(image.image.clustersAllocated == 262_144)
        #expect(image.image.l2TablesAllocated == 32)
        #expect(image.image.guestBytesWritten == 16 << 30)
        #expect(image.hostLengthBytes > 16 << 30)
        // Data plus metadata, all written: every byte of the file is allocated, with ext4's
        // extent-tree blocks on top (32768-block extents).
        #expect(image.hostAllocatedBytes >= image.hostLengthBytes)
    }
}

import Foundation
import Qcow2Sim
import Testing
import TraceKit

/// Issue 10, items 1 and 2 (in-process): the VALUES syntax, the grid, the groups that will share
/// one recording, and every sweep point equal to `Simulation.run` with the same configuration
/// built by hand, counter for counter.
@Suite struct SweepTests {
    static let traces = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Traces")
    static let seedMixed = traces.appendingPathComponent("seed-mixed-uniform-8G-20000-rw50.csv").path
    static let guest = traces.appendingPathComponent("guest-ext4.trace.csv").path

    static func values(_ text: String, _ key: String) throws -> [String] {
        guard let k = SweepKey(key) else { throw SimulationError.usage("no key \(key)") }
        return try SweepValues.parse(text, key: k, argument: "--vary \(key)").map(\.text)
    }

    // MARK: VALUES, worked by hand

    @Test func geometricRangeByFactor() throws {
        // 2^18 … 2^25: eight sizes.
        #expect(
            try Self.values("256K..32M*2", "l2-cache-size")
                == ["262144", "524288", "1048576", "2097152", "4194304", "8388608", "16777216", "33554432"])
        // END is not reached exactly: 1 MiB would pass 1000 KiB.
        #expect(try Self.values("256K..1000K*2", "l2-cache-size") == ["262144", "524288"])
        #expect(try Self.values("1M..1M*2", "l2-cache-size") == ["1048576"])
        // 1.5^k exactly: 1M, 1.5M, 2.25M, 3.375M (5.0625M is past 4M).
        #expect(try Self.values("1M..4M*1.5", "l2-cache-size") == ["1048576", "1572864", "2359296", "3538944"])
        #expect(try Self.values("64K..128M*2", "l2-cache-size").count == 12)
    }

    @Test func geometricRangeByCount() throws {
        // 262144 × 128^(k/23), rounded to the nearest byte (worked with 50-digit decimals:
        // k=1 is 323711.2157…, k=3 493620.737…, k=22 27172654.504…; none is near a half).
        #expect(
            try Self.values("256K..32M:24", "l2-cache-size") == [
                "262144", "323711", "399738", "493621", "609553", "752712", "929495", "1147796", "1417368", "1750251",
                "2161316", "2668923", "3295747", "4069787", "5025618", "6205936", "7663464", "9463307", "11685862",
                "14430407", "17819537", "22004639", "27172655", "33554432",
            ])
        // 1M × 4^(k/2): both ends and the geometric middle.
        #expect(try Self.values("1M..4M:3", "l2-cache-size") == ["1048576", "2097152", "4194304"])
    }

    @Test func listsAndArithmeticRanges() throws {
        #expect(try Self.values("256K,512K,1M", "l2-cache-size") == ["262144", "524288", "1048576"])
        #expect(try Self.values("0x10000,1.5M", "backing.refcount-cache-size") == ["65536", "1572864"])
        #expect(try Self.values("1M..2.5M+512K", "cache-size") == ["1048576", "1572864", "2097152", "2621440"])
        #expect(try Self.values("0..30+10", "cache-clean-interval") == ["0", "10", "20", "30"])
        #expect(try Self.values("on,false", "extended_l2") == ["on", "off"])
        #expect(try Self.values("8,16", "refcount_bits") == ["8", "16"])
        #expect(try Self.values("writethrough,none", "cache-mode") == ["writethrough", "none"])
        #expect(try Self.values("lru,qemu", "policy") == ["lru", "qemu"])
    }

    static let badValues: [(String, String, String)] = [
        (
            "1M..256K*2", "l2-cache-size",
            "invalid value '1M..256K*2' for --vary l2-cache-size (empty range: 1048576 is above 262144)"
        ),
        (
            "256K..1M*1", "l2-cache-size",
            "invalid value '256K..1M*1' for --vary l2-cache-size (the factor '1' must be a number above 1)"
        ),
        ("0..1M*2", "l2-cache-size", "invalid value '0..1M*2' for --vary l2-cache-size (a geometric range cannot start at 0)"),
        (
            "1M..2M", "l2-cache-size",
            "invalid value '1M..2M' for --vary l2-cache-size (a range needs a step: START..END*FACTOR, START..END+STEP or START..END:COUNT)"
        ),
        (
            "1..2:5", "l2-cache-size",
            "invalid value '1..2:5' for --vary l2-cache-size (the value 1 repeats after rounding to whole numbers; use fewer points)"
        ),
        (
            "1M..2M:1", "l2-cache-size",
            "invalid value '1M..2M:1' for --vary l2-cache-size (the count '1' must be a whole number of at least 2)"
        ),
        ("1M,,2M", "l2-cache-size", "invalid value '1M,,2M' for --vary l2-cache-size (empty value in the list)"),
        ("1M,1024K", "l2-cache-size", "invalid value '1M,1024K' for --vary l2-cache-size (the value 1048576 appears twice)"),
        (
            "1X", "l2-cache-size",
            "invalid value '1X' for --vary l2-cache-size ('1X': expected a size in bytes, optionally with a K, M, G or T suffix)"
        ),
        ("1K", "cache-clean-interval", "invalid value '1K' for --vary cache-clean-interval ('1K': expected a whole number)"),
        ("maybe", "extended_l2", "invalid value 'maybe' for --vary extended_l2 ('maybe': expected on or off)"),
        ("on..off*2", "extended_l2", "invalid value 'on..off*2' for --vary extended_l2 (extended_l2 takes a list, not a range)"),
        (
            "writeback,fast", "cache-mode",
            "invalid value 'writeback,fast' for --vary cache-mode ('fast': expected one of: writeback, writethrough, none, directsync, unsafe)"
        ),
        (
            "1..100000000+1", "cache-clean-interval",
            "invalid value '1..100000000+1' for --vary cache-clean-interval (more than 10000 values)"
        ),
    ]

    @Test(arguments: badValues)
    func badValuesAreUsageErrors(_ text: String, _ key: String, _ message: String) throws {
        #expect(throws: SimulationError.usage(message)) { try Self.values(text, key) }
    }

    @Test func keys() throws {
        #expect(SweepKey("backing.backing.cache-size") == .drive("backing.backing.cache-size"))
        #expect(SweepKey("cluster_size") == .create("cluster_size"))
        #expect(SweepKey("backing.cluster_size") == nil)
        #expect(SweepKey("l2_cache_size") == nil)
        #expect(SweepKey("compat") == nil)
        #expect(
            throws: SimulationError.usage(
                "invalid value 'l2-cache-size' for --vary (expected KEY=VALUES, e.g. l2-cache-size=256K..32M*2)")
        ) {
            try SweepAxis.parse("l2-cache-size")
        }
        #expect(
            throws: SimulationError.usage(
                "unknown key 'foo' in --vary foo=1 (expected one of: l2-cache-size, l2-cache-entry-size, refcount-cache-size, cache-size, cache-clean-interval, cluster_size, extended_l2, refcount_bits, cache-mode, policy; the --drive keys also with backing. prefixes; what-if.KEY for a what-if, KEY one of: l2-cache-size, refcount-cache-size, cache-scope, chain-l2-cache-size, chain-refcount-cache-size)"
            )
        ) { try SweepAxis.parse("foo=1") }
    }

    // MARK: The grid

    @Test func crossProductOrderAndOptionEditing() throws {
        var base = SimulationConfig(virtualSize: 1 << 30, createOptions: "cluster_size=4K,refcount_bits=8")
        base.driveOptions = "l2-cache-size=8M,cache-clean-interval=0"
        let grid = try SweepGrid(
            base: base, axes: [try SweepAxis.parse("cluster_size=64K,128K"), try SweepAxis.parse("l2-cache-size=1M,2M,4M")])
        let points = grid.points
        #expect(points.map(\.index) == [0, 1, 2, 3, 4, 5])
        #expect(
            points.map(\.config.createOptions) == [
                "refcount_bits=8,cluster_size=65536", "refcount_bits=8,cluster_size=65536", "refcount_bits=8,cluster_size=65536",
                "refcount_bits=8,cluster_size=131072", "refcount_bits=8,cluster_size=131072",
                "refcount_bits=8,cluster_size=131072",
            ])
        #expect(
            points.map(\.config.driveOptions) == [
                "cache-clean-interval=0,l2-cache-size=1048576", "cache-clean-interval=0,l2-cache-size=2097152",
                "cache-clean-interval=0,l2-cache-size=4194304", "cache-clean-interval=0,l2-cache-size=1048576",
                "cache-clean-interval=0,l2-cache-size=2097152", "cache-clean-interval=0,l2-cache-size=4194304",
            ])
        let modes = try SweepGrid(
            base: base, axes: [try SweepAxis.parse("cache-mode=writethrough"), try SweepAxis.parse("policy=lru")])
        #expect(modes.points.map { "\($0.config.cacheMode.rawValue) \($0.config.policy)" } == ["writethrough lru"])
    }

    @Test func gridErrors() throws {
        let base = SimulationConfig(virtualSize: 1 << 30)
        #expect(throws: SimulationError.usage("--vary l2-cache-size is given twice (each key may be varied once)")) {
            try SweepGrid(base: base, axes: [try SweepAxis.parse("l2-cache-size=1M"), try SweepAxis.parse("l2-cache-size=2M")])
        }
        var image = base
        image.imageFile = "/tmp/x.qcow2"
        #expect(
            throws: SimulationError.usage(
                "--vary cluster_size cannot be combined with --image (the image exists; -o is for qemu-img create)")
        ) { try SweepGrid(base: image, axes: [try SweepAxis.parse("cluster_size=64K")]) }
        // 400 × 400 > 100000.
        #expect(throws: SimulationError.usage("the grid has more than 100000 points")) {
            try SweepGrid(
                base: base,
                axes: [try SweepAxis.parse("cache-clean-interval=1..400+1"), try SweepAxis.parse("l2-cache-size=1K..400K+1K")])
        }
    }

    /// The 48-point grid of issue 10 over an 8 GiB disk. A group shares the entry size QEMU
    /// picks (`read_cache_sizes`): 4 KiB slices below full coverage, whole tables from it. Full
    /// coverage is 8G / cluster × 8 bytes (16 with extended_l2): 1M for 64K clusters (2M
    /// extended), 512K for 128K clusters (1M extended). Of 64K … 128M (×2, 12 sizes), 4, 5, 3 and
    /// 4 lie below it.
    @Test func groupsShareTraceImageAndEntrySize() throws {
        let grid = try SweepGrid(
            base: SimulationConfig(virtualSize: 8 << 30),
            axes: [
                try SweepAxis.parse("cluster_size=64K,128K"), try SweepAxis.parse("extended_l2=off,on"),
                try SweepAxis.parse("l2-cache-size=64K..128M*2"),
            ])
        let points = grid.points
        #expect(points.count == 48)
        let groups = PointGroup.groups(points, traces: 2)
        #expect(groups.map(\.trace) == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
        #expect(groups.map(\.points.count) == [4, 8, 5, 7, 3, 9, 4, 8, 4, 8, 5, 7, 3, 9, 4, 8])
        #expect(groups[1].points.map(\.index) == Array(4..<12))
        // The policy and the cache sizes do not split a group; the cache mode does.
        let mixed = try SweepGrid(
            base: SimulationConfig(virtualSize: 8 << 30),
            axes: [
                try SweepAxis.parse("cache-mode=writeback,writethrough"), try SweepAxis.parse("refcount-cache-size=256K,1M"),
                try SweepAxis.parse("policy=qemu,lru"),
            ])
        #expect(PointGroup.groups(mixed.points, traces: 1).map { $0.points.map(\.index) } == [[0, 1, 2, 3], [4, 5, 6, 7]])
        // The live runner runs each point by itself.
        #expect(LivePointRunner().batches(groups[0]).map { $0.points.map(\.index) } == [[0], [1], [2], [3]])
    }

    // MARK: Every point is simulate's run

    /// Runs `axes` over `traces` and checks every row against `Simulation.run` with the
    /// configuration `expected(point values)` builds by hand.
    static func checkEqualsSimulate(
        traces: [String], base: SimulationConfig, axes: [String], jobs: Int, expected: ([String]) -> SimulationConfig
    ) throws -> SweepTable {
        let grid = try SweepGrid(base: base, axes: try axes.map { try SweepAxis.parse($0) })
        let points = grid.points
        // The one-recording runner: every replayed point must equal its own live run.
        let reports = try SweepExecutor.run(
            points: points, traces: traces.count, jobs: jobs, runner: RecordingPointRunner(),
            open: { try TraceFile.open(path: traces[$0]) })
        let table = SweepTable(command: "sweep", traces: traces, grid: grid, points: points, reports: reports)
        var rows = table.rows[...]
        for trace in traces {
            for p in points {
                let config = expected(p.values.map(\.text))
                var reader = try TraceFile.open(path: trace)
                let r = try Simulation.run(config: config, reader: &reader)
                for im in r.images {
                    for (name, st, size, n) in [
                        ("l2", im.l2, im.sizing.l2EntrySize, im.sizing.l2Entries),
                        ("refcount", im.refcount, im.sizing.refcountEntrySize, im.sizing.refcountEntries),
                    ] {
                        let next = rows.popFirst()
                        let row = try #require(next)
                        #expect(row.trace == trace && row.image == im.index && row.cache == name)
                        #expect(row.values.map(\.text) == p.values.map(\.text))
                        #expect(row.policy == config.policy)
                        #expect(row.stats == st, "\(trace) point \(p.index) image \(im.index) \(name)")
                        #expect(row.entrySize == size && row.entries == n)
                        #expect(row.memoryMean == SimulationReport.meanMemory(st, span: r.memorySpan))
                        #expect(row.requests == r.requests)
                    }
                }
            }
        }
        #expect(rows.isEmpty)
        return table
    }

    @Test func seedMixedPointsEqualSimulate() throws {
        let table = try Self.checkEqualsSimulate(
            traces: [Self.seedMixed], base: SimulationConfig(virtualSize: 8 << 30),
            axes: ["cluster_size=64K,128K", "extended_l2=off,on", "l2-cache-size=256K,2M"], jobs: 2
        ) { v in
            SimulationConfig(
                virtualSize: 8 << 30, createOptions: "cluster_size=\(v[0]),extended_l2=\(v[1])",
                driveOptions: "l2-cache-size=\(v[2])")
        }
        // 8 points × 1 image × 2 caches.
        #expect(table.rows.count == 16)
        // Regression golden (`qcow2sim simulate … -o cluster_size=64K --drive l2-cache-size=256K`
        // on this tree): 57998 lookups, 15260 misses, 8673 write-backs.
        let first = table.rows[0].stats
        #expect((first.lookups, first.misses, first.writebacks) == (57998, 15260, 8673))
    }

    /// The guest recording (reads, writes, write-zeroes, discards, flushes, timestamps): the
    /// clean timer (1 s over a 15 s trace), both policies, writethrough.
    @Test func guestTracePointsEqualSimulate() throws {
        _ = try Self.checkEqualsSimulate(
            traces: [Self.guest], base: SimulationConfig(virtualSize: 8 << 30),
            axes: ["cache-mode=writeback,writethrough", "cache-clean-interval=0,1", "l2-cache-size=64K,1M", "policy=qemu,lru"],
            jobs: 3
        ) { v in
            var c = SimulationConfig(
                virtualSize: 8 << 30, driveOptions: "l2-cache-size=\(v[2]),cache-clean-interval=\(v[1])",
                cacheMode: CacheMode(rawValue: v[0]) ?? .writeback)
            c.policy = v[3]
            return c
        }
    }

    /// A two-image chain whose base holds data: the overlay's and the backing file's caches
    /// varied apart, and both traces in one sweep.
    @Test func chainPointsEqualSimulate() throws {
        var base = SimulationConfig(
            virtualSize: 8 << 30, chainLength: 2, populate: .ranges([ByteRange(start: 0, length: 256 << 20)]), populateMode: .data
        )
        base.driveOptions = "cache-clean-interval=0"
        let table = try Self.checkEqualsSimulate(
            traces: [Self.guest, Self.seedMixed], base: base,
            axes: ["backing.l2-cache-size=64K,512K", "l2-cache-size=128K,4M"], jobs: 2
        ) { v in
            var c = base
            c.driveOptions = "cache-clean-interval=0,backing.l2-cache-size=\(v[0]),l2-cache-size=\(v[1])"
            return c
        }
        // 2 traces × 4 points × 2 images × 2 caches, base image first.
        #expect(table.rows.count == 32)
        #expect(table.rows.prefix(4).map { "\($0.image) \($0.cache)" } == ["0 l2", "0 refcount", "1 l2", "1 refcount"])
    }

    /// The public traces in ../shared/traces (or `QCOW2SIM_TRACES`), read in place.
    static let sharedTraces: String = {
        if let d = ProcessInfo.processInfo.environment["QCOW2SIM_TRACES"] { return d }
        return traces.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/traces").path
    }()
    static let sharedAvailable = FileManager.default.fileExists(atPath: sharedTraces + "/README.md")

    /// Two public traces (MSR Cambridge with 127 s of timestamps; SYSTOR'17, gzip-compressed,
    /// over 4.6 TiB) in one sweep: the clean timer off and at 5 s, two cache sizes.
    @Test(
        .enabled(
            if: sharedAvailable,
            "public traces not found (\(sharedTraces)/README.md): skipping; check out ../shared/traces or set QCOW2SIM_TRACES"))
    func publicTracePointsEqualSimulate() throws {
        let names = ["msr-cambridge1-sample.csv", "systor17-traces-sample.csv.gz"].map { Self.sharedTraces + "/" + $0 }
        let table = try Self.checkEqualsSimulate(
            traces: names, base: SimulationConfig(virtualSize: 5 << 40),
            axes: ["cache-clean-interval=0,5", "l2-cache-size=64K,1M"], jobs: 2
        ) { v in SimulationConfig(virtualSize: 5 << 40, driveOptions: "l2-cache-size=\(v[1]),cache-clean-interval=\(v[0])") }
        // Interval 0 is no timer; at 5 s it drops idle entries in the MSR trace's 127 s.
        #expect(table.rows[0].values.map(\.text) == ["0", "65536"] && table.rows[0].stats.cleaned == 0)
        #expect(table.rows[4].trace == names[0] && table.rows[4].values.map(\.text) == ["5", "65536"])
        #expect(table.rows[4].stats.cleaned > 0)
    }

    @Test func outputDoesNotDependOnJobs() throws {
        let grid = try SweepGrid(
            base: SimulationConfig(virtualSize: 8 << 30),
            axes: [try SweepAxis.parse("cluster_size=64K,128K"), try SweepAxis.parse("l2-cache-size=64K..1M:3")])
        let points = grid.points
        var outputs: [String] = []
        for jobs in [1, 4] {
            let reports = try SweepExecutor.run(
                points: points, traces: 1, jobs: jobs, runner: LivePointRunner(),
                open: { _ in try TraceFile.open(path: Self.guest) })
            let table = SweepTable(command: "sweep", traces: ["guest"], grid: grid, points: points, reports: reports)
            outputs.append(table.csv() + table.json() + table.text())
        }
        #expect(outputs[0] == outputs[1])
    }

    /// A runner that takes a whole group as one batch (as a one-pass runner will) plugs into
    /// the executor: the same table, one `run` per group.
    @Test func wholeGroupRunnerPlugsIn() throws {
        final class Calls: @unchecked Sendable {
            let lock = NSLock()
            var sizes: [Int] = []
        }
        struct WholeGroups: PointRunner {
            let calls: Calls
            func batches(_ group: PointGroup) -> [PointGroup] { [group] }
            func run<R: TraceReader>(_ batch: PointGroup, open: () throws -> R) throws -> [SimulationReport] {
                calls.lock.lock()
                calls.sizes.append(batch.points.count)
                calls.lock.unlock()
                return try batch.points.map { p in
                    var reader = try open()
                    return try Simulation.run(config: p.config, reader: &reader)
                }
            }
        }
        let grid = try SweepGrid(
            base: SimulationConfig(virtualSize: 8 << 30),
            axes: [try SweepAxis.parse("l2-cache-size=64K..2M*2"), try SweepAxis.parse("policy=qemu,lru")])
        let points = grid.points
        let calls = Calls()
        var tables: [String] = []
        let open: @Sendable (Int) throws -> AnyTraceReader = { _ in try TraceFile.open(path: Self.guest) }
        let grouped = try SweepExecutor.run(points: points, traces: 1, jobs: 2, runner: WholeGroups(calls: calls), open: open)
        tables.append(SweepTable(command: "mrc", traces: ["g"], grid: grid, points: points, reports: grouped).csv())
        let live = try SweepExecutor.run(points: points, traces: 1, jobs: 2, runner: LivePointRunner(), open: open)
        tables.append(SweepTable(command: "mrc", traces: ["g"], grid: grid, points: points, reports: live).csv())
        #expect(tables[0] == tables[1])
        // 64K … 512K are below full coverage of 8 GiB (1M, 64K clusters), 1M and 2M are not:
        // two groups of 4 sizes × 2 policies and 2 sizes × 2 policies.
        #expect(calls.sizes.sorted() == [4, 8])
    }

    /// Points 1 (entry size 256 < 512), 2 (cluster 3K) and 3 fail: whatever the threads, the
    /// failure reported is point 1's, with QEMU's message.
    @Test func firstFailingPointIsReported() throws {
        let grid = try SweepGrid(
            base: SimulationConfig(virtualSize: 1 << 30),
            axes: [try SweepAxis.parse("cluster_size=64K,3K"), try SweepAxis.parse("l2-cache-entry-size=4K,256")])
        let trace: [UInt8] = Array("W,0,4096\nR,0,4096\n".utf8)
        for jobs in [1, 4] {
            do {
                _ = try SweepExecutor.run(
                    points: grid.points, traces: 1, jobs: jobs, runner: LivePointRunner(),
                    open: { _ in try TraceFile.open(bytes: trace) })
                Issue.record("the sweep did not fail")
            } catch let f as SweepFailure {
                #expect(f.point == 1)
                #expect(
                    f.error as? SimulationError
                        == .usage("--drive: L2 cache entry size must be a power of two between 512 and the cluster size (65536)"))
            }
        }
    }

    @Test func csvHeaderAndQuoting() throws {
        let grid = try SweepGrid(
            base: SimulationConfig(virtualSize: 1 << 30),
            axes: [
                try SweepAxis.parse("extended_l2=on"), try SweepAxis.parse("policy=lru"), try SweepAxis.parse("l2-cache-size=1M"),
            ])
        let points = grid.points
        let reports = try SweepExecutor.run(
            points: points, traces: 1, jobs: 1, runner: LivePointRunner(),
            open: { _ in try TraceFile.open(bytes: Array("W,0,4096\n".utf8)) })
        let table = SweepTable(command: "sweep", traces: ["a,\"b\".csv"], grid: grid, points: points, reports: reports)
        let lines = table.csv().split(separator: "\n")
        #expect(
            lines[0]
                == "trace,extended_l2,l2-cache-size,policy,image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,writebacks,flushes,bytes_read,bytes_written,memory_peak_bytes,memory_mean_bytes,miss_rate,dirty_evictions,empty_gets,cleaned,requests,misses_cold,misses_evicted,misses_cleaned,misses_discarded"
        )
        // The row is simulate's CSV row, column for column (simulate's memory_bytes is not a
        // sweep column; sweep adds the varied keys, policy and the trace).
        var config = SimulationConfig(
            virtualSize: 1 << 30, createOptions: "extended_l2=on", driveOptions: "l2-cache-size=1048576")
        config.policy = "lru"
        var reader = try TraceFile.open(bytes: Array("W,0,4096\n".utf8))
        let simulate = ReportFormat.csv(try Simulation.run(config: config, reader: &reader)).split(separator: "\n")
        let names = simulate[0].split(separator: ",").map(String.init)
        let sweepNames = lines[0].split(separator: ",").map(String.init)
        for k in 1...2 {
            let theirs = Dictionary(uniqueKeysWithValues: zip(names, simulate[k].split(separator: ",").map(String.init)))
            // The quoted trace holds a comma: split the rest of the row after it.
            let rest = lines[k].dropFirst("\"a,\"\"b\"\".csv\",".count).split(separator: ",").map(String.init)
            let ours = Dictionary(uniqueKeysWithValues: zip(sweepNames.dropFirst(), rest))
            #expect(ours["extended_l2"] == "on" && ours["l2-cache-size"] == "1048576" && ours["policy"] == "lru")
            for name in names where name != "memory_bytes" {
                #expect(ours[name] == theirs[name], "\(name)")
            }
        }
        #expect(lines.count == 3)
    }
}

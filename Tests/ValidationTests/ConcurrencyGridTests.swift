import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// The multi-segment grid (issue 15 item 1): writes that cross cluster boundaries, where QEMU
/// runs the segments as concurrent tasks (qcow2-model.md §13), on fresh, fragmented, 512 B,
/// extended-L2, small-cache and chained images, with discards and write-zeroes between them.
/// Every case and trace is drawn from its seed alone.
enum ConcurrencyGrid {
    /// Number of cases.
    static let count = 48
    /// Requests QEMU ordered alike in five runs and the simulator not, as investigated with more
    /// runs: races between I/O completions, where QEMU's other order is as common or more.
    static let knownGaps: [Int: String] = [
        5:
            "request 22: two tasks' zero-COW writes (thread pool) race; in 6 further runs each finished first 3 times, so the 5 agreeing runs were chance",
        27:
            "request 34: the first task's data write had completed when io_uring reaped completions at submission (ioq_submit), so it linked before the next segment was mapped; QEMU did so in 7 of 9 runs",
        28:
            "request 34: as in case 27 (the data write completed at submission, 3 of 3 runs), then the LINK's dependency flush wrote an L2 entry and the task yielded holding s->lock, so the request coroutine waited for it",
    ]
    /// Requests per case that QEMU ordered alike in every run but the simulator not, tolerated
    /// as races that went the same way each time (see `knownGaps`). Which way a race goes most
    /// often depends on the machine's load: with the cases running in parallel (the default)
    /// a task's write rarely completes before `ioq_submit` reaps, which is the model's order;
    /// run one at a time, it does more often. Measured (parallel, 2 398 requests, 555 pooled):
    /// the synchronous model this replaced missed 101 of 2 371 stable requests, 78 confirmed
    /// by all five runs, in 34 cases, up to 9 in one case; this model misses 19 of 2 369, 7
    /// confirmed, at most 1 per case.
    static let toleratedRaces = 2
    /// Extra qemu-io runs that confirm a request both runs ordered alike but the simulator not.
    static let confirmationRuns = 3
    /// Further runs, only for a case that still has more than `toleratedRaces` confirmed
    /// mismatches: how often a race goes QEMU's other way depends on the machine's load (a quiet
    /// machine, or a case run alone, completes writes at submission more often), so a case with
    /// three such races could agree five times by chance; a rule the model gets wrong agrees
    /// every time. Costs nothing in a passing case.
    static let extraConfirmationRuns = 6
    /// The fixed seed base; `QCOW2SIM_CONCURRENCY_SEED` (hex) explores another grid locally.
    static let seedBase: UInt64 =
        ProcessInfo.processInfo.environment["QCOW2SIM_CONCURRENCY_SEED"].flatMap { UInt64($0, radix: 16) } ?? 0xC0C0_0000
    /// Image kinds, rotated over the cases.
    static let kinds = [
        "fresh 64K", "fresh 4K", "fresh 512", "extended L2 64K", "fragmented 64K", "small cache 4K", "chain data 64K",
        "extended L2 chain 64K",
    ]

    /// Builds case `i`.
    static func make(_ i: Int) throws -> DiffCase {
        let seed = seedBase &+ UInt64(i)
        var rng = Xoshiro256StarStar(seed: seed)
        let kind = kinds[i % kinds.count]
        let cs: UInt64
        switch kind {
        case "fresh 4K", "small cache 4K": cs = 4096
        case "fresh 512": cs = 512
        default: cs = 65536
        }
        let ext = kind.hasPrefix("extended L2")
        let size: UInt64 = cs == 512 ? 16 << 20 : 256 << 20
        var create = "cluster_size=\(cs)"
        if ext { create += ",extended_l2=on" }
        let chain = kind.contains("chain") ? 2 : 1
        var config = SimulationConfig(
            virtualSize: size, createOptions: try CreateOptions(parsing: create), chainLength: chain,
            cacheMode: i % 3 == 2 ? .writethrough : .writeback)
        if kind == "small cache 4K" {
            config.driveOptions = try DriveOptions(parsing: "l2-cache-size=\(2 + rng.nextBelow(3))K,l2-cache-entry-size=1K")
        }
        if chain > 1 {
            config.populate = .ranges(DifferentialGrid.ranges(&rng, cs: cs, size: size))
            config.populateMode = .data
        }
        // A few hot spots keep the requests close together, so segments meet allocated clusters.
        let hot = (0..<3).map { _ in rng.nextBelow(size / cs - 64) }
        if kind == "fragmented 64K" {
            // Scattered single-cluster writes leave the host placement non-contiguous.
            let recs = (0..<40).map { _ in
                TraceRecord(
                    op: .write, offset: (hot[Int(rng.nextBelow(3))] + rng.nextBelow(48)) * cs,
                    length: 512 * (1 + rng.nextBelow(8)))
            }
            config.preparation = [PreparationSession(image: 0, records: recs)]
        }
        let n = 40 + Int(rng.nextBelow(21))
        let records = (0..<n).map { _ in request(&rng, cs: cs, size: size, hot: hot) }
        return DiffCase(index: i, seed: seed, clusterSize: cs, extendedL2: ext, config: config, records: records)
    }

    /// The spec's compact notation (§16) of a span, for failure messages: `L2 40000 hit`,
    /// `RC 20000 miss 0`, `flush L2`, `wb RC 0`.
    static func compact(_ events: ArraySlice<CacheEvent>) -> String {
        var out: [String] = []
        var pending: String?
        var missed = false
        for ev in events {
            let cache = ev.isL2 ? "L2" : "RC"
            switch ev.kind {
            case .get:
                pending = "\(cache) \(String(ev.offset, radix: 16))\(ev.readFromDisk ? "" : " empty")"
                missed = false
            case .replaceEntry, .getRead: missed = true
            case .getDone:
                out.append("\(pending ?? cache) \(missed ? "miss \(ev.index)" : "hit")")
                pending = nil
            case .flush: out.append("flush \(cache)")
            case .entryFlush: out.append("wb \(cache) \(ev.index)")
            }
        }
        return out.joined(separator: "; ")
    }

    /// Mostly writes over 2–5 clusters at 512-byte granularity; single-cluster writes, discards,
    /// write-zeroes, reads and flushes between them.
    static func request(_ rng: inout Xoshiro256StarStar, cs: UInt64, size: UInt64, hot: [UInt64]) -> TraceRecord {
        let c = hot[Int(rng.nextBelow(3))] + rng.nextBelow(48)
        let start = c * cs + 512 * rng.nextBelow(cs / 512)
        let roll = rng.nextBelow(100)
        func span(_ clusters: UInt64) -> UInt64 {
            min(size - start, clusters * cs + 512 * rng.nextBelow(cs / 512) + 512)
        }
        switch roll {
        case 0..<55: return TraceRecord(op: .write, offset: start, length: span(1 + rng.nextBelow(4)))
        case 55..<67:
            return TraceRecord(op: .write, offset: start, length: min(cs * (c + 1) - start, 512 * (1 + rng.nextBelow(16))))
        case 67..<77: return TraceRecord(op: .discard, offset: c * cs, length: min(size - c * cs, cs * (1 + rng.nextBelow(3))))
        case 77..<87:
            return TraceRecord(
                op: .writeZeroes, offset: start, length: span(rng.nextBelow(3)), flags: rng.nextBelow(2) == 0 ? [] : .unmap)
        case 87..<96: return TraceRecord(op: .read, offset: start, length: span(rng.nextBelow(3)))
        default: return TraceRecord(op: .flush, offset: 0, length: 0)
        }
    }
}

/// What the grid found for one case.
struct ConcurrencyOutcome: Sendable {
    /// Requests in the trace.
    var requests = 0
    /// Requests QEMU ran as a task pool (in the first run).
    var pooled = 0
    /// Requests whose events were the same in both QEMU runs.
    var stable = 0
    /// Of the stable ones, those the simulator matches exactly.
    var stableMatched = 0
    /// Stable requests the simulator does not match exactly (with the case, for the message).
    var stableMismatches: [Int] = []
    /// Stable mismatches that a confirmation run ordered differently (a race, not a rule).
    var raced: [Int] = []
    /// Requests whose order differed between the two QEMU runs.
    var unstable: [Int] = []
    /// Unstable requests the simulator matches in one of the runs.
    var unstableMatched = 0
    /// The validate outcome of run 1.
    var outcome: ValidationOutcome = .identical
}

@Suite("concurrency grid: multi-segment writes vs two qemu-io runs", .requires(QemuTools.io))
struct ConcurrencyGridTests {
    let validator = Validator(runner: QemuTools.runner)

    static func check(_ c: DiffCase, validator: Validator) throws -> (ConcurrencyOutcome, String) {
        let input = ValidationInput(records: c.records, fileName: "concurrency-0x\(String(c.seed, radix: 16))")
        let (log, sizes) = try SimulatorValidationTests.simulate(c.config, input)
        let run1 = try validator.replay(config: c.config, input: input)
        let run2 = try validator.replay(config: c.config, input: input)
        var o = ConcurrencyOutcome(requests: c.records.count)
        var byRequest: [Int: Int] = [:]
        for (k, mark) in log.requests.enumerated() { byRequest[mark.request] = k }
        var detail = ""
        for i in 0..<c.records.count {
            let a = run1.log.events(ofRequest: i)
            let b = run2.log.events(ofRequest: i)
            let e = byRequest[i].map { log.events(ofRequest: $0) } ?? log.events[0..<0]
            if run1.log.pooled[i] { o.pooled += 1 }
            if Comparator.same(a, b) {
                o.stable += 1
                if Comparator.same(e, a) {
                    o.stableMatched += 1
                } else {
                    o.stableMismatches.append(i)
                    if o.stableMismatches.count <= 2 {
                        detail += "request \(i) (\(TraceText.text([c.records[i]]))):\n  simulator: "
                        detail += ConcurrencyGrid.compact(e) + "\n  qemu:      " + ConcurrencyGrid.compact(a) + "\n"
                    }
                }
            } else {
                o.unstable.append(i)
                if Comparator.same(e, a) || Comparator.same(e, b) { o.unstableMatched += 1 }
            }
        }
        // Two runs can agree by chance where the order is a race (an io_uring completion
        // against the request coroutine, §13): confirm each stable mismatch with more runs.
        if !o.stableMismatches.isEmpty {
            var confirmed = Set(o.stableMismatches)
            for run in 0..<(ConcurrencyGrid.confirmationRuns + ConcurrencyGrid.extraConfirmationRuns) {
                if confirmed.isEmpty { break }
                if run >= ConcurrencyGrid.confirmationRuns && confirmed.count <= ConcurrencyGrid.toleratedRaces { break }
                let more = try validator.replay(config: c.config, input: input)
                for i in confirmed where !Comparator.same(more.log.events(ofRequest: i), run1.log.events(ofRequest: i)) {
                    confirmed.remove(i)
                    o.raced.append(i)
                }
            }
            o.stableMismatches = o.stableMismatches.filter(confirmed.contains)
            if o.stableMismatches.isEmpty { detail = "" }
        }
        let report = Validator.report(
            config: c.config, input: input, expected: log, replay: run1, sizes: sizes, keptDirectory: nil)
        o.outcome = report.outcome
        return (o, detail)
    }

    @Test(
        "print a case's preparation and trace (QCOW2SIM_CONCURRENCY_DUMP=i)",
        .enabled(
            if: ProcessInfo.processInfo.environment["QCOW2SIM_CONCURRENCY_DUMP"] != nil,
            "a debugging tool, run on demand: set QCOW2SIM_CONCURRENCY_DUMP=i to print case i"))
    func dump() throws {
        let index = Int(ProcessInfo.processInfo.environment["QCOW2SIM_CONCURRENCY_DUMP"] ?? "") ?? 0
        let c = try ConcurrencyGrid.make(index)
        print("\(c)")
        for p in c.config.preparation { print("=== preparation image \(p.image)\n\(TraceText.text(p.records))") }
        print("=== trace\n\(TraceText.text(c.records))\n=== end")
    }

    @Test(
        "every request QEMU orders the same way in two runs matches the simulator exactly", arguments: 0..<ConcurrencyGrid.count)
    func grid(index: Int) throws {
        let c = try ConcurrencyGrid.make(index)
        let (o, detail) = try Self.check(c, validator: validator)
        print(
            "concurrency grid \(index) [\(ConcurrencyGrid.kinds[index % ConcurrencyGrid.kinds.count])]: requests \(o.requests), pooled \(o.pooled), stable \(o.stable), stable matched \(o.stableMatched), raced \(o.raced.count), unstable \(o.unstable.count) (simulator matches one run in \(o.unstableMatched)), validate \(o.outcome.rawValue)"
        )
        let message = "\(c)\nstable requests not matched: \(o.stableMismatches)\n\(detail)\n\(TraceText.text(c.records))"
        if !o.stableMismatches.isEmpty {
            print(
                "concurrency grid \(index): QEMU repeated an order the simulator does not take for requests \(o.stableMismatches)\(ConcurrencyGrid.knownGaps[index].map { " (seen before: \($0))" } ?? "")"
            )
        }
        // A race can come out the same way in all five runs: two such requests per case are
        // tolerated and printed; a scheduling rule the model gets wrong shows up in many
        // requests and cases.
        #expect(o.stableMismatches.count <= ConcurrencyGrid.toleratedRaces, "\(message)")
    }
}

/// `validate`'s outcomes on real qemu-io runs (issue 15 item 2), with the simulator switched to
/// another completion order of a multi-segment write's tasks (`debugReverseTaskResumption`).
@Suite("validate outcomes against qemu-io", .requires(QemuTools.io))
struct ValidateOutcomeTests {
    let validator = Validator(runner: QemuTools.runner)

    /// 512 B clusters: an L2 table covers 32 KiB, so a write over 31.5–32.5 KiB has one new
    /// cluster in each of two tables, and the second table is allocated between them: two
    /// segments, two tasks, two LINKs in different tables.
    static func config(l2Cache: String?) throws -> SimulationConfig {
        var c = SimulationConfig(virtualSize: 16 << 20, createOptions: try CreateOptions(parsing: "cluster_size=512"))
        if let l2Cache { c.driveOptions = try DriveOptions(parsing: "l2-cache-size=\(l2Cache)") }
        return c
    }

    /// Validates `trace` against the simulator's order and the reversed one. QEMU's run takes
    /// one of them (its tasks' I/O completes in either order, §13), so one report is
    /// `identical`; the other is returned as `other`. A run in a third order is retried.
    func run(_ config: SimulationConfig, _ trace: String) throws -> (matching: ValidationReport, other: ValidationReport)? {
        let input = ValidationInput(records: TraceText.records(trace), fileName: "outcome.trace")
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        var reversedConfig = config
        reversedConfig.debugReverseTaskResumption = true
        let (reversedLog, _) = try SimulatorValidationTests.simulate(reversedConfig, input)
        // The two simulated orders differ in the write's events.
        #expect(
            !Comparator.same(
                log.events(ofRequest: input.records.count - 2), reversedLog.events(ofRequest: input.records.count - 2)))
        for _ in 0..<5 {
            let replay = try validator.replay(config: config, input: input)
            let normal = Validator.report(
                config: config, input: input, expected: log, replay: replay, sizes: sizes, keptDirectory: nil)
            let reversed = Validator.report(
                config: config, input: input, expected: reversedLog, replay: replay, sizes: sizes, keptDirectory: nil)
            if normal.outcome == .identical { return (normal, reversed) }
            if reversed.outcome == .identical { return (reversed, normal) }
        }
        Issue.record("QEMU took neither simulated order in 5 runs")
        return nil
    }

    @Test("another valid order of a write's tasks is equivalent: named, exit 3, exit 1 with --strict")
    func equivalent() throws {
        // The write is request 1 (the one before last).
        guard let (matching, other) = try run(try Self.config(l2Cache: nil), "W 0 512\nW 32256 1024\nR 0 512") else { return }
        #expect(matching.exitCode == 0)
        #expect(other.outcome == .equivalent, "\(other.text())")
        #expect(other.equivalentRequests == [1])
        #expect(other.exitCode == 3)
        #expect(other.text().hasPrefix("equivalent: every request's events are a valid interleaving"))
        #expect(other.text().contains("request 1 (trace line 2)"))
        #expect(other.images.allSatisfy { $0.simulated == $0.qemu })
        var strict = other
        strict.strict = true
        #expect(strict.exitCode == 1)
        #expect(strict.json().contains("\"outcome\" : \"equivalent\""))
    }

    @Test("a different order that changes a later eviction is divergent at the later request, with a note")
    func laterEviction() throws {
        // Two L2 entries: after the write, the read of a third table (allocated by request 0)
        // evicts the entry released first, which is the other one when the tasks link in the
        // other order.
        // The write is request 2 (the one before last).
        guard let (_, other) = try run(try Self.config(l2Cache: "1"), "W 64k 512\nW 0 512\nW 32256 1024\nR 64k 512") else {
            return
        }
        #expect(other.outcome == .divergent, "\(other.text())")
        #expect(other.exitCode == 1)
        #expect(other.equivalentRequests == [2])
        #expect(other.firstDivergence?.request == 3)
        #expect(other.firstDivergence?.actual.contains { $0.hasPrefix("qcow2_cache_get_replace_entry") } == true)
        #expect(other.notes.contains { $0.hasPrefix("the first divergence follows multi-segment request(s) 2 that QEMU ran") })
    }
}

/// TV11 (qcow2-model.md §16) against qemu-io: a three-segment read (backing | data | backing)
/// whose first backing lookup misses prints the top image's next MAPs before the backing's
/// `get_done`, and the simulator now prints them in that order too.
@Suite("multi-segment reads over a backing file", .requires(QemuTools.io))
struct BackingReadOrderTests {
    @Test("TV11: identical to qemu-io, the backing miss completing after the top's MAPs")
    func tv11() throws {
        var config = SimulationConfig(
            virtualSize: 1 << 30, chainLength: 2,
            driveOptions: try DriveOptions(parsing: "l2-cache-size=8K,backing.l2-cache-size=8K"),
            cacheMode: .writethrough)
        config.preparation = [
            PreparationSession(image: 0, records: TraceText.records("W 0 256k\nW 600M 64k")),
            PreparationSession(image: 1, records: TraceText.records("W 64k 64k\nW 700M 64k")),
        ]
        let input = ValidationInput(records: TraceText.records("R 600M 64k\nR 0 192k"))
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        // The spec's listing of the second read, images labelled: top = image 1, backing = 0.
        let e = Array(log.events(ofRequest: 1))
        let top = SpecNotation.events("[image 1] L2 get 0x40000 miss 1")
        #expect(Array(e[0..<4]) == top)
        #expect(e[4].kind == .get && e[4].image == 0)
        #expect(e[5].kind == .replaceEntry && e[6].kind == .getRead && e[6].image == 0)
        #expect(Array(e[7..<11]) == SpecNotation.events("[image 1] L2 get 0x40000 hit 1 (x2)"))
        #expect(e[11].kind == .getDone && e[11].image == 0)
        #expect(Array(e[12..<14]) == SpecNotation.events("[image 0] L2 get 0x40000 hit 1"))
        let report = try Validator(runner: QemuTools.runner).validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.outcome == .identical, "\(report.text())")
    }
}

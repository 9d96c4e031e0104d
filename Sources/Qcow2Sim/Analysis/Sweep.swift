import Foundation
import TraceKit

/// One thing a sweep varies (issue 10, item 1): a `--drive` option of any image of the chain
/// (`l2-cache-size`, `backing.l2-cache-size`, …), a `qemu-img create -o` option, the cache mode,
/// the eviction policy or a what-if (`what-if.l2-cache-size`, a proposal QEMU does not
/// implement: ``WhatIf``).
public enum SweepKey: Hashable, Sendable, CustomStringConvertible {
    /// A runtime cache option, spelled with its `backing.` prefixes (`backing.l2-cache-size`).
    case drive(String)
    /// A create option (`cluster_size`, `extended_l2`, `refcount_bits`).
    case create(String)
    /// `--cache-mode`.
    case cacheMode
    /// `--policy`.
    case policy
    /// A what-if key (``WhatIf/keys``), spelled `what-if.KEY`: `simulate --what-if KEY=VALUE`.
    case whatIf(String)

    /// The create options a sweep may vary.
    public static let createNames = ["cluster_size", "extended_l2", "refcount_bits"]

    /// Every key name (without `backing.` prefixes), in `--help` order.
    public static var names: [String] { CacheOptions.names + createNames + ["cache-mode", "policy"] }

    /// The keys `--vary` takes, for an error message.
    static var expected: String {
        "expected one of: \(names.joined(separator: ", ")); the --drive keys also with backing. prefixes; "
            + "what-if.KEY for a what-if, KEY one of: \(WhatIf.keys.joined(separator: ", "))"
    }

    /// Parses a key as the user typed it; nil for an unknown key.
    public init?(_ text: String) {
        if text.hasPrefix(WhatIf.prefix) {
            let key = String(text.dropFirst(WhatIf.prefix.count))
            guard WhatIf.keys.contains(key) else { return nil }
            self = .whatIf(key)
            return
        }
        var base = Substring(text)
        while base.hasPrefix("backing.") { base = base.dropFirst("backing.".count) }
        if CacheOptions.names.contains(String(base)) {
            self = .drive(text)
        } else if base != Substring(text) {
            return nil
        } else if Self.createNames.contains(text) {
            self = .create(text)
        } else if text == "cache-mode" {
            self = .cacheMode
        } else if text == "policy" {
            self = .policy
        } else {
            return nil
        }
    }

    /// The key as the user types it (and as its CSV column is named).
    public var description: String {
        switch self {
        case .drive(let k), .create(let k): k
        case .cacheMode: "cache-mode"
        case .policy: "policy"
        case .whatIf(let k): WhatIf.prefix + k
        }
    }

    /// What the key's values are.
    enum Kind {
        /// Bytes in QEMU's size syntax (`256K`, `0x10000`).
        case size
        /// A plain decimal number.
        case count
        /// on or off.
        case boolean
        /// One of these names.
        case name([String])
        /// A percentage (`50%`), as the what-if sizes take them.
        case percent
    }

    var kind: Kind {
        switch self {
        case .drive(let k): k.hasSuffix("cache-clean-interval") ? .count : .size
        case .create("cluster_size"): .size
        case .create("extended_l2"): .boolean
        case .create: .count
        case .cacheMode: .name(CacheMode.allCases.map(\.rawValue))
        case .policy: .name(PolicyRegistry.names)
        case .whatIf(let k):
            k == "cache-scope"
                ? .name([WhatIf.Scope.image.rawValue, WhatIf.Scope.chain.rawValue]) : k.hasPrefix("chain-") ? .size : .percent
        }
    }

    /// Whether the values are numbers (printed as JSON numbers).
    var isNumeric: Bool {
        switch kind {
        case .size, .count: true
        case .boolean, .name, .percent: false
        }
    }
}

/// One value of a sweep axis.
public struct SweepValue: Hashable, Sendable {
    /// The text put into the option (`262144`, `on`, `writethrough`): sizes and numbers in
    /// decimal, on/off for booleans, names as given.
    public var text: String
    /// The value of a size or number key.
    public var number: UInt64?

    /// Creates a value.
    public init(text: String, number: UInt64? = nil) {
        self.text = text
        self.number = number
    }
}

/// One dimension of the grid: a key and its values, in order.
public struct SweepAxis: Sendable {
    /// What varies.
    public var key: SweepKey
    /// Its values.
    public var values: [SweepValue]

    /// Creates an axis.
    public init(key: SweepKey, values: [SweepValue]) {
        self.key = key
        self.values = values
    }

    /// Parses `KEY=VALUES` (the argument of `--vary`; `argument` names it in errors).
    public static func parse(_ text: String, argument: String = "--vary") throws -> SweepAxis {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw SimulationError.usage(
                "invalid value '\(text)' for \(argument) (expected KEY=VALUES, e.g. l2-cache-size=256K..32M*2)")
        }
        let name = String(text[..<eq])
        guard let key = SweepKey(name) else {
            if name.hasPrefix(WhatIf.prefix) {
                throw SimulationError.usage(
                    "unknown what-if key '\(name.dropFirst(WhatIf.prefix.count))' in \(argument) \(text) (expected one of: \(WhatIf.keys.map { WhatIf.prefix + $0 }.joined(separator: ", ")))"
                )
            }
            throw SimulationError.usage("unknown key '\(name)' in \(argument) \(text) (\(SweepKey.expected))")
        }
        let values = try SweepValues.parse(String(text[text.index(after: eq)...]), key: key, argument: "\(argument) \(name)")
        return SweepAxis(key: key, values: values)
    }
}

/// The VALUES syntax of `--vary KEY=VALUES` and `mrc --sizes VALUES`.
///
/// - a list: `256K,512K,1M`;
/// - a geometric range: `START..END*FACTOR` = START, START×FACTOR, START×FACTOR², … up to END
///   (END included when it is reached); a fractional factor's values are rounded to the nearest
///   whole number (halves away from zero);
/// - an arithmetic range: `START..END+STEP` = START, START+STEP, … up to END;
/// - a geometric range with a count: `START..END:N` = N values from START to END, both included,
///   the k-th (from 0) being START × (END/START)^(k/(N−1)) rounded to the nearest whole number
///   (halves away from zero).
///
/// Ranges are for sizes and numbers only. Values must not repeat (after rounding).
public enum SweepValues {
    /// The most values one VALUES may give.
    public static let maxValues = 10_000

    /// Parses `text` for `key`; errors name `argument` (`--vary l2-cache-size`, `--sizes`).
    public static func parse(_ text: String, key: SweepKey, argument: String) throws -> [SweepValue] {
        func fail(_ why: String) -> SimulationError { .usage("invalid value '\(text)' for \(argument) (\(why))") }
        var values: [SweepValue]
        if let dots = text.range(of: "..") {
            guard key.isNumeric else { throw fail("\(key) takes a list, not a range") }
            values = try range(
                start: String(text[..<dots.lowerBound]), rest: String(text[dots.upperBound...]), key: key, fail: fail)
        } else {
            values = []
            for item in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard !item.isEmpty else { throw fail("empty value in the list") }
                values.append(try value(String(item), key: key, fail: fail))
            }
        }
        var seen = Set<String>()
        for v in values where !seen.insert(v.text).inserted {
            throw fail("the value \(v.text) appears twice")
        }
        if case .whatIf(let k) = key {
            // The what-if's own check (`WhatIf.problem`), the one `simulate --what-if` makes.
            for v in values {
                if let why = WhatIf.problem(with: "\(k)=\(v.text)") { throw fail("'\(v.text)': \(why)") }
            }
        }
        return values
    }

    private static func value(_ item: String, key: SweepKey, fail: (String) -> SimulationError) throws -> SweepValue {
        switch key.kind {
        case .size, .count:
            return SweepValue(text: "", number: try number(item, key: key, fail: fail)).withDecimalText()
        case .boolean:
            // qemu-img's spellings (CreateOptions.parse), printed as on/off.
            switch item {
            case "on", "true", "yes": return SweepValue(text: "on")
            case "off", "false", "no": return SweepValue(text: "off")
            default: throw fail("'\(item)': expected on or off")
            }
        case .name(let names):
            guard names.contains(item) else { throw fail("'\(item)': expected one of: \(names.joined(separator: ", "))") }
            return SweepValue(text: item)
        case .percent:
            // Checked, with the message, by the what-if itself (`parse`).
            return SweepValue(text: item)
        }
    }

    private static func number(_ item: String, key: SweepKey, fail: (String) -> SimulationError) throws -> UInt64 {
        if case .count = key.kind {
            guard let v = UInt64(item) else { throw fail("'\(item)': expected a whole number") }
            return v
        }
        switch QemuSize.parse(Substring(item)) {
        case .success(let v): return v
        case .failure: throw fail("'\(item)': expected a size in bytes, optionally with a K, M, G or T suffix")
        }
    }

    private static func range(start s: String, rest: String, key: SweepKey, fail: (String) -> SimulationError) throws
        -> [SweepValue]
    {
        guard let op = rest.firstIndex(where: { $0 == "*" || $0 == "+" || $0 == ":" }) else {
            throw fail("a range needs a step: START..END*FACTOR, START..END+STEP or START..END:COUNT")
        }
        let start = try number(s, key: key, fail: fail)
        let end = try number(String(rest[..<op]), key: key, fail: fail)
        let arg = String(rest[rest.index(after: op)...])
        guard start <= end else { throw fail("empty range: \(start) is above \(end)") }
        var out: [UInt64] = []
        func add(_ v: UInt64) throws {
            out.append(v)
            if out.count > maxValues { throw fail("more than \(maxValues) values") }
        }
        switch rest[op] {
        case "*":
            guard let f = Double(arg), f.isFinite, f > 1 else { throw fail("the factor '\(arg)' must be a number above 1") }
            guard start > 0 else { throw fail("a geometric range cannot start at 0") }
            if let whole = UInt64(arg) {
                // Whole factors in integers: exact at any size.
                var v = start
                while v <= end {
                    try add(v)
                    let (next, overflow) = v.multipliedReportingOverflow(by: whole)
                    if overflow { break }
                    v = next
                }
            } else {
                var k = 0.0
                while true {
                    let v = (Double(start) * pow(f, k)).rounded()
                    guard v <= Double(end) else { break }
                    try add(UInt64(v))
                    k += 1
                }
            }
        case "+":
            guard let step = try? number(arg, key: key, fail: fail), step > 0 else {
                throw fail("the step '\(arg)' must be a positive \(key.kind.isSize ? "size" : "whole number")")
            }
            var v = start
            while v <= end {
                try add(v)
                let (next, overflow) = v.addingReportingOverflow(step)
                if overflow { break }
                v = next
            }
        default:
            guard let n = Int(arg), n >= 2 else { throw fail("the count '\(arg)' must be a whole number of at least 2") }
            guard n <= maxValues else { throw fail("more than \(maxValues) values") }
            guard start > 0 else { throw fail("a geometric range cannot start at 0") }
            let ratio = Double(end) / Double(start)
            for k in 0..<n {
                // Both ends exactly; the inner points rounded to whole bytes.
                let v =
                    k == 0 ? start : k == n - 1 ? end : UInt64((Double(start) * pow(ratio, Double(k) / Double(n - 1))).rounded())
                try add(v)
            }
        }
        for (a, b) in zip(out, out.dropFirst()) where a == b {
            throw fail("the value \(a) repeats after rounding to whole numbers; use fewer points")
        }
        return out.map { SweepValue(text: String($0), number: $0) }
    }
}

extension SweepKey.Kind {
    var isSize: Bool {
        if case .size = self { return true }
        return false
    }
}

extension SweepValue {
    fileprivate func withDecimalText() -> SweepValue {
        var v = self
        if let n = number { v.text = String(n) }
        return v
    }
}

/// One configuration of a sweep: its values (one per axis, in axis order) and the simulation
/// configuration they give.
public struct SweepPoint: Sendable {
    /// Position in the cross product (the first axis varies slowest).
    public var index: Int
    /// One value per axis.
    public var values: [SweepValue]
    /// The base configuration with the values applied.
    public var config: SimulationConfig
    /// The error a run of this point gives at once: a value QEMU refuses (nil: none).
    public var invalid: SimulationError? = nil

    /// A point.
    public init(index: Int, values: [SweepValue], config: SimulationConfig, invalid: SimulationError? = nil) {
        self.index = index
        self.values = values
        self.config = config
        self.invalid = invalid
    }
}

/// The cross product of the axes over a base configuration.
public struct SweepGrid: Sendable {
    /// What the run options give; every point edits a copy.
    public var base: SimulationConfig
    /// The dimensions, outermost first.
    public var axes: [SweepAxis]

    /// The most points one grid may have.
    public static let maxPoints = 100_000

    /// Checks the axes: no key twice, no create option over an existing image, at most
    /// `maxPoints` points.
    public init(base: SimulationConfig, axes: [SweepAxis]) throws {
        var seen = Set<SweepKey>()
        for axis in axes {
            guard seen.insert(axis.key).inserted else {
                throw SimulationError.usage("--vary \(axis.key) is given twice (each key may be varied once)")
            }
            if case .create = axis.key, base.imageFile != nil {
                throw SimulationError.usage(
                    "--vary \(axis.key) cannot be combined with --image (the image exists; -o is for qemu-img create)")
            }
            guard !axis.values.isEmpty else { throw SimulationError.usage("--vary \(axis.key): no values") }
        }
        var count = 1
        for axis in axes {
            count *= axis.values.count
            if count > Self.maxPoints {
                throw SimulationError.usage("the grid has more than \(Self.maxPoints) points")
            }
        }
        self.base = base
        self.axes = axes
    }

    /// Every point, the first axis varying slowest.
    public var points: [SweepPoint] {
        var result: [SweepPoint] = []
        var choice = [Int](repeating: 0, count: axes.count)
        var index = 0
        while true {
            var config = base
            var values: [SweepValue] = []
            var invalid: SimulationError?
            for (a, axis) in axes.enumerated() {
                let v = axis.values[choice[a]]
                if let e = Self.apply(v, for: axis.key, to: &config), invalid == nil { invalid = e }
                values.append(v)
            }
            result.append(SweepPoint(index: index, values: values, config: config, invalid: invalid))
            index += 1
            // Odometer step, last axis fastest.
            var a = axes.count - 1
            while a >= 0 {
                choice[a] += 1
                if choice[a] < axes[a].values.count { break }
                choice[a] = 0
                a -= 1
            }
            if a < 0 { return result }
        }
    }

    /// Sets `key` to `value` in `config`: an option in `driveOptions` or `createOptions`
    /// replaces any earlier setting of the same key (the rendered options with the item replaced,
    /// parsed again with QEMU's rules), the cache mode or the policy. Returns the error the run
    /// would give for a value QEMU refuses (`-o: …`, `--drive: …`); the config is then unchanged
    /// in that option.
    @discardableResult
    public static func apply(_ value: SweepValue, for key: SweepKey, to config: inout SimulationConfig) -> SimulationError? {
        switch key {
        case .drive(let k):
            do {
                config.driveOptions = try DriveOptions(
                    parsing: setting(k, value.text, in: config.driveOptions.rendered), version: config.qemuVersion)
            } catch {
                return .usage("--drive: \(error.message)")
            }
        case .create(let k):
            do {
                config.createOptions = try CreateOptions(parsing: setting(k, value.text, in: config.createOptions.rendered))
            } catch {
                return .usage("-o: \(error.message)")
            }
        case .cacheMode: config.cacheMode = CacheMode(rawValue: value.text) ?? config.cacheMode
        case .policy: config.policy = value.text
        case .whatIf(let k):
            // A later setting of the key replaces the run's `--what-if` (`WhatIf.set`).
            do {
                try config.whatIf.set("\(k)=\(value.text)")
            } catch let e as SimulationError {
                return e
            } catch {
                return .usage("--what-if \(k)=\(value.text): \(error)")
            }
        }
        return nil
    }

    /// `options` (a comma-separated `key=value` list) with every `key=…` item removed and
    /// `key=value` appended.
    public static func setting(_ key: String, _ value: String, in options: String) -> String {
        (removing([key], from: options) + ["\(key)=\(value)"]).joined(separator: ",")
    }

    /// The items of `options` whose key is not one of `keys`.
    static func removing(_ keys: Set<String>, from options: String) -> [String] {
        options.split(separator: ",", omittingEmptySubsequences: true).map(String.init).filter { item in
            !keys.contains(String(item.prefix(while: { $0 != "=" })))
        }
    }
}

/// Points that can share one recording of the metadata operation stream (issue 10): the same
/// trace, the same image options (everything but the cache sizes, the clean interval and the
/// policy) and the same effective L2 entry size in every image of the chain.
public struct PointGroup: Sendable {
    /// Index of the trace in the sweep's list.
    public var trace: Int
    /// The points, in grid order.
    public var points: [SweepPoint]

    /// Creates a group.
    public init(trace: Int, points: [SweepPoint]) {
        self.trace = trace
        self.points = points
    }

    /// Groups `points` (all from one ``SweepGrid``) for each of `traces` traces, in order of
    /// first appearance. A point whose entry size cannot be worked out before the run (an
    /// existing `--image`, or options QEMU refuses) is a group of its own.
    public static func groups(_ points: [SweepPoint], traces: Int) -> [PointGroup] {
        var keys: [String] = []
        var members: [String: [SweepPoint]] = [:]
        for p in points {
            let key = shareKey(p)
            if members[key] == nil { keys.append(key) }
            members[key, default: []].append(p)
        }
        var out: [PointGroup] = []
        for t in 0..<traces {
            for key in keys { out.append(PointGroup(trace: t, points: members[key] ?? [])) }
        }
        return out
    }

    /// What points must agree on to share a recording: the operation stream's key
    /// (`Simulation.streamKey`: the chain, the image options, the cache mode's writethrough, the
    /// discard options and each image's L2 entry size), the one the replay checks.
    static func shareKey(_ p: SweepPoint) -> String {
        // Percentages are resolved first: they set the L2 entry size (slices below full
        // coverage, whole tables at it), which is part of the key.
        guard p.config.imageFile == nil, p.invalid == nil, let geometries = try? Simulation.geometries(p.config),
            let c = try? Simulation.resolvingPercentages(p.config, geometries: geometries),
            let key = try? Simulation.streamKey(c, geometries: geometries).1
        else { return "point \(p.index)" }
        return key
    }
}

/// A broken ``PointRunner`` contract (a bug, exit 70 in the command).
public struct SweepInternalError: Error, CustomStringConvertible {
    /// What went wrong.
    public var description: String
}

/// A failure of one point, with its position in the grid.
public struct SweepFailure: Error {
    /// The point's index.
    public var point: Int
    /// What went wrong.
    public var error: Error

    /// Creates a failure.
    public init(point: Int, error: Error) {
        self.point = point
        self.error = error
    }
}

/// How the points of a ``PointGroup`` are computed: the seam where a one-pass runner (the whole
/// curve from one recording of the operation stream) replaces replaying every point.
public protocol PointRunner: Sendable {
    /// Splits `group` into batches that may run at the same time on different threads.
    func batches(_ group: PointGroup) -> [PointGroup]
    /// Computes every point of `batch`: one report per point, in the batch's order. `open`
    /// returns a fresh reader on the batch's trace at each call. A failure may be a
    /// ``SweepFailure`` naming its point; any other error is taken as the batch's first point's.
    func run<R: TraceReader>(_ batch: PointGroup, open: () throws -> R) throws -> [SimulationReport]
}

/// Runs every point by itself through `Simulation.run` (exact by construction: it is
/// `simulate`), one batch per point.
public struct LivePointRunner: PointRunner {
    /// Creates the runner.
    public init() {}

    /// Witness of the `PointRunner` requirement: one batch per point.
    public func batches(_ group: PointGroup) -> [PointGroup] {
        group.points.map { PointGroup(trace: group.trace, points: [$0]) }
    }

    /// Witness of the `PointRunner` requirement.
    public func run<R: TraceReader>(_ batch: PointGroup, open: () throws -> R) throws -> [SimulationReport] {
        try batch.points.map { p in
            do {
                if let e = p.invalid { throw e }
                var reader = try open()
                return try Simulation.run(config: p.config, reader: &reader)
            } catch {
                throw SweepFailure(point: p.index, error: error)
            }
        }
    }
}

/// Runs a grid over traces on `jobs` threads. The result does not depend on `jobs`: reports
/// are placed by (trace, point), and of several failures the one of the first point (in trace,
/// then grid order) is thrown, because batches start in that order and none starts after a
/// failure.
public enum SweepExecutor {
    /// Runs `points` over traces `0..<traces`; `open(t)` opens trace t (once per call).
    /// `finished(n)` is called (on a worker thread) when n more points are done. Returns
    /// `reports[trace][point index]`. Throws the first point's ``SweepFailure`` (with the trace
    /// index in `trace`).
    public static func run<R: TraceReader & SendableMetatype>(
        points: [SweepPoint], traces: Int, jobs: Int, runner: some PointRunner,
        open: @escaping @Sendable (Int) throws -> R, finished: (@Sendable (Int) -> Void)? = nil
    ) throws -> [[SimulationReport]] {
        // Batches start in (trace, first point) order: then no point before a failed one is
        // left unstarted, and the failure reported is the same whatever `jobs` is.
        let batches = PointGroup.groups(points, traces: traces).flatMap { runner.batches($0) }.sorted {
            ($0.trace, $0.points.first?.index ?? 0) < ($1.trace, $1.points.first?.index ?? 0)
        }
        let state = ExecutorState(traces: traces, points: points.count)
        let work: @Sendable (Int) -> Void = { b in
            let batch = batches[b]
            do {
                let reports = try runner.run(batch, open: { try open(batch.trace) })
                guard reports.count == batch.points.count else {
                    throw SweepInternalError(
                        description: "the point runner returned \(reports.count) reports for \(batch.points.count) points")
                }
                state.store(batch, reports)
                finished?(batch.points.count)
            } catch let f as SweepFailure {
                state.fail(trace: batch.trace, f)
            } catch {
                state.fail(trace: batch.trace, SweepFailure(point: batch.points.first?.index ?? 0, error: error))
            }
        }
        let threads = max(1, min(jobs, batches.count))
        if threads == 1 {
            while let b = state.take(batches.count) { work(b) }
        } else {
            let done = DispatchGroup()
            for _ in 0..<threads {
                done.enter()
                let t = Thread {
                    while let b = state.take(batches.count) { work(b) }
                    done.leave()
                }
                // The main thread's 8 MiB: a worker runs the same code.
                t.stackSize = 8 << 20
                t.start()
            }
            done.wait()
        }
        return try state.result()
    }
}

/// The executor's shared state, behind one lock.
private final class ExecutorState: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private var reports: [[SimulationReport?]]
    private var failure: (trace: Int, failure: SweepFailure)?

    init(traces: Int, points: Int) {
        reports = Array(repeating: Array(repeating: nil, count: points), count: traces)
    }

    /// The next batch to run, or nil when all have started or one has failed.
    func take(_ count: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard failure == nil, next < count else { return nil }
        next += 1
        return next - 1
    }

    func store(_ batch: PointGroup, _ r: [SimulationReport]) {
        lock.lock()
        defer { lock.unlock() }
        for (p, report) in zip(batch.points, r) { reports[batch.trace][p.index] = report }
    }

    func fail(trace: Int, _ f: SweepFailure) {
        lock.lock()
        defer { lock.unlock() }
        if let old = failure, (old.trace, old.failure.point) < (trace, f.point) { return }
        failure = (trace, f)
    }

    func result() throws -> [[SimulationReport]] {
        lock.lock()
        defer { lock.unlock() }
        if let failure { throw failure.failure }
        return try reports.map { row in
            try row.map { r in
                guard let r else { throw SweepInternalError(description: "a sweep point was not run") }
                return r
            }
        }
    }
}

import Foundation
import TraceKit

/// What `advise` sizes the caches for (issue 12, item 1).
public enum AdviceTarget: Sendable, Equatable {
    /// Bytes per image for its L2 and refcount caches together (what libvirt's `max_size`
    /// bounds): the smallest L2 cache past the knee of the curve within it.
    case memoryBudget(UInt64)
    /// The smallest L2 cache whose hit rate reaches this (0 to 1), per image.
    case hitRate(Double)
    /// The smallest L2 cache whose misses per guest request fall to this, per image.
    case missesPerRequest(Double)

    /// `memory-budget`, `hit-rate` or `misses-per-request`.
    public var kind: String {
        switch self {
        case .memoryBudget: "memory-budget"
        case .hitRate: "hit-rate"
        case .missesPerRequest: "misses-per-request"
        }
    }

    /// The value as a number (bytes, rate, misses per request).
    public var value: Double {
        switch self {
        case .memoryBudget(let b): Double(b)
        case .hitRate(let r): r
        case .missesPerRequest(let x): x
        }
    }
}

/// A target `advise` cannot meet, or a budget QEMU cannot honour: a usage error (exit 64).
public struct AdviceError: Error, CustomStringConvertible, Equatable {
    /// What is wrong, naming the option and the image.
    public var description: String

    /// An error saying `description`.
    public init(description: String) { self.description = description }
}

/// The advice for one configuration (one `--vary` point): the `Codable` value `advise
/// --format json` writes (and an HTML page can be built from).
public struct AdviceDocument: Codable, Equatable, Sendable {
    /// `schema_version` (1); fields are only added, as in `SimulationDocument`.
    public var schemaVersion = 1
    /// `advise`.
    public var command = "advise"
    /// The traces, as given.
    public var traces: [String]
    /// Requests over all traces.
    public var requests: Int
    /// `memory-budget`, `hit-rate` or `misses-per-request`.
    public var target: String
    /// The target's value (bytes per image, rate, misses per request).
    public var targetValue: Double
    /// The `qemu-img create -o` options of new images (with the chosen `--vary` values).
    public var createOptions: String
    /// Every image, base first.
    public var images: [ImageAdvice]
    /// The `-drive` option string for the whole chain (`backing.` prefixes below the top).
    public var drive: String
    /// The libvirt `<disk>` element with `<metadata_cache>` for every image.
    public var libvirtXml: String
    /// The chain's predicted counts (both caches summed) at the recommended settings, and with
    /// a cost model the predicted IOPS there and at full coverage.
    public var totals: Totals
    /// The cost model's `source`, when `--cost` was given.
    public var costSource: String?
    /// The other `--vary` points and what they would need, when several were compared.
    public var alternatives: [Alternative]?
    /// What the libvirt `max_size` leaves to QEMU (the entry size, the clean interval).
    public var notes: [String]

    /// The chain's counts and predictions.
    public struct Totals: Codable, Equatable, Sendable {
        /// L2 caches summed over the chain.
        public var l2: Metrics
        /// Refcount caches summed.
        public var refcount: Metrics
        /// Host flushes (`HostFlushes`).
        public var hostFlushes: Int
        /// Predicted IOPS at the recommended settings (with `--cost`).
        public var predictedIops: Double?
        /// Predicted mean latency, µs.
        public var predictedLatencyUs: Double?
        /// Predicted IOPS with every image's L2 cache at full coverage.
        public var fullCoverageIops: Double?

        enum CodingKeys: String, CodingKey {
            case l2, refcount
            case hostFlushes = "host_flushes"
            case predictedIops = "predicted_iops"
            case predictedLatencyUs = "predicted_latency_us"
            case fullCoverageIops = "full_coverage_iops"
        }
    }

    /// Another configuration of the `--vary` grid.
    public struct Alternative: Codable, Equatable, Sendable {
        /// Its create options.
        public var createOptions: String
        /// The memory its recommendation needs over the chain, bytes.
        public var memoryBytes: UInt64
        /// Its predicted IOPS (with `--cost`).
        public var predictedIops: Double?
        /// Its L2 misses over the chain.
        public var misses: Int

        /// An alternative.
        public init(createOptions: String, memoryBytes: UInt64, predictedIops: Double?, misses: Int) {
            self.createOptions = createOptions
            self.memoryBytes = memoryBytes
            self.predictedIops = predictedIops
            self.misses = misses
        }

        enum CodingKeys: String, CodingKey {
            case createOptions = "create_options"
            case memoryBytes = "memory_bytes"
            case predictedIops = "predicted_iops"
            case misses
        }
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case command, traces, requests, target
        case targetValue = "target_value"
        case createOptions = "create_options"
        case images, drive
        case libvirtXml = "libvirt_xml"
        case totals
        case costSource = "cost_source"
        case alternatives, notes
    }
}

/// The advice for one image of the chain.
public struct ImageAdvice: Codable, Equatable, Sendable {
    /// Chain position (0 = base).
    public var index: Int
    /// `top`, `backing` or `base` (a one-image chain's image is the top).
    public var role: String
    /// Cluster size, bytes.
    public var clusterSize: UInt64
    /// Extended L2 entries.
    public var extendedL2: Bool
    /// Virtual size, bytes.
    public var virtualSize: UInt64
    /// The L2 cache that covers the whole disk, bytes.
    public var l2FullCoverageBytes: UInt64
    /// Recommended `l2-cache-size`, bytes.
    public var l2CacheSize: UInt64
    /// Recommended `l2-cache-entry-size`, bytes.
    public var l2CacheEntrySize: UInt64
    /// Recommended `refcount-cache-size`, bytes.
    public var refcountCacheSize: UInt64
    /// Recommended `cache-clean-interval`, seconds.
    public var cacheCleanInterval: UInt64
    /// The two caches' capacity at the recommendation, bytes.
    public var memoryBytes: UInt64
    /// Their capacity with QEMU's defaults (L2 up to 32 MiB, 4 refcount clusters), bytes.
    public var defaultMemoryBytes: UInt64
    /// The libvirt `max_size` (KiB) whose QEMU split gives this L2 and refcount cache.
    public var libvirtMaxSizeKiB: UInt64
    /// This image's `-drive` options (with its `backing.` prefix).
    public var drive: String
    /// This image's `-blockdev` node, JSON.
    public var blockdev: String
    /// This image's libvirt element (`<driver>` for the top, `<format>` in a `<backingStore>`).
    public var libvirtXml: String
    /// Why this size, in words.
    public var why: String
    /// The L2 curve the choice was made on: (size, lookups, misses), smallest first.
    public var curve: [CurvePoint]
    /// L2 misses at full coverage.
    public var fullCoverageMisses: Int
    /// The predicted counts at the recommended settings: the L2 cache.
    public var l2: Metrics
    /// The refcount cache.
    public var refcount: Metrics

    /// One point of a miss curve.
    public struct CurvePoint: Codable, Equatable, Sendable {
        /// L2 cache bytes (as QEMU sizes it: at most full coverage).
        public var l2CacheSize: UInt64
        /// L2 lookups.
        public var lookups: Int
        /// L2 misses.
        public var misses: Int
        /// Metadata bytes the L2 misses read from the image (added for the HTML page's curve).
        public var bytesRead: UInt64 = 0
        /// The misses by class (`CacheStats.missesCold` …): they add up to `misses`.
        public var missesCold = 0
        /// Misses of tables evicted for capacity.
        public var missesEvicted = 0
        /// Misses of tables the cache-clean timer dropped.
        public var missesCleaned = 0
        /// Misses of tables discarded when their cluster was freed.
        public var missesDiscarded = 0

        enum CodingKeys: String, CodingKey {
            case l2CacheSize = "l2_cache_size"
            case lookups, misses
            case bytesRead = "bytes_read"
            case missesCold = "misses_cold"
            case missesEvicted = "misses_evicted"
            case missesCleaned = "misses_cleaned"
            case missesDiscarded = "misses_discarded"
        }
    }

    enum CodingKeys: String, CodingKey {
        case index, role
        case clusterSize = "cluster_size"
        case extendedL2 = "extended_l2"
        case virtualSize = "virtual_size"
        case l2FullCoverageBytes = "l2_full_coverage_bytes"
        case l2CacheSize = "l2_cache_size"
        case l2CacheEntrySize = "l2_cache_entry_size"
        case refcountCacheSize = "refcount_cache_size"
        case cacheCleanInterval = "cache_clean_interval"
        case memoryBytes = "memory_bytes"
        case defaultMemoryBytes = "default_memory_bytes"
        case libvirtMaxSizeKiB = "libvirt_max_size_kib"
        case drive, blockdev
        case libvirtXml = "libvirt_xml"
        case why, curve
        case fullCoverageMisses = "full_coverage_misses"
        case l2, refcount
    }
}

/// Computes the advice: every image's L2 miss curve from one sweep (all images at the same
/// candidate size: each image has its own caches and the operation stream does not depend on
/// cache sizes, so an image's misses depend on its own cache only), the choice per image, then
/// one run of the recommended settings for the predicted counts.
public enum Advisor {
    /// How many more misses than the best allowed size the knee may cost: 5 % of them, or 0.1 %
    /// of the lookups, whichever is more (a curve flat at its cold misses picks its small end).
    static let kneeSlack = (relative: 0.05, ofLookups: 0.001)

    /// The advice for `base` over traces `0..<names.count` (`open(t)` opens trace t).
    /// `bestEffort`: a hit-rate or misses-per-request target no size reaches gives full
    /// coverage (the closest) instead of an error (a fleet's volume whose cold misses alone
    /// miss the target).
    public static func advise<R: TraceReader & SendableMetatype>(
        base: SimulationConfig, target: AdviceTarget, cost: CostModel?, names: [String], jobs: Int,
        directory: String = NSTemporaryDirectory(), bestEffort: Bool = false, open: @escaping @Sendable (Int) throws -> R
    ) throws -> AdviceDocument {
        let plan = try Self.plan(base: base, target: target)
        let reports = try SweepExecutor.run(
            points: plan.points, traces: names.count, jobs: jobs, runner: RecordingPointRunner(directory: directory), open: open)
        let samples = reports.map { row in row.enumerated().map { i, r in plan.sample(i, r, cost: cost) } }
        return try finish(plan, samples: samples, cost: cost, names: names, bestEffort: bestEffort, open: open)
    }

    /// The candidate L2 sizes of `base`'s curve and the points that run them (`advise`'s sweep,
    /// the part `advise --shard` splits).
    public struct Plan: Sendable {
        /// The configuration advised on.
        public var base: SimulationConfig
        /// What the advice is for.
        public var target: AdviceTarget
        /// The candidate L2 sizes, smallest first (each image's clamped to its full coverage).
        public var candidates: [UInt64]
        /// One point per candidate: every image's L2 cache at that size.
        public var points: [SweepPoint]
        var geometries: [Geometry]
        var full: [UInt64]
        var entry: [UInt64]

        /// The configuration with image k's L2 cache at `l2[k]` (and its clean interval, and
        /// QEMU's 4-cluster refcount cache when `refcount`).
        func config(l2: [UInt64], interval: [UInt64?]? = nil, refcount: Bool = false) -> SimulationConfig {
            let depth = geometries.count
            var c = base
            var levels: [CacheOptions] = []
            for level in 0..<depth {
                let k = depth - 1 - level
                var o = base.driveOptions[level]
                o.cacheSize = nil
                o.l2CacheSize = l2[k]
                o.l2CacheEntrySize = entry[k]
                if refcount { o.refcountCacheSize = 4 * geometries[k].clusterSize }
                if let interval { o.cacheCleanInterval = interval[k] }
                levels.append(o)
            }
            c.driveOptions = DriveOptions(levels)
            return c
        }

        /// What the choice needs of candidate `i`'s run: the L2 counts, and at the largest
        /// candidate the cost model's prediction (full coverage).
        public func sample(_ i: Int, _ report: SimulationReport, cost: CostModel?) -> CurveSample {
            CurveSample(report, config: points[i].config, cost: i == points.count - 1 ? cost : nil)
        }
    }

    /// The curve's candidates for `base` (QEMU's minimum and the budget checked).
    public static func plan(base: SimulationConfig, target: AdviceTarget) throws -> Plan {
        let geometries = try Simulation.geometries(base)
        let depth = geometries.count
        let full = geometries.map(fullCoverage)
        let entry = geometries.map { min($0.clusterSize, 4096) }
        // QEMU's minimum: 2 L2 entries and 4 refcount clusters (read_cache_sizes, MIN_*_CACHE_SIZE).
        if case .memoryBudget(let b) = target {
            for (k, g) in geometries.enumerated() {
                let minimum = 2 * entry[k] + 4 * g.clusterSize
                if b < minimum {
                    throw AdviceError(
                        description:
                            "--memory-budget \(ReportFormat.bytes(b)) is below QEMU's minimum for image \(k): 2 L2 entries of \(ReportFormat.bytes(entry[k])) and 4 refcount entries of \(ReportFormat.bytes(g.clusterSize)) (\(ReportFormat.bytes(minimum)))"
                    )
                }
            }
        }
        var sizes = Set<UInt64>()
        let top = full.max() ?? 8192
        var s = Double(top)
        while s >= 8192 {
            sizes.insert(max(8192, UInt64(s) / 4096 * 4096))
            s /= 2.0.squareRoot()
        }
        sizes.insert(8192)
        for f in full { sizes.insert(f) }
        if case .memoryBudget(let b) = target {
            for g in geometries where b > 4 * g.clusterSize { sizes.insert((b - 4 * g.clusterSize) / 4096 * 4096) }
        }
        let candidates = sizes.filter { $0 >= 8192 && $0 <= top }.sorted()
        var plan = Plan(
            base: base, target: target, candidates: candidates, points: [], geometries: geometries, full: full, entry: entry)
        plan.points = candidates.enumerated().map { i, size in
            SweepPoint(index: i, values: [], config: plan.config(l2: [UInt64](repeating: size, count: depth)))
        }
        return plan
    }

    /// The advice from the curve's samples (`samples[trace][candidate]`, for the plan's points):
    /// the choice per image, then one run of the recommended settings per trace for the
    /// predicted counts (`open(t)` opens trace t); `bestEffort` as `advise` takes it.
    public static func finish<R: TraceReader>(
        _ plan: Plan, samples: [[CurveSample]], cost: CostModel?, names: [String], bestEffort: Bool = false,
        open: (Int) throws -> R
    ) throws -> AdviceDocument {
        let (base, target, geometries, full, candidates) = (plan.base, plan.target, plan.geometries, plan.full, plan.candidates)
        let depth = geometries.count
        let stats = try samples.map { row in try row.map { try $0.l2.map { try $0.stats() } } }
        let requests = samples.reduce(0) { $0 + ($1.first?.requests ?? 0) }
        // Image k's curve: its L2 counts at each candidate (QEMU clamps at full coverage).
        var chosen: [UInt64] = []
        var whys: [String] = []
        var curves: [[ImageAdvice.CurvePoint]] = []
        var intervals: [UInt64?] = []
        for k in 0..<depth {
            var curve: [ImageAdvice.CurvePoint] = []
            var cleaned: [UInt64: Int] = [:]
            for (i, size) in candidates.enumerated() where size <= full[k] {
                var p = ImageAdvice.CurvePoint(l2CacheSize: size, lookups: 0, misses: 0)
                for t in stats.indices {
                    let st = stats[t][i][k]
                    p.lookups += st.lookups
                    p.misses += st.misses
                    p.bytesRead += st.bytesRead
                    p.missesCold += st.missesCold
                    p.missesEvicted += st.missesEvicted
                    p.missesCleaned += st.missesCleaned
                    p.missesDiscarded += st.missesDiscarded
                }
                curve.append(p)
                cleaned[size] = p.missesCleaned
            }
            curves.append(curve)
            let size: UInt64
            let why: String
            do {
                (size, why) = try choose(curve: curve, image: k, target: target, requests: requests, geometry: geometries[k])
            } catch let e as AdviceError where bestEffort {
                size = curve.last?.l2CacheSize ?? full[k]
                why = "\(e.description); full coverage, the closest"
            }
            chosen.append(size)
            // The clean timer: keep QEMU's (or the user's) interval unless it costs misses.
            let fullMisses = curve.last?.misses ?? 0
            let misses = curve.first { $0.l2CacheSize == size }?.misses ?? 0
            let cl = cleaned[size] ?? 0
            var text = why
            if fullMisses > 0 || misses > 0 {
                let extra = misses - fullMisses
                text +=
                    "; against full coverage (\(ReportFormat.bytes(full[k]))) \(extra >= 0 ? "+" : "")\(extra) misses"
                    + (fullMisses > 0 ? String(format: " (%+.1f%%)", Double(extra) / Double(fullMisses) * 100) : "")
            }
            if cl > 0 && Double(cl) > 0.01 * Double(max(misses, 1)) {
                intervals.append(0)
                text += "; cache-clean-interval=0: the timer dropped tables used again (\(cl) of \(misses) misses)"
            } else {
                intervals.append(base.driveOptions[depth - 1 - k].cacheCleanInterval ?? CacheSizing.defaultCleanInterval)
            }
            whys.append(text)
        }
        let recommended = plan.config(l2: chosen, interval: intervals, refcount: true)
        var finals: [SimulationReport] = []
        for t in names.indices {
            var reader = try open(t)
            finals.append(try Simulation.run(config: recommended, reader: &reader))
        }
        return try document(
            base: base, recommended: recommended, geometries: geometries, full: full, chosen: chosen, whys: whys,
            curves: curves, finals: finals,
            fullPredictions: try samples.map { row in
                guard let s = row.last else { return (0, 0) }
                guard let bits = s.latencyBits else {
                    if cost != nil { throw ShardError("damaged advice sample: no prediction at full coverage") }
                    return (0, s.requests)
                }
                return (Double(bitPattern: bits), s.requests)
            }, target: target, cost: cost,
            names: names, requests: requests)
    }

    /// The L2 bytes that cover the whole disk (QEMU's `max_l2_cache`).
    static func fullCoverage(_ g: Geometry) -> UInt64 {
        let cs = g.clusterSize
        let entries = (g.virtualSize + cs - 1) / cs
        return max(8192, (entries * g.l2EntrySize + cs - 1) / cs * cs)
    }

    /// The size for one image's curve and why.
    static func choose(
        curve: [ImageAdvice.CurvePoint], image k: Int, target: AdviceTarget, requests: Int, geometry g: Geometry
    ) throws -> (UInt64, String) {
        guard let last = curve.last, let first = curve.first else { return (8192, "no curve") }
        if last.lookups == 0 {
            return (first.l2CacheSize, "no L2 lookups on this image: QEMU's minimum of 2 entries")
        }
        switch target {
        case .memoryBudget(let b):
            let allowed = b - 4 * g.clusterSize
            let within = curve.filter { $0.l2CacheSize <= allowed }
            guard let best = within.last else { return (first.l2CacheSize, "the budget allows only QEMU's minimum") }
            let slack = max(Double(best.misses) * kneeSlack.relative, Double(best.lookups) * kneeSlack.ofLookups)
            let knee = within.first { Double($0.misses) <= Double(best.misses) + slack } ?? best
            let limit = best.l2CacheSize == last.l2CacheSize ? "full coverage" : ReportFormat.bytes(best.l2CacheSize)
            return (
                knee.l2CacheSize,
                "knee of the curve at \(ReportFormat.bytes(knee.l2CacheSize)): \(knee.misses) misses of \(knee.lookups) lookups, against \(best.misses) at \(limit) (the most the budget allows, less 4 refcount clusters)"
            )
        case .hitRate(let r):
            func rate(_ p: ImageAdvice.CurvePoint) -> Double {
                p.lookups == 0 ? 1 : Double(p.lookups - p.misses) / Double(p.lookups)
            }
            guard let p = curve.first(where: { rate($0) >= r }) else {
                throw AdviceError(
                    description: String(
                        format:
                            "--target-hit-rate %@ is unreachable for image %d: the best is %.4f at full coverage (%@): %d misses of %d lookups are first loads",
                        "\(r)", k, rate(last), ReportFormat.bytes(last.l2CacheSize), last.misses, last.lookups))
            }
            return (
                p.l2CacheSize,
                String(
                    format: "smallest size with hit rate ≥ %@: %.4f (%d misses of %d lookups)", "\(r)", rate(p), p.misses,
                    p.lookups)
            )
        case .missesPerRequest(let x):
            let n = Double(max(requests, 1))
            guard let p = curve.first(where: { Double($0.misses) / n <= x }) else {
                throw AdviceError(
                    description: String(
                        format:
                            "--target-miss-per-request %@ is unreachable for image %d: the fewest is %.4g misses per request at full coverage (%@)",
                        "\(x)", k, Double(last.misses) / n, ReportFormat.bytes(last.l2CacheSize)))
            }
            return (
                p.l2CacheSize, String(format: "smallest size with ≤ %@ misses per request: %.4g", "\(x)", Double(p.misses) / n)
            )
        }
    }

    /// The libvirt `max_size` (bytes) that QEMU's split of a combined `cache-size`
    /// (`read_cache_sizes`, `CacheSizing`) turns into `l2` bytes of L2 cache and 4 refcount
    /// clusters: below full coverage the refcount cache takes min(size, 4 clusters) and the L2
    /// cache the rest; from full coverage + 4 clusters the L2 cache is full and the refcount
    /// cache takes the rest.
    public static func libvirtMaxSize(l2: UInt64, geometry g: Geometry) -> UInt64 {
        min(l2, fullCoverage(g)) + 4 * g.clusterSize
    }

    static func document(
        base: SimulationConfig, recommended: SimulationConfig, geometries: [Geometry], full: [UInt64], chosen: [UInt64],
        whys: [String], curves: [[ImageAdvice.CurvePoint]], finals: [SimulationReport], fullPredictions: [(Double, Int)],
        target: AdviceTarget, cost: CostModel?, names: [String], requests: Int
    ) throws -> AdviceDocument {
        let depth = geometries.count
        var images: [ImageAdvice] = []
        var notes: [String] = []
        for (k, g) in geometries.enumerated() {
            let level = depth - 1 - k
            let o = recommended.driveOptions[level]
            let sizing = try sizingOrFail(g, o)
            let l2Bytes = UInt64(sizing.l2Entries) * sizing.l2EntrySize
            let rcBytes = UInt64(sizing.refcountEntries) * sizing.refcountEntrySize
            let def = try sizingOrFail(g, CacheOptions())
            let defaultBytes = UInt64(def.l2Entries) * def.l2EntrySize + UInt64(def.refcountEntries) * def.refcountEntrySize
            let maxSize = libvirtMaxSize(l2: l2Bytes, geometry: g)
            // The libvirt spelling must give the same caches under QEMU's own split.
            let split = try sizingOrFail(g, CacheOptions(cacheSize: maxSize))
            let splitL2 = UInt64(split.l2Entries) * split.l2EntrySize
            if splitL2 > l2Bytes && split.refcountEntries == sizing.refcountEntries {
                // A disk covered by one L2 table: max_size alone gives whole-table entries, and
                // QEMU keeps at least 2 of them (MIN_L2_CACHE_SIZE in qcow2_update_options_prepare).
                notes.append(
                    "image \(k): with libvirt's max_size alone QEMU makes a \(ReportFormat.bytes(splitL2)) L2 cache (at least 2 entries of \(ReportFormat.bytes(split.l2EntrySize))); the -drive string gives \(ReportFormat.bytes(l2Bytes))"
                )
            } else if splitL2 != l2Bytes || split.refcountEntries != sizing.refcountEntries {
                throw AdviceError(description: "internal: libvirt max_size \(maxSize) does not split into the recommended caches")
            }
            if split.l2EntrySize != sizing.l2EntrySize {
                notes.append(
                    "image \(k): libvirt cannot set l2-cache-entry-size; with max_size alone QEMU uses \(ReportFormat.bytes(split.l2EntrySize)) entries (full coverage), the -drive string \(ReportFormat.bytes(sizing.l2EntrySize))"
                )
            }
            if sizing.cleanInterval != CacheSizing.defaultCleanInterval {
                notes.append(
                    "image \(k): libvirt cannot set cache-clean-interval (QEMU then uses \(CacheSizing.defaultCleanInterval) s); the -drive string sets \(sizing.cleanInterval)"
                )
            }
            var l2 = CacheStats(), rc = CacheStats()
            var span = 0.0
            for r in finals {
                l2 = ReportFormat.add(l2, r.images[k].l2)
                rc = ReportFormat.add(rc, r.images[k].refcount)
                span += r.memorySpan
            }
            let prefix = String(repeating: "backing.", count: level)
            let drive = o.items.map { prefix + $0.key + "=" + $0.value }.joined(separator: ",")
            let role = k == depth - 1 ? "top" : (k == 0 ? "base" : "backing")
            images.append(
                ImageAdvice(
                    index: k, role: role, clusterSize: g.clusterSize, extendedL2: g.extendedL2, virtualSize: g.virtualSize,
                    l2FullCoverageBytes: full[k], l2CacheSize: l2Bytes, l2CacheEntrySize: sizing.l2EntrySize,
                    refcountCacheSize: rcBytes, cacheCleanInterval: sizing.cleanInterval, memoryBytes: l2Bytes + rcBytes,
                    defaultMemoryBytes: defaultBytes, libvirtMaxSizeKiB: maxSize / 1024, drive: drive,
                    blockdev: blockdev(k: k, depth: depth, sizing: sizing, file: fileName(k, base: base, depth: depth)),
                    libvirtXml: libvirtElement(top: k == depth - 1, maxKiB: maxSize / 1024), why: whys[k], curve: curves[k],
                    fullCoverageMisses: curves[k].last?.misses ?? 0, l2: Metrics(l2, memorySpan: span),
                    refcount: Metrics(rc, memorySpan: span)))
        }
        var tl2 = CacheStats(), trc = CacheStats()
        var flushes = 0
        var span = 0.0
        for r in finals {
            for im in r.images {
                tl2 = ReportFormat.add(tl2, im.l2)
                trc = ReportFormat.add(trc, im.refcount)
            }
            flushes += HostFlushes.count(r, config: recommended)
            span += r.memorySpan
        }
        var totals = AdviceDocument.Totals(
            l2: Metrics(tl2, memorySpan: span), refcount: Metrics(trc, memorySpan: span), hostFlushes: flushes)
        if let cost {
            let p = combined(cost, finals.map { (cost.predict($0, config: recommended).latencyUs, $0.requests) })
            totals.predictedIops = p.iops
            totals.predictedLatencyUs = p.latencyUs
            totals.fullCoverageIops = combined(cost, fullPredictions).iops
        }
        return AdviceDocument(
            traces: names, requests: requests, target: target.kind, targetValue: target.value,
            createOptions: base.imageFile == nil ? base.createOptions.rendered : "", images: images,
            drive: recommended.driveOptions.rendered, libvirtXml: libvirtDisk(images: images, base: base), totals: totals,
            costSource: cost?.source, alternatives: nil, notes: notes)
    }

    /// One prediction over several traces' runs, each (its predicted mean latency, its
    /// requests): total time over total requests.
    static func combined(_ cost: CostModel, _ runs: [(latencyUs: Double, requests: Int)]) -> Prediction {
        var us = 0.0
        var n = 0
        for r in runs {
            us += r.latencyUs * Double(r.requests)
            n += r.requests
        }
        let latency = n > 0 ? us / Double(n) : cost.requestUs
        return Prediction(latencyUs: latency, iops: latency > 0 ? 1e6 / latency : 0)
    }

    static func sizingOrFail(_ g: Geometry, _ o: CacheOptions) throws -> CacheSizing {
        do {
            return try CacheSizing(geometry: g, options: o)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
    }

    /// The image file names the settings use: the `--image` for the top of an existing chain,
    /// else the names `validate` gives the images it creates.
    static func fileName(_ k: Int, base: SimulationConfig, depth: Int) -> String {
        if let image = base.imageFile { return k == depth - 1 ? image : "backing\(k).qcow2" }
        return k == 0 ? "base.qcow2" : "top\(k).qcow2"
    }

    /// A `-blockdev` node for image `k` (node `img<k>`, its backing `img<k-1>`), as JSON.
    static func blockdev(k: Int, depth: Int, sizing: CacheSizing, file: String) -> String {
        let object: [String: Any] = [
            "driver": "qcow2", "node-name": "img\(k)", "file": ["driver": "file", "filename": file],
            "backing": k == 0 ? NSNull() : "img\(k - 1)" as Any,
            "l2-cache-size": UInt64(sizing.l2Entries) * sizing.l2EntrySize, "l2-cache-entry-size": sizing.l2EntrySize,
            "refcount-cache-size": UInt64(sizing.refcountEntries) * sizing.refcountEntrySize,
            "cache-clean-interval": sizing.cleanInterval,
        ]
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The `<metadata_cache>` of one image: under `<driver>` for the top image, under
    /// `<format>` inside its `<backingStore>` for the others.
    static func libvirtElement(top: Bool, maxKiB: UInt64) -> String {
        let cache = "<metadata_cache><max_size unit='KiB'>\(maxKiB)</max_size></metadata_cache>"
        return top ? "<driver name='qemu' type='qcow2'>\(cache)</driver>" : "<format type='qcow2'>\(cache)</format>"
    }

    /// The whole `<disk>` element, top image first, each backing file nested in the one above.
    static func libvirtDisk(images: [ImageAdvice], base: SimulationConfig) -> String {
        guard let top = images.last else { return "" }
        var s = "<disk type='file' device='disk'>\n"
        s += "  " + top.libvirtXml + "\n"
        s += "  <source file='\(xmlEscaped(fileName(top.index, base: base, depth: images.count)))'/>\n"
        var indent = "  "
        for im in images.dropLast().reversed() {
            s += indent + "<backingStore type='file'>\n"
            indent += "  "
            s += indent + im.libvirtXml + "\n"
            s += indent + "<source file='\(xmlEscaped(fileName(im.index, base: base, depth: images.count)))'/>\n"
        }
        if images.count > 1 { s += indent + "<backingStore/>\n" }
        for _ in images.dropLast() {
            indent = String(indent.dropLast(2))
            s += indent + "</backingStore>\n"
        }
        s += "  <target dev='vda' bus='virtio'/>\n</disk>\n"
        return s
    }

    static func xmlEscaped(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "'", with: "&apos;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// The advice as text: per image the settings and why, then the three spellings.
    public static func text(_ d: AdviceDocument) -> String {
        var s = "advice for \(d.traces.joined(separator: ", ")) (\(d.requests) requests), target \(d.target) "
        switch d.target {
        case "memory-budget": s += "\(ReportFormat.bytes(UInt64(d.targetValue))) per image (L2 + refcount)\n"
        default: s += "\(ReportFormat.number(d.targetValue))\n"
        }
        if !d.createOptions.isEmpty { s += "create options: -o \(d.createOptions)\n" }
        for im in d.images.reversed() {
            s +=
                "\nimage \(im.index) (\(im.role)): cluster \(ReportFormat.bytes(im.clusterSize))\(im.extendedL2 ? ", extended L2" : ""), full L2 coverage \(ReportFormat.bytes(im.l2FullCoverageBytes))\n"
            s +=
                "  l2-cache-size=\(ReportFormat.bytes(im.l2CacheSize)) l2-cache-entry-size=\(ReportFormat.bytes(im.l2CacheEntrySize)) refcount-cache-size=\(ReportFormat.bytes(im.refcountCacheSize)) cache-clean-interval=\(im.cacheCleanInterval)\n"
            s += "  why: \(im.why)\n"
            let saved = Int64(im.defaultMemoryBytes) - Int64(im.memoryBytes)
            s +=
                "  memory: \(ReportFormat.bytes(im.memoryBytes)) against QEMU's default \(ReportFormat.bytes(im.defaultMemoryBytes)) (32 MiB L2 cap, 4 KiB slices, 600 s): "
                + (saved >= 0 ? "saves \(ReportFormat.bytes(UInt64(saved)))" : "\(ReportFormat.bytes(UInt64(-saved))) more")
                + "\n"
            s +=
                "  predicted: L2 \(im.l2.lookups) lookups, \(im.l2.misses) misses (hit rate \(String(format: "%.4f", im.l2.hitRate))); refcount \(im.refcount.misses) misses\n"
        }
        if let iops = d.totals.predictedIops, let lat = d.totals.predictedLatencyUs {
            s +=
                "\npredicted (cost model \(d.costSource ?? "given")): \(String(format: "%.0f", iops)) IOPS, \(String(format: "%.1f", lat)) µs per request"
            if let f = d.totals.fullCoverageIops {
                s += String(format: "; at full coverage %.0f IOPS (%+.1f%%)", f, (iops - f) / f * 100)
            }
            s += "\n"
        }
        if let alts = d.alternatives, !alts.isEmpty {
            s += "\nother --vary points:\n"
            for a in alts {
                s += "  -o \(a.createOptions): \(ReportFormat.bytes(a.memoryBytes)), \(a.misses) L2 misses"
                if let i = a.predictedIops { s += String(format: ", %.0f IOPS", i) }
                s += "\n"
            }
        }
        s += "\n-drive options:\n  \(d.drive)\n"
        s += "\n-blockdev (one per node):\n"
        for im in d.images { s += "  -blockdev '\(im.blockdev)'\n" }
        s +=
            "\nlibvirt (max_size is QEMU's cache-size of the node; QEMU's own split of it, read_cache_sizes, gives the L2 sizes above and 4 refcount clusters):\n"
        s += d.libvirtXml.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n"
        for n in d.notes { s += "note: \(n)\n" }
        return s
    }
}

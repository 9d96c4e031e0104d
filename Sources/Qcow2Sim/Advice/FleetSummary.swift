import Foundation

/// What `qcow2sim advise --per-volume` reports for a fleet: per volume the cache memory its
/// advice needs to reach the target (the ``Advisor``'s choice on that volume's own disk and
/// caches), and over the fleet the distribution of that memory, the total against QEMU's
/// defaults, and the volumes whose L2 cache must be larger than QEMU's 32 MiB default.
///
/// Percentiles are nearest-rank: p-th of n sorted values is the value at rank ⌈p/100 · n⌉
/// (so p50 of 4 values is the 2nd, and every percentile is a value some volume has).
public struct FleetSummary: Codable, Equatable, Sendable {
    /// `schema_version` (1); fields are only added.
    public var schemaVersion = 1
    /// `advise`.
    public var command = "advise"
    /// The trace, as given.
    public var trace: String
    /// `memory-budget`, `hit-rate` or `misses-per-request`.
    public var target: String
    /// The target's value.
    public var targetValue: Double
    /// Requests over all volumes.
    public var requests: Int
    /// One entry per volume, in volume order.
    public var volumes: [Volume]
    /// The distribution of ``Volume/memoryBytes`` over the volumes.
    public var memory: Distribution
    /// The sum of ``Volume/memoryBytes``: every volume at its advised settings.
    public var totalMemoryBytes: UInt64
    /// The sum of ``Volume/defaultMemoryBytes``: every volume at QEMU's defaults.
    public var totalDefaultMemoryBytes: UInt64
    /// The volumes whose advised L2 cache (any image) is above QEMU's 32 MiB default, in
    /// volume order: at the defaults they miss the target.
    public var aboveDefault: [String]
    /// The volumes no cache size brings to the target (their cold misses alone miss it), in
    /// volume order: their advice is full coverage, the closest.
    public var unreachable: [String]

    /// One volume's advice.
    public struct Volume: Codable, Equatable, Sendable {
        /// The volume's name (what `--device` takes).
        public var volume: String
        /// Its virtual disk size, bytes.
        public var virtualSize: UInt64
        /// Its requests.
        public var requests: Int
        /// Advised `l2-cache-size` of the top image, bytes.
        public var l2CacheSize: UInt64
        /// L2 bytes that cover the top image's whole disk.
        public var l2FullCoverageBytes: UInt64
        /// Both caches over the chain at the advice, bytes (what the target needs).
        public var memoryBytes: UInt64
        /// Both caches over the chain with QEMU's defaults, bytes.
        public var defaultMemoryBytes: UInt64
        /// L2 hit rate at the advice (over the chain).
        public var l2HitRate: Double
        /// L2 misses per request at the advice.
        public var l2MissesPerRequest: Double
        /// The `-drive` options to paste for this volume.
        public var drive: String
        /// Whether the advice reaches the target (false: full coverage, the closest).
        public var reached: Bool

        enum CodingKeys: String, CodingKey {
            case volume
            case virtualSize = "virtual_size"
            case requests
            case l2CacheSize = "l2_cache_size"
            case l2FullCoverageBytes = "l2_full_coverage_bytes"
            case memoryBytes = "memory_bytes"
            case defaultMemoryBytes = "default_memory_bytes"
            case l2HitRate = "l2_hit_rate"
            case l2MissesPerRequest = "l2_misses_per_request"
            case drive, reached
        }
    }

    /// Nearest-rank percentiles of a set of byte counts.
    public struct Distribution: Codable, Equatable, Sendable {
        /// The median.
        public var p50: UInt64
        /// The 90th percentile.
        public var p90: UInt64
        /// The 99th percentile.
        public var p99: UInt64
        /// The largest.
        public var max: UInt64

        /// The percentiles of `values` (all zero when empty).
        public init(_ values: [UInt64]) {
            let s = values.sorted()
            func rank(_ p: Double) -> UInt64 {
                guard !s.isEmpty else { return 0 }
                let r = Int((p / 100 * Double(s.count)).rounded(.up))
                return s[Swift.min(Swift.max(r, 1), s.count) - 1]
            }
            p50 = rank(50)
            p90 = rank(90)
            p99 = rank(99)
            max = s.last ?? 0
        }
    }

    /// The summary of per-volume advice `docs` (volume name, its virtual size, its document),
    /// in volume order.
    public init(trace: String, volumes docs: [(name: String, size: UInt64, advice: AdviceDocument)]) {
        self.trace = trace
        target = docs.first?.advice.target ?? ""
        targetValue = docs.first?.advice.targetValue ?? 0
        requests = docs.reduce(0) { $0 + $1.advice.requests }
        volumes = docs.map { d in
            let a = d.advice
            let top = a.images.last
            let l2 = a.totals.l2
            return Volume(
                volume: d.name, virtualSize: d.size, requests: a.requests, l2CacheSize: top?.l2CacheSize ?? 0,
                l2FullCoverageBytes: top?.l2FullCoverageBytes ?? 0, memoryBytes: a.images.reduce(0) { $0 + $1.memoryBytes },
                defaultMemoryBytes: a.images.reduce(0) { $0 + $1.defaultMemoryBytes },
                l2HitRate: ReportFormat.rounded(l2.lookups > 0 ? Double(l2.hits) / Double(l2.lookups) : 1),
                l2MissesPerRequest: ReportFormat.rounded(a.requests > 0 ? Double(l2.misses) / Double(a.requests) : 0),
                drive: a.drive, reached: Self.reaches(a))
        }
        memory = Distribution(volumes.map(\.memoryBytes))
        totalMemoryBytes = volumes.reduce(0) { $0 + $1.memoryBytes }
        totalDefaultMemoryBytes = volumes.reduce(0) { $0 + $1.defaultMemoryBytes }
        unreachable = volumes.filter { !$0.reached }.map(\.volume)
        aboveDefault = docs.filter { d in d.advice.images.contains { $0.l2CacheSize > CacheSizing.defaultL2Max } }.map(\.name)
    }

    /// Whether every image's curve point at its advised size meets the document's target (the
    /// choice `Advisor.choose` makes; the best-effort fallback of an unreachable target does not).
    static func reaches(_ a: AdviceDocument) -> Bool {
        a.images.allSatisfy { im in
            guard let p = im.curve.first(where: { $0.l2CacheSize == im.l2CacheSize }), p.lookups > 0 else { return true }
            switch a.target {
            case "hit-rate": return Double(p.lookups - p.misses) / Double(p.lookups) >= a.targetValue
            case "misses-per-request": return Double(p.misses) / Double(max(a.requests, 1)) <= a.targetValue
            default: return true
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case command, trace, target
        case targetValue = "target_value"
        case requests, volumes, memory
        case totalMemoryBytes = "total_memory_bytes"
        case totalDefaultMemoryBytes = "total_default_memory_bytes"
        case aboveDefault = "above_default"
        case unreachable
    }

    /// The target in words.
    public var targetText: String {
        switch target {
        case "memory-budget": "memory budget \(ReportFormat.bytes(UInt64(targetValue))) per image"
        case "hit-rate": "L2 hit rate at least \(ReportFormat.number(targetValue))"
        default: "at most \(ReportFormat.number(targetValue)) L2 misses per request"
        }
    }

    /// The text report: the fleet's figures, then one line per volume.
    public func text() -> String {
        var s = "fleet: \(volumes.count) volumes of \(trace), \(requests) requests; target: \(targetText)\n"
        s += "memory per volume (L2 + refcount caches at the advice): p50 \(ReportFormat.bytes(memory.p50)), "
        s += "p90 \(ReportFormat.bytes(memory.p90)), p99 \(ReportFormat.bytes(memory.p99)), max \(ReportFormat.bytes(memory.max))\n"
        s += "total: \(ReportFormat.bytes(totalMemoryBytes)) advised against \(ReportFormat.bytes(totalDefaultMemoryBytes)) "
        s += "with QEMU's defaults (\(totalMemoryBytes) and \(totalDefaultMemoryBytes) bytes)\n"
        s += "volumes needing more than the 32 MiB default L2 cache: \(aboveDefault.count)"
        s += aboveDefault.isEmpty ? "\n" : " (\(aboveDefault.prefix(20).joined(separator: ", "))\(aboveDefault.count > 20 ? ", …" : ""))\n"
        s += "volumes no size brings to the target (advised full coverage, the closest): \(unreachable.count)\n"
        s += "\n"
        let header = ["volume", "virtual size", "requests", "l2-cache-size", "memory", "default memory", "L2 hit rate", "misses/req"]
        var rows = [header]
        for v in volumes {
            rows.append([
                v.volume, ReportFormat.bytes(v.virtualSize), "\(v.requests)", ReportFormat.bytes(v.l2CacheSize),
                ReportFormat.bytes(v.memoryBytes), ReportFormat.bytes(v.defaultMemoryBytes), String(format: "%.4f", v.l2HitRate),
                String(format: "%.4f", v.l2MissesPerRequest),
            ])
        }
        var widths = [Int](repeating: 0, count: header.count)
        for r in rows { for (i, f) in r.enumerated() { widths[i] = Swift.max(widths[i], f.count) } }
        for r in rows {
            let fields = r.enumerated().map { i, f in
                let pad = String(repeating: " ", count: widths[i] - f.count)
                return i == 0 ? f + pad : pad + f
            }
            s += fields.joined(separator: "  ") + "\n"
        }
        return s
    }
}

/// Resident cache memory over trace time: one sample per image and cache whenever it changes
/// (after a request, or at a cache-clean tick), for plotting what `cache-clean-interval`
/// releases (§3.7).
public final class MemoryTimeline {
    /// One observation.
    public struct Sample: Equatable, Sendable {
        /// Trace time in seconds (request time, or the tick time for clean ticks).
        public var time: Double
        /// Chain position of the image.
        public var image: Int
        /// `true` for the L2 cache, `false` for the refcount cache.
        public var isL2: Bool
        /// Resident bytes after the change.
        public var residentBytes: UInt64
    }

    /// Cumulative lookup counters of one cache at one time (for hit rate over trace time).
    public struct Counters: Equatable, Sendable {
        /// Trace time in seconds (request time; the request number without timestamps).
        public var time: Double
        /// Time of the first lookup counted since the previous sample of this cache: the
        /// lookups between two samples happened within `since...time` (idle time before it is
        /// not part of the interval).
        public var since: Double
        /// Chain position of the image.
        public var image: Int
        /// `true` for the L2 cache, `false` for the refcount cache.
        public var isL2: Bool
        /// Lookups so far.
        public var lookups: Int
        /// Hits so far.
        public var hits: Int
        /// Misses so far.
        public var misses: Int
    }

    /// Entries the cache-clean timer dropped at one tick (§3.7, `qcow2_cache_clean_unused`).
    public struct Release: Equatable, Sendable {
        /// The tick's trace time.
        public var time: Double
        /// Chain position of the image.
        public var image: Int
        /// `true` for the L2 cache, `false` for the refcount cache.
        public var isL2: Bool
        /// Entries dropped at this tick.
        public var entries: Int
    }

    /// Every sample, in time order.
    @exclusivity(unchecked) public private(set) var samples: [Sample] = []
    /// Every clean-timer tick that dropped entries, in time order.
    @exclusivity(unchecked) public private(set) var releases: [Release] = []
    @exclusivity(unchecked) private var last: [Int: UInt64] = [:]
    @exclusivity(unchecked) private var lastCleaned: [Int: Int] = [:]

    /// Counter samples of one cache, thinned as they come: every `stride`-th change is kept, and
    /// when `kept` reaches twice the limit every second one is dropped and the stride doubles.
    /// Counters are cumulative, so thinning loses resolution, never counts.
    private struct CounterTrack {
        var stride = 1
        var seen = 0
        var lookups = 0
        var kept: [Counters] = []
        var pending: Counters?
        var intervalStart: Double?

        mutating func add(_ sample: Counters, limit: Int) {
            var sample = sample
            lookups = sample.lookups
            seen += 1
            let start = intervalStart ?? sample.since
            intervalStart = start
            sample.since = start
            guard seen % stride == 0 else {
                pending = sample
                return
            }
            kept.append(sample)
            pending = nil
            intervalStart = nil
            if kept.count >= 2 * limit {
                // Each kept sample absorbs the interval of the one dropped before it.
                kept = Swift.stride(from: 1, to: kept.count, by: 2).map { i in
                    var k = kept[i]
                    k.since = kept[i - 1].since
                    return k
                }
                stride *= 2
            }
        }
    }
    @exclusivity(unchecked) private var tracks: [Int: CounterTrack] = [:]
    /// The number of counter samples per cache is kept between this and twice this.
    public let counterLimit: Int

    /// An empty timeline; `counterLimit` bounds the counter samples kept per cache.
    public init(counterLimit: Int = 256) { self.counterLimit = max(1, counterLimit) }

    /// Counter samples of every cache, in time order: the thinned ones plus each cache's latest
    /// state, so the last sample of a cache always holds its final counts.
    public var counterSamples: [Counters] {
        var out: [Counters] = []
        for key in tracks.keys.sorted() {
            guard let t = tracks[key] else { continue }
            out += t.kept
            if let p = t.pending { out.append(p) }
        }
        return out.sorted { ($0.time, $0.image, $0.isL2 ? 1 : 0) < ($1.time, $1.image, $1.isL2 ? 1 : 0) }
    }

    /// Records the image's caches if their resident memory changed since the last sample.
    func sample<P>(time: Double, image: Int, caches: CacheSystem<P>.ImageCaches) {
        for kind in [CacheKind.l2, .refcount] {
            let bytes = caches[kind].stats.memoryBytes
            let key = image * 2 + Int(kind.rawValue)
            if last[key] != bytes {
                last[key] = bytes
                samples.append(Sample(time: time, image: image, isL2: kind == .l2, residentBytes: bytes))
            }
            let st = caches[kind].stats
            let dropped = st.cleaned - (lastCleaned[key] ?? 0)
            if dropped > 0 {
                lastCleaned[key] = st.cleaned
                releases.append(Release(time: time, image: image, isL2: kind == .l2, entries: dropped))
            }
            if st.lookups != tracks[key]?.lookups ?? 0 {
                let sample = Counters(
                    time: time, since: time, image: image, isL2: kind == .l2, lookups: st.lookups, hits: st.hits,
                    misses: st.misses)
                // In place through the subscript: a copy of the track would copy `kept` too.
                tracks[key, default: CounterTrack()].add(sample, limit: counterLimit)
            }
        }
    }

    /// `time,image,cache,resident_bytes` lines with a header.
    public var csv: String {
        var s = "time,image,cache,resident_bytes\n"
        for x in samples { s += "\(ReportFormat.number(x.time)),\(x.image),\(x.isL2 ? "l2" : "refcount"),\(x.residentBytes)\n" }
        return s
    }
}

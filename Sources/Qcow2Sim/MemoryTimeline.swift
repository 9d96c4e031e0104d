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

    /// Every sample, in time order.
    public private(set) var samples: [Sample] = []
    private var last: [Int: UInt64] = [:]

    /// An empty timeline.
    public init() {}

    /// Records the image's caches if their resident memory changed since the last sample.
    func sample<P>(time: Double, image: Int, caches: CacheSystem<P>.ImageCaches) {
        for kind in [CacheKind.l2, .refcount] {
            let bytes = caches[kind].stats.memoryBytes
            let key = image * 2 + Int(kind.rawValue)
            if last[key] != bytes {
                last[key] = bytes
                samples.append(Sample(time: time, image: image, isL2: kind == .l2, residentBytes: bytes))
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

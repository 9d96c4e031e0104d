import Qcow2Sim

/// Effective cache geometry of one image (from the simulator's report: QEMU's sizing rules,
/// qcow2-model.md §2), used to turn event counts into bytes and to show cache memory.
public struct ImageCacheSizes: Equatable, Sendable, Codable {
    /// Bytes per L2 cache entry (a slice or a whole table).
    public var l2EntryBytes: UInt64
    /// Number of L2 cache entries.
    public var l2Entries: Int
    /// Bytes per refcount cache entry (always the cluster size).
    public var refcountEntryBytes: UInt64
    /// Number of refcount cache entries.
    public var refcountEntries: Int

    /// Creates the sizes of one image.
    public init(l2EntryBytes: UInt64, l2Entries: Int, refcountEntryBytes: UInt64, refcountEntries: Int) {
        self.l2EntryBytes = l2EntryBytes
        self.l2Entries = l2Entries
        self.refcountEntryBytes = refcountEntryBytes
        self.refcountEntries = refcountEntries
    }

    /// Table memory of both caches in bytes.
    public var memoryBytes: UInt64 {
        l2EntryBytes * UInt64(l2Entries) + refcountEntryBytes * UInt64(refcountEntries)
    }
}

/// Both caches of one image, counted from the events alone (`CacheCounter`), so the simulated
/// and the real side are counted by exactly the same rules, in the reports' one `Metrics` type.
public struct ImageCounts: Equatable, Sendable, Codable {
    /// The L2-table cache.
    public var l2 = Metrics()
    /// The refcount-block cache.
    public var refcount = Metrics()
    /// Creates zero counts.
    public init() {}
}

/// Derives each cache's `Metrics` from a stream of events.
public struct CacheCounter: Sendable {
    private struct Key: Hashable { var image: Int; var isL2: Bool }
    private var counts: [Key: Metrics] = [:]
    private var lastGet: [Key: CacheEvent] = [:]
    private var slots: [Key: [Int: UInt64]] = [:]

    /// Creates an empty counter.
    public init() {}

    /// Counts one event.
    public mutating func add(_ ev: CacheEvent) {
        let key = Key(image: ev.image, isL2: ev.isL2)
        var c = counts[key] ?? Metrics()
        switch ev.kind {
        case .get:
            c.lookups += 1
            c.hits += 1
            lastGet[key] = ev
        case .replaceEntry:
            // The GET before it was a miss, not a hit.
            c.misses += 1
            c.hits -= 1
            if lastGet[key]?.readFromDisk == false { c.emptyGets += 1 }
            if let held = slots[key]?[ev.index], held != 0 { c.evictions += 1 }
        case .getRead:
            slots[key, default: [:]][ev.index] = lastGet[key]?.offset ?? 0
        case .getDone:
            break
        case .flush:
            c.flushes += 1
        case .entryFlush:
            c.writebacks += 1
        }
        counts[key] = c
    }

    /// Counts every event of `events`.
    public mutating func add<S: Sequence>(contentsOf events: S) where S.Element == CacheEvent {
        for ev in events { add(ev) }
    }

    /// Per-image counts for images `0..<imageCount`, with bytes filled in from `sizes` when given
    /// (read: misses that read from disk × entry size; written: write-backs × entry size).
    public func result(imageCount: Int, sizes: [ImageCacheSizes]?) -> [ImageCounts] {
        (0..<imageCount).map { image in
            var r = ImageCounts()
            r.l2 = counts[Key(image: image, isL2: true)] ?? Metrics()
            r.refcount = counts[Key(image: image, isL2: false)] ?? Metrics()
            if let sizes, image < sizes.count {
                let s = sizes[image]
                r.l2.bytesRead = UInt64(r.l2.missesReadFromDisk) * s.l2EntryBytes
                r.l2.bytesWritten = UInt64(r.l2.writebacks) * s.l2EntryBytes
                r.refcount.bytesRead = UInt64(r.refcount.missesReadFromDisk) * s.refcountEntryBytes
                r.refcount.bytesWritten = UInt64(r.refcount.writebacks) * s.refcountEntryBytes
            }
            return r
        }
    }
}

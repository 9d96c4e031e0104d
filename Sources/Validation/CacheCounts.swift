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

/// Counts of one cache of one image, derived from its events alone, so the simulated and the
/// real side are counted by exactly the same rules.
public struct CacheCounts: Equatable, Sendable, Codable {
    /// `qcow2_cache_get` lines.
    public var lookups = 0
    /// Lookups answered from the cache (lookups - misses).
    public var hits: Int { lookups - misses }
    /// `qcow2_cache_get_replace_entry` lines.
    public var misses = 0
    /// Misses whose GET had `read_from_disk 1` (a table read from the image file).
    public var missesReadFromDisk = 0
    /// Misses that replaced an entry which, by the events so far, held a table. (Entries
    /// emptied silently, by cache-clean or a freed refcount block, count as empty.)
    public var evictions = 0
    /// `qcow2_cache_entry_flush` lines: dirty entries written back.
    public var writeBacks = 0
    /// `qcow2_cache_flush` lines.
    public var flushes = 0
    /// Bytes read: misses read from disk × entry size (nil without sizes).
    public var bytesRead: UInt64?
    /// Bytes written: write-backs × entry size (nil without sizes).
    public var bytesWritten: UInt64?

    /// Creates zero counts.
    public init() {}

    private enum CodingKeys: String, CodingKey {
        case lookups, hits, misses, missesReadFromDisk, evictions, writeBacks, flushes, bytesRead, bytesWritten
    }

    /// Encodes every count, `hits` included.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(lookups, forKey: .lookups)
        try c.encode(hits, forKey: .hits)
        try c.encode(misses, forKey: .misses)
        try c.encode(missesReadFromDisk, forKey: .missesReadFromDisk)
        try c.encode(evictions, forKey: .evictions)
        try c.encode(writeBacks, forKey: .writeBacks)
        try c.encode(flushes, forKey: .flushes)
        try c.encodeIfPresent(bytesRead, forKey: .bytesRead)
        try c.encodeIfPresent(bytesWritten, forKey: .bytesWritten)
    }

    /// Decodes counts written by `encode(to:)`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        lookups = try c.decode(Int.self, forKey: .lookups)
        misses = try c.decode(Int.self, forKey: .misses)
        missesReadFromDisk = try c.decode(Int.self, forKey: .missesReadFromDisk)
        evictions = try c.decode(Int.self, forKey: .evictions)
        writeBacks = try c.decode(Int.self, forKey: .writeBacks)
        flushes = try c.decode(Int.self, forKey: .flushes)
        bytesRead = try c.decodeIfPresent(UInt64.self, forKey: .bytesRead)
        bytesWritten = try c.decodeIfPresent(UInt64.self, forKey: .bytesWritten)
    }
}

/// Both caches of one image.
public struct ImageCounts: Equatable, Sendable, Codable {
    /// The L2-table cache.
    public var l2 = CacheCounts()
    /// The refcount-block cache.
    public var refcount = CacheCounts()
    /// Creates zero counts.
    public init() {}
}

/// Derives `CacheCounts` from a stream of events.
public struct CacheCounter: Sendable {
    private struct Key: Hashable { var image: Int; var isL2: Bool }
    private var counts: [Key: CacheCounts] = [:]
    private var lastGet: [Key: CacheEvent] = [:]
    private var slots: [Key: [Int: UInt64]] = [:]

    /// Creates an empty counter.
    public init() {}

    /// Counts one event.
    public mutating func add(_ ev: CacheEvent) {
        let key = Key(image: ev.image, isL2: ev.isL2)
        var c = counts[key] ?? CacheCounts()
        switch ev.kind {
        case .get:
            c.lookups += 1
            lastGet[key] = ev
        case .replaceEntry:
            c.misses += 1
            if lastGet[key]?.readFromDisk ?? true { c.missesReadFromDisk += 1 }
            if let held = slots[key]?[ev.index], held != 0 { c.evictions += 1 }
        case .getRead:
            slots[key, default: [:]][ev.index] = lastGet[key]?.offset ?? 0
        case .getDone:
            break
        case .flush:
            c.flushes += 1
        case .entryFlush:
            c.writeBacks += 1
        }
        counts[key] = c
    }

    /// Counts every event of `events`.
    public mutating func add<S: Sequence>(contentsOf events: S) where S.Element == CacheEvent {
        for ev in events { add(ev) }
    }

    /// Per-image counts for images `0..<imageCount`, with bytes filled in from `sizes` when given.
    public func result(imageCount: Int, sizes: [ImageCacheSizes]?) -> [ImageCounts] {
        (0..<imageCount).map { image in
            var r = ImageCounts()
            r.l2 = counts[Key(image: image, isL2: true)] ?? CacheCounts()
            r.refcount = counts[Key(image: image, isL2: false)] ?? CacheCounts()
            if let sizes, image < sizes.count {
                let s = sizes[image]
                r.l2.bytesRead = UInt64(r.l2.missesReadFromDisk) * s.l2EntryBytes
                r.l2.bytesWritten = UInt64(r.l2.writeBacks) * s.l2EntryBytes
                r.refcount.bytesRead = UInt64(r.refcount.missesReadFromDisk) * s.refcountEntryBytes
                r.refcount.bytesWritten = UInt64(r.refcount.writeBacks) * s.refcountEntryBytes
            }
            return r
        }
    }
}

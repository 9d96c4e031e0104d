/// Counters of one metadata cache (QEMU's L2-table or refcount-block cache).
public struct CacheStats: Equatable, Sendable {
    /// GETs (`qcow2_cache_get` lines).
    public var lookups = 0
    /// GETs that found the table resident.
    public var hits = 0
    /// GETs that replaced an entry.
    public var misses = 0
    /// Misses that were "get empty" (`read_from_disk 0`): a brand-new table, nothing read.
    public var emptyGets = 0
    /// Misses whose victim held another table (as opposed to an empty slot).
    public var evictions = 0
    /// Evictions whose victim was dirty and had to be written back first.
    public var dirtyEvictions = 0
    /// Entry write-backs (`qcow2_cache_entry_flush` lines).
    public var writebacks = 0
    /// `qcow2_cache_flush` lines (WRITE, FLUSH and dependency flushes alike).
    public var flushes = 0
    /// Metadata bytes read from the image file (misses with `read_from_disk 1`).
    public var bytesRead: UInt64 = 0
    /// Metadata bytes written to the image file (write-backs).
    public var bytesWritten: UInt64 = 0
    /// Entries dropped by the cache-clean timer.
    public var cleaned = 0
    /// Misses of a table not loaded before in this session (cold misses).
    public var missesCold = 0
    /// Misses of a table that was replaced by another (capacity misses).
    public var missesEvicted = 0
    /// Misses of a table the cache-clean timer dropped.
    public var missesCleaned = 0
    /// Misses of a table discarded because its cluster was freed.
    public var missesDiscarded = 0
    /// Resident cache memory now, in bytes (touched pages not yet released).
    public var memoryBytes: UInt64 = 0
    /// Largest `memoryBytes` seen.
    public var memoryPeakBytes: UInt64 = 0
    /// Integral of `memoryBytes` over trace time (byte-seconds), for the time-weighted mean.
    public var memoryByteSeconds: Double = 0

    /// Creates zeroed counters.
    public init() {}

    /// hits / lookups (0 when there were no lookups).
    public var hitRate: Double { lookups == 0 ? 0 : Double(hits) / Double(lookups) }
    /// misses / lookups.
    public var missRate: Double { lookups == 0 ? 0 : Double(misses) / Double(lookups) }
}

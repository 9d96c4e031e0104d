import Foundation

/// The counters of one metadata cache (QEMU's L2-table or refcount-block cache) as reports give
/// them: the one spelling of every counter, shared by `simulate --format json` (from the
/// simulator's `CacheStats`) and `validate --format json` (counted from either side's
/// `qcow2_cache_*` events).
///
/// Counters a side cannot know are nil and left out of the JSON: the event counts of `validate`
/// have no dirty evictions, cleaned entries or memory, and no bytes without the cache sizes.
public struct Metrics: Equatable, Sendable, Codable {
    /// GETs (`qcow2_cache_get` lines).
    public var lookups = 0
    /// GETs that found the table resident (lookups − misses).
    public var hits = 0
    /// GETs that replaced an entry (`qcow2_cache_get_replace_entry` lines).
    public var misses = 0
    /// Misses that read nothing (`read_from_disk 0`: a brand-new table).
    public var emptyGets = 0
    /// Misses whose victim held a table (not an empty slot; entries emptied by the clean timer
    /// or a freed refcount block are empty).
    public var evictions = 0
    /// Evictions whose victim was dirty and was written back first.
    public var dirtyEvictions: Int?
    /// Entry write-backs (`qcow2_cache_entry_flush` lines).
    public var writebacks = 0
    /// `qcow2_cache_flush` lines (write, flush and dependency flushes alike).
    public var flushes = 0
    /// Metadata bytes read from the image file: (misses − empty gets) × entry size.
    public var bytesRead: UInt64?
    /// Metadata bytes written to the image file: write-backs × entry size.
    public var bytesWritten: UInt64?
    /// Entries dropped by the cache-clean timer.
    public var cleaned: Int?
    /// Resident cache memory at the end, in bytes.
    public var memoryBytes: UInt64?
    /// Largest resident cache memory, in bytes.
    public var memoryPeakBytes: UInt64?
    /// Time-weighted mean resident memory in bytes (over trace seconds, or over requests for a
    /// trace without timestamps), to 6 significant digits as the report prints it.
    public var memoryMeanBytes: Double?
    /// The misses by cause (the simulator only; they add up to `misses`).
    public var missClasses: MissClasses?

    /// Zero counts.
    public init() {}

    /// The simulator's counters of one cache; `memorySpan` is `SimulationReport.memorySpan`.
    public init(_ s: CacheStats, memorySpan: Double) {
        lookups = s.lookups
        hits = s.hits
        misses = s.misses
        emptyGets = s.emptyGets
        evictions = s.evictions
        dirtyEvictions = s.dirtyEvictions
        writebacks = s.writebacks
        flushes = s.flushes
        bytesRead = s.bytesRead
        bytesWritten = s.bytesWritten
        cleaned = s.cleaned
        memoryBytes = s.memoryBytes
        memoryPeakBytes = s.memoryPeakBytes
        memoryMeanBytes = ReportFormat.rounded(SimulationReport.meanMemory(s, span: memorySpan))
        missClasses = MissClasses(s)
    }

    /// Misses that read the table from the image file (`read_from_disk 1`).
    public var missesReadFromDisk: Int { misses - emptyGets }
    /// hits / lookups (0 without lookups).
    public var hitRate: Double { lookups == 0 ? 0 : Double(hits) / Double(lookups) }
    /// misses / lookups (0 without lookups).
    public var missRate: Double { lookups == 0 ? 0 : Double(misses) / Double(lookups) }

    /// The JSON keys (README, "The JSON reports"); `hit_rate` and `miss_rate` are written, not read.
    enum CodingKeys: String, CodingKey {
        case lookups, hits, misses
        case hitRate = "hit_rate"
        case missRate = "miss_rate"
        case emptyGets = "empty_gets"
        case evictions
        case dirtyEvictions = "dirty_evictions"
        case writebacks, flushes
        case bytesRead = "bytes_read"
        case bytesWritten = "bytes_written"
        case cleaned
        case memoryBytes = "memory_bytes"
        case memoryPeakBytes = "memory_peak_bytes"
        case memoryMeanBytes = "memory_mean_bytes"
        case missClasses = "miss_classes"
    }

    /// Encodes every counter that is known, and the two rates (6 significant digits).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(lookups, forKey: .lookups)
        try c.encode(hits, forKey: .hits)
        try c.encode(misses, forKey: .misses)
        try c.encode(ReportFormat.rounded(hitRate), forKey: .hitRate)
        try c.encode(ReportFormat.rounded(missRate), forKey: .missRate)
        try c.encode(emptyGets, forKey: .emptyGets)
        try c.encode(evictions, forKey: .evictions)
        try c.encodeIfPresent(dirtyEvictions, forKey: .dirtyEvictions)
        try c.encode(writebacks, forKey: .writebacks)
        try c.encode(flushes, forKey: .flushes)
        try c.encodeIfPresent(bytesRead, forKey: .bytesRead)
        try c.encodeIfPresent(bytesWritten, forKey: .bytesWritten)
        try c.encodeIfPresent(cleaned, forKey: .cleaned)
        try c.encodeIfPresent(memoryBytes, forKey: .memoryBytes)
        try c.encodeIfPresent(memoryPeakBytes, forKey: .memoryPeakBytes)
        try c.encodeIfPresent(memoryMeanBytes, forKey: .memoryMeanBytes)
        try c.encodeIfPresent(missClasses, forKey: .missClasses)
    }

    /// Decodes what `encode(to:)` wrote (the rates are derived, not read).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        lookups = try c.decode(Int.self, forKey: .lookups)
        hits = try c.decode(Int.self, forKey: .hits)
        misses = try c.decode(Int.self, forKey: .misses)
        emptyGets = try c.decode(Int.self, forKey: .emptyGets)
        evictions = try c.decode(Int.self, forKey: .evictions)
        dirtyEvictions = try c.decodeIfPresent(Int.self, forKey: .dirtyEvictions)
        writebacks = try c.decode(Int.self, forKey: .writebacks)
        flushes = try c.decode(Int.self, forKey: .flushes)
        bytesRead = try c.decodeIfPresent(UInt64.self, forKey: .bytesRead)
        bytesWritten = try c.decodeIfPresent(UInt64.self, forKey: .bytesWritten)
        cleaned = try c.decodeIfPresent(Int.self, forKey: .cleaned)
        memoryBytes = try c.decodeIfPresent(UInt64.self, forKey: .memoryBytes)
        memoryPeakBytes = try c.decodeIfPresent(UInt64.self, forKey: .memoryPeakBytes)
        memoryMeanBytes = try c.decodeIfPresent(Double.self, forKey: .memoryMeanBytes)
        missClasses = try c.decodeIfPresent(MissClasses.self, forKey: .missClasses)
    }
}

/// A cache's misses by cause: the first load of a table in the session (cold), a table replaced by
/// another before (evicted: capacity), dropped by the cache-clean timer (cleaned), or discarded
/// because its cluster was freed (discarded). The four add up to the misses.
public struct MissClasses: Codable, Equatable, Sendable {
    /// First loads.
    public var cold: Int
    /// Capacity misses.
    public var evicted: Int
    /// Misses of tables the clean timer dropped.
    public var cleaned: Int
    /// Misses of tables discarded when their cluster was freed.
    public var discarded: Int

    /// The classes of `s`.
    public init(_ s: CacheStats) {
        cold = s.missesCold
        evicted = s.missesEvicted
        cleaned = s.missesCleaned
        discarded = s.missesDiscarded
    }

    /// The sum (equal to the misses).
    public var total: Int { cold + evicted + cleaned + discarded }
}

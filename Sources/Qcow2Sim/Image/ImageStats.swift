/// Per-image counters beyond the two caches' own (`CacheStats`).
public struct ImageStats: Equatable, Sendable {
    /// Data clusters allocated (ALLOCATE_NEW).
    public var clustersAllocated: UInt64 = 0
    /// L2 tables allocated (ALLOCATE_L2).
    public var l2TablesAllocated: UInt64 = 0
    /// Refcount blocks allocated (REFBLOCK_FOR and refcount-table growth).
    public var refcountBlocksAllocated: UInt64 = 0
    /// Refcount-table growths.
    public var refcountTableGrowths: UInt64 = 0
    /// Bytes read by copy-on-write (through this image's read path).
    public var cowBytesRead: UInt64 = 0
    /// Bytes of COW regions written.
    public var cowBytesWritten: UInt64 = 0
    /// COW regions replaced by a host zero-range write (`qcow2_skip_cow`).
    public var cowSkipped: UInt64 = 0
    /// Guest bytes read from this image's own data clusters.
    public var guestBytesRead: UInt64 = 0
    /// Guest bytes written into this image's data clusters.
    public var guestBytesWritten: UInt64 = 0
    /// Clusters whose refcount dropped to zero.
    public var clustersFreed: UInt64 = 0
    /// Metadata bytes written outside the caches (L1 entries, refcount-table entries, tables).
    public var directMetadataBytesWritten: UInt64 = 0
    /// Times the one-time preallocation probe ran.
    public var preallocationProbes: UInt64 = 0
    /// Cache-clean ticks that fired during the session (§3.7), as QEMU's timer would fire them.
    public var cleanTicks: UInt64 = 0
    /// Of `cleanTicks`, those the simulation actually ran; the others changed nothing and were
    /// skipped (at most three are run per gap between requests).
    public var cleanTicksEvaluated: UInt64 = 0

    /// Zeroed counters.
    public init() {}
}

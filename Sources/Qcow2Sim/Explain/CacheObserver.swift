/// Told about every metadata operation the cache layer applies, before and after it (`explain`
/// shows one request step by step this way). Set as `CacheSystem.observer`; nil on every other
/// run, where it costs one branch per batch.
public protocol CacheObserver: AnyObject {
    /// `op` is about to be applied; `caches` shows the slot state it will act on.
    func willApply(_ op: MetadataOp, caches: any CacheStateView)
    /// `op` has been applied.
    func didApply(_ op: MetadataOp, caches: any CacheStateView)
}

/// A read-only view of the cache layer's slot state, for observers.
public protocol CacheStateView: AnyObject {
    /// The state of image `image`'s cache of kind `kind` (a copy).
    func state(image: Int, kind: CacheKind) -> CacheState
    /// The cache key of image `image`'s table at `offset` (the offset itself, unless one cache
    /// is shared by the chain).
    func cacheKey(image: Int, offset: UInt64) -> UInt64
}

/// One cache's state as QEMU keeps it (qcow2-model.md §3.1): per slot the table offset (0 =
/// empty), the LRU stamp, the pin count (`ref`) and the dirty bit; the cache-wide LRU clock.
public struct CacheState: Sendable, Equatable {
    /// Which cache.
    public var kind: CacheKind
    /// Bytes per slot.
    public var tableSize: UInt64
    /// QEMU's `lru_counter`.
    public var lruClock: UInt64
    /// Cache key per slot (0: empty).
    public var offsets: [UInt64]
    /// LRU stamp per slot (`lru_counter` of the entry, taken at the last release).
    public var stamps: [UInt64]
    /// Pin count per slot.
    public var pins: [Int]
    /// Dirty bit per slot.
    public var dirty: [Bool]
    /// Entries of this cache may be written only after the other cache is flushed (`depends`).
    public var dependsOnOther: Bool
    /// Entries dropped by the clean timer so far.
    public var cleaned: Int
    /// Misses so far by class: cold, evicted, cleaned, discarded (`CacheStats.missesCold` …).
    public var missClasses: [Int]

    /// Number of slots.
    public var count: Int { offsets.count }

    /// QEMU's start index of a lookup of `key`: `(key / tableSize * 4) mod n` (§3.2).
    public func startIndex(_ key: UInt64) -> Int {
        count == 0 ? 0 : Int(((key / tableSize) &* 4) % UInt64(count))
    }

    /// The slot holding `key`, or nil.
    public func slot(of key: UInt64) -> Int? { key == 0 ? nil : offsets.firstIndex(of: key) }
}

extension CacheSystem: CacheStateView {
    /// Witness of the `CacheStateView` requirement.
    public func state(image: Int, kind: CacheKind) -> CacheState {
        let im = images[image]
        let c = im[kind]
        let n = c.count
        return CacheState(
            kind: kind, tableSize: c.tableSize, lruClock: c.lruClock, offsets: (0..<n).map { c.offsets[$0] },
            stamps: (0..<n).map { c.lru[$0] }, pins: (0..<n).map { Int(c.pins[$0]) }, dirty: (0..<n).map { c.dirty[$0] },
            dependsOnOther: im.depends(kind), cleaned: c.stats.cleaned,
            missClasses: [c.stats.missesCold, c.stats.missesEvicted, c.stats.missesCleaned, c.stats.missesDiscarded])
    }

    /// Witness of the `CacheStateView` requirement.
    public func cacheKey(image: Int, offset: UInt64) -> UInt64 { offset | images[image].tag }
}

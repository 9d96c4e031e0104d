/// QEMU 7.2's policy (`qcow2_cache_get` in block/qcow2-cache.c): the victim is the unpinned entry
/// with the smallest LRU stamp, and the stamp is taken when the last user releases the entry
/// (`qcow2_cache_put`), not at lookup. Hits do not reorder. Stamps are unique, so this is "least
/// recently released".
public struct QemuPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "qemu"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "QEMU 7.2: least recently released (stamp at PUT), start-index scan"
    private var order: RecencyList
    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) { order = RecencyList(capacity: capacity) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ slot: Int, offset: UInt64) { order.moveToBack(slot) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) { order.moveToBack(slot) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ slot: Int, offset: UInt64) { order.remove(slot) }
    /// A repeated hit (and release) of one slot moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        guard count > 0 else { return }
        hit(slot, offset: offset)
        if released { self.released(slot, offset: offset) }
    }
    /// A fill and its release (both move the slot to the back: once is enough).
    @inline(__always) public mutating func filledReleased(_ slot: Int, offset: UInt64) { order.moveToBack(slot) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func victim(_ pins: PinCounts) -> Int? { order.firstUnpinned(pins) }
}

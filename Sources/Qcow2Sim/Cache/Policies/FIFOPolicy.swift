/// First in, first out (Belady, IBM Systems Journal 1966): the oldest fill is replaced; hits and
/// releases change nothing.
public struct FIFOPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "fifo"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "FIFO: replace the entry filled longest ago"
    private var order: RecencyList
    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) { order = RecencyList(capacity: capacity) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ slot: Int, offset: UInt64) { order.moveToBack(slot) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ slot: Int, offset: UInt64) { order.remove(slot) }
    /// A repeated hit (and release) of one slot moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        guard count > 0 else { return }
        hit(slot, offset: offset)
        if released { self.released(slot, offset: offset) }
    }
    /// A fill and its release (a release changes nothing).
    @inline(__always) public mutating func filledReleased(_ slot: Int, offset: UInt64) { order.moveToBack(slot) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func victim(_ pins: PinCounts) -> Int? { order.firstUnpinned(pins) }
}

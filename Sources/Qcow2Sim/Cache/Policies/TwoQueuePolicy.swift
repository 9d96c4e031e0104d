/// 2Q (Johnson, Shasha, "2Q: A Low Overhead High Performance Buffer Management Replacement
/// Algorithm", VLDB 1994, §2.2 "full version"): a FIFO `A1in` of tables seen once, a ghost FIFO
/// `A1out` of offsets recently evicted from `A1in`, and an LRU `Am` of tables seen again.
///
/// Sizes are the paper's recommendation (§3, "Kin should be 25% of the page slots and Kout should
/// hold identifiers for 50%"): `Kin = max(1, capacity / 4)` entries, `Kout = max(1, capacity / 2)`
/// offsets. A miss on an offset in `A1out` goes to `Am`; any other miss goes to `A1in`; a hit in
/// `Am` moves the table to its most recent end, a hit in `A1in` changes nothing (correlated
/// references). To reclaim a slot: while `A1in` holds more than `Kin`, its oldest unpinned table
/// is evicted and its offset remembered in `A1out` (the oldest offsets there forgotten past
/// `Kout` once the incoming table is placed); otherwise `Am`'s least recently used unpinned table is evicted and forgotten. If the
/// list the rule names has only pinned tables, the other list's candidate is taken.
public struct TwoQueuePolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "2q"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "2Q (Johnson & Shasha, VLDB 1994): A1in FIFO 25%, A1out ghosts 50%, Am LRU"
    private var a1in: SlotList
    private var am: SlotList
    private var a1out = GhostList()
    private let offsets: SlotBuffer<UInt64>
    /// `Kin`: the most tables `A1in` keeps before it gives up its oldest.
    public let kin: Int
    /// `Kout`: the most offsets `A1out` remembers.
    public let kout: Int

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        a1in = SlotList(capacity: capacity)
        am = SlotList(capacity: capacity)
        offsets = SlotBuffer(count: capacity, repeating: 0)
        kin = max(1, capacity / 4)
        kout = max(1, capacity / 2)
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func filled(_ slot: Int, offset: UInt64) {
        a1in.remove(slot)
        am.remove(slot)
        offsets[slot] = offset
        if a1out.remove(offset) { am.append(slot) } else { a1in.append(slot) }
        // Trimmed only now: the paper tests `X ∈ A1out` before reclaiming, so the offset just
        // pushed by this miss's eviction must not push out the incoming one.
        a1out.trim(to: kout)
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {
        if am.contains(slot) { am.append(slot) }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    public mutating func emptied(_ slot: Int, offset: UInt64) {
        a1in.remove(slot)
        am.remove(slot)
    }
    /// A repeated hit moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        if count > 0 { hit(slot, offset: offset) }
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        let fromA1in = a1in.count > kin
        if fromA1in, let v = a1in.firstUnpinned(pins) { return evictFromA1in(v) }
        if let v = am.firstUnpinned(pins) {
            am.remove(v)
            return v
        }
        if let v = a1in.firstUnpinned(pins) { return evictFromA1in(v) }
        return nil
    }

    private mutating func evictFromA1in(_ v: Int) -> Int {
        a1in.remove(v)
        a1out.insert(offsets[v])
        return v
    }
}

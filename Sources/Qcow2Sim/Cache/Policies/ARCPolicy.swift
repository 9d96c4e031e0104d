/// ARC (Megiddo, Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST 2003, Fig. 4):
/// resident tables in `T1` (seen once recently) and `T2` (seen at least twice), both LRU, and
/// ghost lists `B1`/`B2` of the table offsets last evicted from each, with a target size `p` for
/// `T1` that adapts: a miss on an offset in `B1` raises `p` by `max(|B2| / |B1|, 1)`, one in
/// `B2` lowers it by `max(|B1| / |B2|, 1)`, and the table goes to `T2`; any other miss goes to
/// `T1`. A hit moves the table to `T2`'s most recent end. REPLACE evicts `T1`'s least recently
/// used table (its offset to `B1`) when `|T1| > p`, else `T2`'s (to `B2`); the ghosts are kept
/// to `|T1| + |B1| ≤ c` and `|T1| + |T2| + |B1| + |B2| ≤ 2c`.
///
/// Two differences from the paper, both forced by the seam (`victim` is asked before the cache
/// says which table comes in): REPLACE does not see the incoming offset, so its tie rule
/// "`x ∈ B2` and `|T1| = p`" is dropped (`|T1| > p` alone decides), and `p` adapts when the
/// table is filled, i.e. from the next miss on. Pinned tables are passed over; if the list
/// REPLACE names has only pinned tables, the other's least recently used is taken.
public struct ARCPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "arc"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "ARC (Megiddo & Modha, FAST 2003): T1/T2 with ghost lists B1/B2 and an adaptive target"
    private var t1: SlotList
    private var t2: SlotList
    private var b1 = GhostList()
    private var b2 = GhostList()
    private let offsets: SlotBuffer<UInt64>
    private let c: Int
    /// The adaptive target size of `T1`.
    public private(set) var p = 0

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        t1 = SlotList(capacity: capacity)
        t2 = SlotList(capacity: capacity)
        offsets = SlotBuffer(count: capacity, repeating: 0)
        c = capacity
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func filled(_ slot: Int, offset: UInt64) {
        t1.remove(slot)
        t2.remove(slot)
        offsets[slot] = offset
        if b1.contains(offset) {
            // Case II: a ghost hit in B1 favours recency.
            p = min(c, p + max(b2.count / max(b1.count, 1), 1))
            b1.remove(offset)
            t2.append(slot)
        } else if b2.contains(offset) {
            // Case III: a ghost hit in B2 favours frequency.
            p = max(0, p - max(b1.count / max(b2.count, 1), 1))
            b2.remove(offset)
            t2.append(slot)
        } else {
            // Case IV.
            t1.append(slot)
            b1.trim(to: c - t1.count)
        }
        // Trimmed only once the incoming table is placed (the paper tests `x ∈ B1 ∪ B2` first).
        b2.trim(to: 2 * c - t1.count - t2.count - b1.count)
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {
        // Case I.
        t1.remove(slot)
        t2.append(slot)
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    public mutating func emptied(_ slot: Int, offset: UInt64) {
        t1.remove(slot)
        t2.remove(slot)
    }
    /// A repeated hit moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        if count > 0 { hit(slot, offset: offset) }
    }

    /// REPLACE.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        let fromT1 = t1.count > 0 && t1.count > p
        if fromT1, let v = t1.firstUnpinned(pins) { return evict(v, fromT1: true) }
        if let v = t2.firstUnpinned(pins) { return evict(v, fromT1: false) }
        if let v = t1.firstUnpinned(pins) { return evict(v, fromT1: true) }
        return nil
    }

    private mutating func evict(_ v: Int, fromT1: Bool) -> Int {
        if fromT1 {
            t1.remove(v)
            b1.insert(offsets[v])
        } else {
            t2.remove(v)
            b2.insert(offsets[v])
        }
        return v
    }
}

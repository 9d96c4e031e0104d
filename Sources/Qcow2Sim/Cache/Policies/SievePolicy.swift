/// SIEVE (Zhang, Yang, Yue, Vigfusson, Rashmi, "SIEVE is Simpler than LRU: an Efficient
/// Turn-Key Eviction Algorithm for Web Caches", NSDI 2024, Algorithm 1): one FIFO queue, a
/// visited bit per entry and a hand. A hit sets the bit; entries never move. To evict, the hand
/// walks from its position (the oldest entry at first) towards newer ones, clearing set bits,
/// and evicts the first entry whose bit is clear; it then rests on the next newer entry, wrapping
/// to the oldest past the newest. A fill goes to the newest end with its bit clear.
///
/// Pinned slots are passed without touching their bit. Only lookups count as visits.
public struct SievePolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "sieve"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "SIEVE (Zhang et al., NSDI 2024): FIFO with visited bits and a hand that never moves entries"
    private var queue: SlotList
    private let visited: SlotBuffer<Bool>
    /// The hand (-1: start at the oldest).
    private var hand: Int32 = -1

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        queue = SlotList(capacity: capacity)
        visited = SlotBuffer(count: capacity, repeating: false)
    }

    /// The new table is the newest entry (the victim's slot leaves its old place).
    public mutating func filled(_ slot: Int, offset: UInt64) {
        visited[slot] = false
        if Int(hand) == slot { hand = queue.next(slot) }
        queue.append(slot)
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) { visited[slot] = true }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    public mutating func emptied(_ slot: Int, offset: UInt64) {
        if Int(hand) == slot { hand = queue.next(slot) }
        queue.remove(slot)
        visited[slot] = false
    }
    /// A repeated hit sets the same bit: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        if count > 0 { visited[slot] = true }
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        guard queue.count > 0 else { return nil }
        var i = hand >= 0 ? Int(hand) : Int(queue.head)
        for _ in 0..<(2 * queue.count + 1) {
            let newer = queue.next(i) >= 0 ? Int(queue.next(i)) : Int(queue.head)
            if !pins.isPinned(i) {
                if !visited[i] {
                    hand = queue.next(i)
                    return i
                }
                visited[i] = false
            }
            i = newer
        }
        return nil
    }
}

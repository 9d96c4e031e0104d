/// CLOCK, or second chance (Corbató, "A Paging Experiment with the Multics System", MIT Project
/// MAC MAC-M-384, 1968): the filled slots form a circle in fill order with a hand; a hit sets
/// the slot's reference bit. To evict, the hand passes over the circle: a referenced slot loses
/// its bit and is passed (its second chance), the first unreferenced one is the victim and the
/// hand stops just past it. A fill enters the circle just behind the hand (the newest position)
/// with its bit clear: the miss itself is not a reuse.
///
/// Pinned slots are passed without touching their bit (they cannot be replaced now, and a
/// caller holding a table is not a reuse). Only lookups (`hit`) count as references; QEMU's
/// release (`released`) does not.
public struct ClockPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "clock"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "CLOCK / second chance (Corbató 1968): reference bit per entry, a hand clears and passes"
    private var ring: SlotList
    private let referenced: SlotBuffer<Bool>
    /// The slot the hand points at (-1: the oldest).
    private var hand: Int32 = -1

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        ring = SlotList(capacity: capacity)
        referenced = SlotBuffer(count: capacity, repeating: false)
    }

    /// A victim's slot keeps its place in the circle (the new table takes the frame the hand
    /// just passed); a slot that was empty goes in just behind the hand, the newest position.
    public mutating func filled(_ slot: Int, offset: UInt64) {
        referenced[slot] = false
        guard !ring.contains(slot) else { return }
        if hand >= 0 { ring.insert(slot, before: Int(hand)) } else { ring.append(slot) }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) { referenced[slot] = true }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    public mutating func emptied(_ slot: Int, offset: UInt64) {
        if Int(hand) == slot { hand = ring.next(slot) }
        ring.remove(slot)
        referenced[slot] = false
    }
    /// A repeated hit sets the same bit: one is enough.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        if count > 0 { referenced[slot] = true }
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        guard ring.count > 0 else { return nil }
        var i = hand >= 0 ? Int(hand) : Int(ring.head)
        // Two full turns clear every unpinned bit; a third finds nothing only if all are pinned.
        for _ in 0..<(2 * ring.count + 1) {
            let after = ring.next(i) >= 0 ? Int(ring.next(i)) : Int(ring.head)
            if !pins.isPinned(i) {
                if !referenced[i] {
                    hand = Int32(after)
                    return i
                }
                referenced[i] = false
            }
            i = after
        }
        return nil
    }
}

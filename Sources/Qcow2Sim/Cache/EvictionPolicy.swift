/// Chooses which filled cache entry to replace on a miss.
///
/// The cache (`MetadataCache`) owns slot state (offset, pin count, dirty bit, QEMU's LRU stamp)
/// and always prefers an empty slot, the first one in circular order from QEMU's start index
/// (qcow2-model.md §3.2). A policy only orders the *filled* slots; it is told about every fill,
/// hit, release and emptying, and names the victim among filled slots that are not pinned.
///
/// A new policy is one type conforming to this protocol plus one line in `PolicyRegistry`.
public protocol EvictionPolicy {
    /// The name used on the command line (`--policy NAME`).
    static var name: String { get }
    /// One line for `--help`.
    static var summary: String { get }
    /// A policy for one cache (`kind`) of `capacity` slots, all empty.
    init(capacity: Int, kind: CacheKind)
    /// Slot `slot` was filled with the table at `offset` (a miss).
    mutating func filled(_ slot: Int, offset: UInt64)
    /// Slot `slot`, holding `offset`, was found by a lookup (a hit).
    mutating func hit(_ slot: Int, offset: UInt64)
    /// The last user of slot `slot` released it (QEMU's PUT taking the pin count to 0).
    mutating func released(_ slot: Int, offset: UInt64)
    /// Slot `slot` was emptied (discarded or cleaned); it is no longer a candidate.
    mutating func emptied(_ slot: Int, offset: UInt64)
    /// The filled slot to replace, never a pinned one; nil if every one is pinned. Called only
    /// when no slot is empty; the policy may update its state (a CLOCK hand, ARC's ghosts), and
    /// is told `filled` for the same slot right after.
    mutating func victim(_ pins: PinCounts) -> Int?
    /// `count` lookups of slot `slot` in a row, each a `hit` followed (when `released`) by the
    /// `released` of the same slot: QEMU's per-cluster refcount reads of one block (§4.1, §4.2).
    /// The default replays them one by one; a policy for which a repeat changes nothing may do
    /// one.
    mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool)
    /// `filled` then `released` of the same slot: a GET that missed, released right away (the
    /// default makes the two calls; a policy for which the release changes nothing more may do
    /// one).
    mutating func filledReleased(_ slot: Int, offset: UInt64)
}

extension EvictionPolicy {
    /// `filled`, then `released`.
    @inline(__always) public mutating func filledReleased(_ slot: Int, offset: UInt64) {
        filled(slot, offset: offset)
        released(slot, offset: offset)
    }

    /// Replays the lookups one by one.
    public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {
        for _ in 0..<count {
            hit(slot, offset: offset)
            if released { self.released(slot, offset: offset) }
        }
    }
}

/// An intrusive doubly linked list over slot indices, ordered from least to most recently
/// touched. Shared by the recency-ordered policies.
///
/// Circular, through a sentinel node (index `capacity`), so linking and unlinking take no branch
/// on the list's ends; an unlinked slot's `next` is -1.
///
/// - Complexity: O(1) append, remove and move-to-back.
public struct RecencyList {
    /// A slot's neighbours, side by side: one base pointer and one cache line per step.
    private struct Links {
        var prev: Int32
        var next: Int32
    }
    private let links: SlotBuffer<Links>
    /// The sentinel: its `next` is the oldest slot, its `prev` the newest (itself when empty).
    private let end: Int32

    /// An empty list over `capacity` slots.
    public init(capacity: Int) {
        links = SlotBuffer(count: capacity + 1, repeating: Links(prev: -1, next: -1))
        end = Int32(capacity)
        links[capacity] = Links(prev: end, next: end)
    }

    /// First (oldest) slot, or -1.
    public var head: Int32 {
        let h = links[Int(end)].next
        return h == end ? -1 : h
    }

    /// Appends `i` at the back, unlinking it first if present.
    @inline(__always)
    public mutating func moveToBack(_ i: Int) {
        // Slot numbers are below the capacity, an `Int32` (truncating: no range check per call).
        let i32 = Int32(truncatingIfNeeded: i)
        let last = links[Int(end)].prev
        if last == i32 { return }
        let l = links[i]
        if l.next >= 0 {
            links[Int(l.prev)].next = l.next
            links[Int(l.next)].prev = l.prev
        }
        links[i] = Links(prev: last, next: end)
        links[Int(last)].next = i32
        links[Int(end)].prev = i32
    }

    /// Unlinks `i` if present.
    @inline(__always)
    public mutating func remove(_ i: Int) {
        let l = links[i]
        guard l.next >= 0 else { return }
        links[Int(l.prev)].next = l.next
        links[Int(l.next)].prev = l.prev
        links[i].next = -1
    }

    /// The first slot from the front whose pin count is 0.
    @inline(__always)
    public func firstUnpinned(_ pins: PinCounts) -> Int? {
        var i = links[Int(end)].next
        while i != end {
            // A listed slot is below the capacity, the pin counts' count.
            if !pins.isPinned(unchecked: Int(i)) { return Int(i) }
            i = links[Int(i)].next
        }
        return nil
    }
}

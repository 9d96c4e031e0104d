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
}

extension EvictionPolicy {
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
/// - Complexity: O(1) append, remove and move-to-back.
public struct RecencyList {
    private let prev: SlotBuffer<Int32>
    private let next: SlotBuffer<Int32>
    private let linked: SlotBuffer<Bool>
    /// First (oldest) slot, or -1.
    public private(set) var head: Int32 = -1
    private var tail: Int32 = -1

    /// An empty list over `capacity` slots.
    public init(capacity: Int) {
        prev = SlotBuffer(count: capacity, repeating: -1)
        next = SlotBuffer(count: capacity, repeating: -1)
        linked = SlotBuffer(count: capacity, repeating: false)
    }

    /// Appends `i` at the back, unlinking it first if present.
    @inline(__always)
    public mutating func moveToBack(_ i: Int) {
        // Slot numbers are below the capacity, an `Int32` (truncating: no range check per call).
        let i32 = Int32(truncatingIfNeeded: i)
        if linked[i] {
            if tail == i32 { return }
            remove(i)
        }
        prev[i] = tail
        next[i] = -1
        if tail >= 0 { next[Int(tail)] = i32 } else { head = i32 }
        tail = i32
        linked[i] = true
    }

    /// Unlinks `i` if present.
    @inline(__always)
    public mutating func remove(_ i: Int) {
        guard linked[i] else { return }
        let p = prev[i], n = next[i]
        if p >= 0 { next[Int(p)] = n } else { head = n }
        if n >= 0 { prev[Int(n)] = p } else { tail = p }
        linked[i] = false
    }

    /// The first slot from the front whose pin count is 0.
    @inline(__always)
    public func firstUnpinned(_ pins: PinCounts) -> Int? {
        var i = head
        while i >= 0 {
            if !pins.isPinned(Int(i)) { return Int(i) }
            i = next[Int(i)]
        }
        return nil
    }
}

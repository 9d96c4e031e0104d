/// A hash map from a non-zero table offset to a cache slot, replacing QEMU's linear scan for
/// hits (offsets in one cache are unique, so the slot found is the same).
///
/// Separate chaining through the slots: each bucket holds the first slot of its chain and each
/// slot its neighbours, so a slot is in at most one chain and the index needs no more memory than
/// 16 bytes per slot and one per bucket. Chosen over `Dictionary` because the hit path runs
/// once per request and `qcow2sim-bench` showed the hashing cost dominating it; chosen over
/// linear probing because every miss of a full cache removes one key and inserts another, and
/// probing's backward-shift deletion cost ~80 instructions per miss (callgrind, read-1e6).
/// Doubly linked, so the removal of a slot (whose number the caller knows) neither hashes its key
/// again nor walks the chain.
struct OffsetIndex {
    /// A slot's key and neighbours in its chain, side by side (one cache line per step).
    private struct Node {
        /// The key the slot is indexed under (0: none; offset 0 is the image header, never cached).
        var key: UInt64
        /// Next slot in the same chain (-1: last).
        var next: Int32
        /// Previous slot in the same chain; for a chain's first slot, `~bucket` (negative).
        var prev: Int32
    }
    /// First slot of each bucket's chain (-1: empty).
    private let heads: SlotBuffer<Int32>
    private let nodes: SlotBuffer<Node>
    private let mask: Int

    /// A map for slots `0 ..< capacity`, with at least twice as many buckets.
    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        heads = SlotBuffer(count: size, repeating: -1)
        nodes = SlotBuffer(count: capacity, repeating: Node(key: 0, next: -1, prev: -1))
        mask = size - 1
    }

    @inline(__always) private func bucket(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) &>> 32) & mask
    }

    /// The slot holding `key`, or nil.
    @inline(__always) func find(_ key: UInt64) -> Int? {
        // Key 0 marks an unindexed slot; offset 0 can come from a damaged image (a freed header
        // cluster), so it is answered here rather than trusted away.
        if key == 0 { return nil }
        var s = heads[bucket(key)]
        while s >= 0 {
            let i = Int(truncatingIfNeeded: s)
            let n = nodes[i]
            if n.key == key { return i }
            s = n.next
        }
        return nil
    }

    /// Maps `key` (not present) to `slot` (not indexed).
    @inline(__always) mutating func insert(_ key: UInt64, _ slot: Int) {
        let b = bucket(key)
        let h = heads[b]
        nodes[slot] = Node(key: key, next: h, prev: ~Int32(truncatingIfNeeded: b))
        if h >= 0 { nodes[Int(truncatingIfNeeded: h)].prev = Int32(truncatingIfNeeded: slot) }
        heads[b] = Int32(truncatingIfNeeded: slot)
    }

    /// Removes the key `slot` is indexed under, if any.
    @inline(__always) mutating func remove(slot: Int) {
        let n = nodes[slot]
        if n.key == 0 { return }
        if n.prev >= 0 {
            nodes[Int(truncatingIfNeeded: n.prev)].next = n.next
        } else {
            heads[Int(truncatingIfNeeded: ~n.prev)] = n.next
        }
        if n.next >= 0 { nodes[Int(truncatingIfNeeded: n.next)].prev = n.prev }
        nodes[slot].key = 0
    }
}

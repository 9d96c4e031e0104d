/// A hash map from a non-zero table offset to a cache slot, replacing QEMU's linear scan for
/// hits (offsets in one cache are unique, so the slot found is the same).
///
/// Separate chaining through the slots: each bucket holds the first slot of its chain and each
/// slot the next one, so a slot is in at most one chain and the index needs no more memory than
/// two integers per slot and one per bucket. Chosen over `Dictionary` because the hit path runs
/// once per request and `qcow2sim-bench` showed the hashing cost dominating it; chosen over
/// linear probing because every miss of a full cache removes one key and inserts another, and
/// probing's backward-shift deletion cost ~80 instructions per miss (callgrind, read-1e6), where
/// unlinking a slot whose number the caller knows costs a few.
struct OffsetIndex {
    /// First slot of each bucket's chain (-1: empty).
    private let heads: SlotBuffer<Int32>
    /// Next slot in the same chain (-1: last).
    private let next: SlotBuffer<Int32>
    /// The key each slot is indexed under (0: none; offset 0 is the image header, never cached).
    private let keys: SlotBuffer<UInt64>
    private let mask: Int

    /// A map for slots `0 ..< capacity`, with at least twice as many buckets.
    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        heads = SlotBuffer(count: size, repeating: -1)
        next = SlotBuffer(count: capacity, repeating: -1)
        keys = SlotBuffer(count: capacity, repeating: 0)
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
            if keys[i] == key { return i }
            s = next[i]
        }
        return nil
    }

    /// Maps `key` (not present) to `slot` (not indexed).
    @inline(__always) mutating func insert(_ key: UInt64, _ slot: Int) {
        let b = bucket(key)
        keys[slot] = key
        next[slot] = heads[b]
        heads[b] = Int32(truncatingIfNeeded: slot)
    }

    /// Removes the key `slot` is indexed under, if any.
    @inline(__always) mutating func remove(slot: Int) {
        let key = keys[slot]
        if key == 0 { return }
        let b = bucket(key)
        let s32 = Int32(truncatingIfNeeded: slot)
        var p = heads[b]
        if p == s32 {
            heads[b] = next[slot]
        } else {
            // `slot` is in this chain: the walk ends at it.
            while next[Int(truncatingIfNeeded: p)] != s32 { p = next[Int(truncatingIfNeeded: p)] }
            next[Int(truncatingIfNeeded: p)] = next[slot]
        }
        next[slot] = -1
        keys[slot] = 0
    }
}

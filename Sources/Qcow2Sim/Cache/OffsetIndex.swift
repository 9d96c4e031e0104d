/// An open-addressing hash map from a non-zero table offset to a cache slot, replacing QEMU's
/// linear scan for hits (offsets in one cache are unique, so the slot found is the same).
///
/// Linear probing with backward-shift deletion; key 0 marks an empty bucket (offset 0 is the
/// image header and never cached). Chosen over `Dictionary` because the hit path runs once per
/// request and `qcow2sim-bench` showed the hashing cost dominating it.
struct OffsetIndex {
    private let keys: SlotBuffer<UInt64>
    private let values: SlotBuffer<Int32>
    private let mask: Int

    /// A map able to hold `capacity` keys at a load factor of at most 1/2.
    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = SlotBuffer(count: size, repeating: 0)
        values = SlotBuffer(count: size, repeating: -1)
        mask = size - 1
    }

    @inline(__always) private func bucket(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The slot holding `key`, or nil.
    @inline(__always) func find(_ key: UInt64) -> Int? {
        // Key 0 is the empty marker and would "find" slot -1; offset 0 can come from a damaged
        // image (a freed header cluster), so it is answered here rather than trusted away.
        if key == 0 { return nil }
        var b = bucket(key)
        while true {
            let k = keys[b]
            if k == key { return Int(values[b]) }
            if k == 0 { return nil }
            b = (b + 1) & mask
        }
    }

    /// Maps `key` (not present) to `slot`.
    @inline(__always) mutating func insert(_ key: UInt64, _ slot: Int) {
        var b = bucket(key)
        while keys[b] != 0 { b = (b + 1) & mask }
        keys[b] = key
        values[b] = Int32(slot)
    }

    /// Removes `key` if present.
    mutating func remove(_ key: UInt64) {
        var b = bucket(key)
        while keys[b] != key {
            if keys[b] == 0 { return }
            b = (b + 1) & mask
        }
        // Backward-shift deletion keeps every probe chain unbroken.
        var hole = b
        var j = b
        while true {
            j = (j + 1) & mask
            let k = keys[j]
            if k == 0 { break }
            let home = bucket(k)
            let distHole = (hole - home) & mask
            let distJ = (j - home) & mask
            if distHole <= distJ {
                keys[hole] = k
                values[hole] = values[j]
                hole = j
            }
        }
        keys[hole] = 0
        values[hole] = -1
    }
}

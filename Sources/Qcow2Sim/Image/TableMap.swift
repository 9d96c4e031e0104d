/// A map from a table's host offset to its object, for the stores' L2 tables (`L2Store`) and
/// refcount blocks (`RefcountStore`): open addressing with linear probing over arrays, at most
/// half full, no removal (a store keeps every table it ever held).
///
/// Why not `Dictionary`: behind the stores' one-entry and direct-mapped caches, a lookup that
/// misses them paid SipHash: `qcow2sim-bench --single write50-1e6-4T`, whose 8 192 L2 tables
/// overflow the 4 096-slot cache, ran 2 587 instructions per request with the dictionary and
/// 2 540 with this map (callgrind, `Replay.run`). A probe here is one multiply and, at half load,
/// about one and a half compares. The arrays keep the map a value, as the dictionary was.
struct TableMap<Value: AnyObject> {
    /// Marks a free slot: table offsets are below 2^56 (`EntryBits.offsetMask`).
    private static var free: UInt64 { .max }
    private var keys = [UInt64](repeating: TableMap.free, count: 16)
    private var objects = [Value?](repeating: nil, count: 16)
    private var mask = 15
    /// Number of tables held.
    private(set) var count = 0

    @inline(__always) private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) &>> 32) & mask
    }

    /// The slot holding `key`, or the free slot where it would go.
    @inline(__always) private func slot(_ key: UInt64) -> Int {
        var i = home(key)
        while true {
            let k = keys[i]
            if k == key || k == Self.free { return i }
            i = (i &+ 1) & mask
        }
    }

    /// The table at `key`, or nil.
    @inline(__always) subscript(key: UInt64) -> Value? {
        if key == Self.free { return nil }
        return objects[slot(key)]
    }

    /// Puts `value` at `key` (replacing the table there, if any).
    mutating func set(_ key: UInt64, _ value: Value) {
        precondition(key != Self.free, "TableMap: offset 2^64-1 is no table offset")
        var i = slot(key)
        if keys[i] == Self.free {
            if 2 * (count + 1) > keys.count {
                grow()
                i = slot(key)
            }
            keys[i] = key
            count += 1
        }
        objects[i] = value
    }

    /// Every table, in no particular order.
    var values: [Value] { objects.compactMap { $0 } }

    private mutating func grow() {
        let oldKeys = keys, oldObjects = objects
        let n = keys.count * 2
        keys = [UInt64](repeating: Self.free, count: n)
        objects = [Value?](repeating: nil, count: n)
        mask = n - 1
        for j in oldKeys.indices where oldKeys[j] != Self.free {
            let i = slot(oldKeys[j])
            keys[i] = oldKeys[j]
            objects[i] = oldObjects[j]
        }
    }
}

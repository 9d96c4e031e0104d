/// The scattered entries of one L2 table: a small open-addressing hash map (linear probing, at
/// most three quarters full) from entry index to the entry word and, with extended L2, its bitmap.
///
/// Why a hash map: uniform random writes over a large image set a few dozen entries in each of
/// tens of thousands of tables (10^7 requests over 64 TiB: 38 per 8192-entry table); a full
/// array per table cost 8 GiB there, and a sorted list costs a binary search per lookup, while
/// a probe here is one multiply and a compare or a few in one cache line. Memory is
/// `capacity * slotBytes`, at most 2.7 times the entries' own size and never more than the
/// table's dense words (`L2Store` switches to those first). Three quarters rather than half
/// full: on this machine a page fault costs about 15 µs of system time, and the 10^7-request
/// run above faulted 65 000 pages at half full (1.1 s), 42 000 at three quarters (0.4 s).
///
/// The memory is raw and owned by the one `L2Store.Table` that holds this value (its `deinit`
/// calls `deallocate`); copies alias it, so the table never hands a copy out (`copy()` makes an
/// independent one).
struct SparseEntries {
    /// Marks a free slot (no table has 2^32 entries).
    static let emptyKey = UInt32.max
    /// The first allocation's slot count.
    static let minCapacity = 8

    // 18 bytes in all: every L2 table of the store holds one, and a preallocated 64 TiB image
    // has 131072 tables.
    private var keys: UnsafeMutablePointer<UInt32>?
    @inline(__always) private var values: UnsafeMutablePointer<UInt64>? {
        // Values follow the keys in one allocation (8-byte aligned: capacity ≥ 8).
        keys.map { UnsafeMutableRawPointer($0 + capacity).assumingMemoryBound(to: UInt64.self) }
    }
    private var storedCount: UInt32 = 0
    private var storedCapacity: UInt32 = 0
    /// `64 - log2(capacity)`: the multiplicative hash keeps the product's top bits.
    private var shift: UInt8 = 64
    private let extended: Bool

    /// Entries held.
    @inline(__always) var count: Int { Int(storedCount) }
    /// Slots (0 before the first entry, else a power of 2 ≥ `minCapacity`).
    @inline(__always) var capacity: Int { Int(storedCapacity) }
    /// Words per entry: 1, or 2 with extended L2 (entry word, then bitmap).
    @inline(__always) var wordsPerEntry: Int { extended ? 2 : 1 }

    init(wordsPerEntry: Int) { extended = wordsPerEntry == 2 }

    /// Whether `entries` entries may share `capacity` slots (at most three quarters full).
    @inline(__always) static func fits(_ entries: Int, _ capacity: Int) -> Bool { 4 * entries <= 3 * capacity }

    /// Bytes of one slot: the key and the entry's words.
    static func slotBytes(wordsPerEntry: Int) -> Int { 4 + 8 * wordsPerEntry }

    /// Bytes held (keys and values).
    var bytes: Int { capacity * Self.slotBytes(wordsPerEntry: wordsPerEntry) }

    /// Fibonacci hashing: the index times 2^64/φ, top bits. Indices in a stride pattern (every
    /// 16th entry) still spread over all slots, which index modulo capacity would not.
    @inline(__always) private func home(_ i: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(truncatingIfNeeded: i) &* 0x9E37_79B9_7F4A_7C15) &>> UInt64(shift))
    }

    /// The slot holding index `i`, or the bitwise complement of the free slot where it would go.
    @inline(__always) private func probe(_ i: Int, _ keys: UnsafeMutablePointer<UInt32>) -> Int {
        let k = UInt32(truncatingIfNeeded: i)
        let mask = capacity &- 1
        var s = home(i)
        while true {
            let x = keys[s]
            if x == k { return s }
            if x == Self.emptyKey { return ~s }
            s = (s + 1) & mask
        }
    }

    /// Entry `i` (word, bitmap; bitmap 0 without extended L2), or nil when it is not held.
    @inline(__always) func get(_ i: Int) -> (word: UInt64, bitmap: UInt64)? {
        guard let keys, let values else { return nil }
        let s = probe(i, keys)
        guard s >= 0 else { return nil }
        if wordsPerEntry == 2 { return (values[2 * s], values[2 * s + 1]) }
        return (values[s], 0)
    }

    /// Sets entry `i`. A new index that would take the map past `maxCapacity` slots is refused
    /// (returns false, nothing changed): the caller then switches the table to dense words.
    mutating func set(_ i: Int, word: UInt64, bitmap: UInt64, maxCapacity: Int) -> Bool {
        if let keys, let values {
            let s = probe(i, keys)
            if s >= 0 {
                store(values, s, word, bitmap)
                return true
            }
            if Self.fits(count + 1, capacity) {
                keys[~s] = UInt32(truncatingIfNeeded: i)
                store(values, ~s, word, bitmap)
                storedCount += 1
                return true
            }
        }
        let newCapacity = max(Self.minCapacity, 2 * capacity)
        guard newCapacity <= maxCapacity else { return false }
        rehash(to: newCapacity)
        guard let keys, let values else { return false }
        let s = ~probe(i, keys)
        keys[s] = UInt32(truncatingIfNeeded: i)
        store(values, s, word, bitmap)
        storedCount += 1
        return true
    }

    @inline(__always) private func store(_ values: UnsafeMutablePointer<UInt64>, _ s: Int, _ word: UInt64, _ bitmap: UInt64) {
        if wordsPerEntry == 2 {
            values[2 * s] = word
            values[2 * s + 1] = bitmap
        } else {
            values[s] = word
        }
    }

    /// One allocation of `capacity` keys (all free) followed by their zeroed values.
    private static func allocate(capacity: Int, wordsPerEntry: Int) -> UnsafeMutablePointer<UInt32> {
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: capacity * slotBytes(wordsPerEntry: wordsPerEntry), alignment: MemoryLayout<UInt64>.alignment)
        let k = raw.initializeMemory(as: UInt32.self, repeating: emptyKey, count: capacity)
        (raw + 4 * capacity).initializeMemory(as: UInt64.self, repeating: 0, count: capacity * wordsPerEntry)
        return k
    }

    /// Moves every entry into `newCapacity` fresh slots.
    private mutating func rehash(to newCapacity: Int) {
        let oldKeys = keys, oldValues = values, oldCapacity = capacity
        let k = Self.allocate(capacity: newCapacity, wordsPerEntry: wordsPerEntry)
        keys = k
        storedCapacity = UInt32(truncatingIfNeeded: newCapacity)
        shift = UInt8(64 - newCapacity.trailingZeroBitCount)
        guard let oldKeys, let oldValues, let v = values else { return }
        // The two layouts apart, so each loop moves its words without an inner loop (rehashing
        // was 47 M of `linkRun`'s 136 M instructions in `write50-1e6`, callgrind).
        if extended {
            for s in 0..<oldCapacity where oldKeys[s] != Self.emptyKey {
                let t = ~probe(Int(oldKeys[s]), k)
                k[t] = oldKeys[s]
                v[2 &* t] = oldValues[2 &* s]
                v[2 &* t &+ 1] = oldValues[2 &* s &+ 1]
            }
        } else {
            for s in 0..<oldCapacity where oldKeys[s] != Self.emptyKey {
                let t = ~probe(Int(oldKeys[s]), k)
                k[t] = oldKeys[s]
                v[t] = oldValues[s]
            }
        }
        UnsafeMutableRawPointer(oldKeys).deallocate()
    }

    /// Calls `body(index, word, bitmap)` for every entry, in slot order.
    func forEach(_ body: (Int, UInt64, UInt64) -> Void) {
        guard let keys, let values else { return }
        for s in 0..<capacity where keys[s] != Self.emptyKey {
            body(Int(keys[s]), values[s * wordsPerEntry], wordsPerEntry == 2 ? values[s * wordsPerEntry + 1] : 0)
        }
    }

    /// An independent copy (COW of a shared table).
    func copy() -> SparseEntries {
        var c = SparseEntries(wordsPerEntry: wordsPerEntry)
        guard let keys else { return c }
        let k = Self.allocate(capacity: capacity, wordsPerEntry: wordsPerEntry)
        UnsafeMutableRawPointer(k).copyMemory(from: keys, byteCount: bytes)
        c.keys = k
        c.storedCount = storedCount
        c.storedCapacity = storedCapacity
        c.shift = shift
        return c
    }

    /// Frees the slots; the map is empty afterwards.
    mutating func deallocate() {
        if let keys { UnsafeMutableRawPointer(keys).deallocate() }
        keys = nil
        storedCount = 0
        storedCapacity = 0
        shift = 64
    }
}

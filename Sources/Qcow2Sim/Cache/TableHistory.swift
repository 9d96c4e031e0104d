import TraceKit

/// Why each table of one cache last left it, for the miss classes (cold, evicted, cleaned,
/// discarded), by table index (`offset / tableSize`), in memory proportional to the tables
/// touched (a damaged image naming offsets near 2^56 costs no more than any other table).
struct TableHistory {
    /// A table's last departure.
    enum Reason: UInt8 {
        /// Never loaded in this session: its next miss is cold.
        case never = 0
        /// Replaced by another table (or resident now).
        case evicted = 1
        /// Dropped by the cache-clean timer.
        case cleaned = 2
        /// Discarded (its cluster was freed).
        case discarded = 3
    }

    /// Open addressing over groups of 32 consecutive tables (slices of one L2 table lie side by
    /// side): each slot holds a group number + 1 (0: empty) and, in the same cache line, the
    /// group's 32 two-bit reasons; linear probing, at most half full, doubled when it would be
    /// fuller. One probe sequence per miss, in memory proportional to the groups touched: for
    /// slices of scattered L2 tables the table stays in the processor's caches (page directories
    /// over the offset space cost two DRAM misses per miss: qcow2sim-bench read-1e7 ran at 2.7×
    /// the CPU time; one slot per table at 1.6×; keys and reasons in two arrays cost two L1
    /// misses per miss instead of one: callgrind --cache-sim, read-1e6).
    ///
    /// A `SlotBuffer` rather than an array: an array store through the cache object pays a
    /// uniqueness check and a bounds check per miss.
    private struct Group {
        var key: UInt64
        var reasons: UInt64
    }
    private var groups = SlotBuffer<Group>(count: 64, repeating: Group(key: 0, reasons: 0))
    private var mask = 63
    private var used = 0

    @inline(__always) private static func hash(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) &>> 20)
    }

    /// The slot holding group `key`, or the empty slot where it would go.
    @inline(__always) private func find(_ key: UInt64) -> Int {
        var i = Self.hash(key) & mask
        while true {
            let k = groups[i].key
            if k == 0 || k == key { return i }
            i = (i &+ 1) & mask
        }
    }

    @inline(__always) mutating func set(_ table: UInt64, _ reason: Reason) { _ = exchangeRaw(table, reason) }

    /// Sets `table`'s reason and returns the one it replaces.
    @inline(__always) mutating func exchange(_ table: UInt64, _ reason: Reason) -> Reason {
        Reason(rawValue: exchangeRaw(table, reason)) ?? .never
    }

    /// `exchange`, returning the replaced reason's raw value (0 ... 3).
    @inline(__always) mutating func exchangeRaw(_ table: UInt64, _ reason: Reason) -> UInt8 {
        let key = (table &>> 5) &+ 1
        var i = find(key)
        var g = groups[i]
        if g.key == 0 {
            if 2 * (used + 1) > groups.count {
                grow()
                i = find(key)
            }
            used += 1
            g = Group(key: key, reasons: 0)
        }
        let shift = (table & 31) &* 2
        let old = g.reasons
        g.reasons = (old & ~(3 &<< shift)) | UInt64(reason.rawValue) &<< shift
        groups[i] = g
        return UInt8(truncatingIfNeeded: (old &>> shift) & 3)
    }

    private mutating func grow() {
        let old = groups
        groups = SlotBuffer(count: old.count * 2, repeating: Group(key: 0, reasons: 0))
        mask = groups.count - 1
        for j in 0..<old.count where old[j].key != 0 { groups[find(old[j].key)] = old[j] }
    }

    /// A well-mixed 64-bit value of a table offset (SplitMix64's output function), summed into
    /// `MetadataCache.freshWrittenDigest`.
    @inline(__always)
    static func mix(_ offset: UInt64) -> UInt64 { Xoshiro256StarStar.splitMix64Mix(offset &+ 0x9E37_79B9_7F4A_7C15) }
}

/// The pin counts of a cache's slots, as an eviction policy sees them when it picks a victim.
public struct PinCounts {
    private let pins: UnsafeBufferPointer<Int32>

    init(_ pins: UnsafeBufferPointer<Int32>) { self.pins = pins }

    /// Number of slots.
    public var count: Int { pins.count }

    /// Whether slot `i` is held by a caller (QEMU's `ref > 0`): it cannot be replaced.
    @inline(__always) public func isPinned(_ i: Int) -> Bool {
        precondition(i >= 0 && i < pins.count, "slot \(i) out of range 0..<\(pins.count)")
        return pins[i] != 0
    }

    /// `isPinned` for a slot number known to be in range (a policy's own list of slots).
    @inline(__always) func isPinned(unchecked i: Int) -> Bool {
        assert(i >= 0 && i < pins.count, "slot \(i) out of range 0..<\(pins.count)")
        return pins[i] != 0
    }
}

/// An intrusive doubly linked list over slot indices, oldest first, that (unlike `RecencyList`)
/// lets a policy walk it in both directions: CLOCK's and SIEVE's hands, S3-FIFO's queue scans.
///
/// - Complexity: O(1) append, remove, neighbour lookup.
struct SlotList {
    private let prevLinks: SlotBuffer<Int32>
    private let nextLinks: SlotBuffer<Int32>
    private let linked: SlotBuffer<Bool>
    /// Oldest slot, or -1.
    private(set) var head: Int32 = -1
    /// Newest slot, or -1.
    private(set) var tail: Int32 = -1
    /// Number of slots in the list.
    private(set) var count = 0

    init(capacity: Int) {
        prevLinks = SlotBuffer(count: capacity, repeating: -1)
        nextLinks = SlotBuffer(count: capacity, repeating: -1)
        linked = SlotBuffer(count: capacity, repeating: false)
    }

    /// Whether `i` is in the list.
    @inline(__always) func contains(_ i: Int) -> Bool { linked[i] }
    /// The slot after `i` (newer), or -1.
    @inline(__always) func next(_ i: Int) -> Int32 { nextLinks[i] }
    /// The slot before `i` (older), or -1.
    @inline(__always) func prev(_ i: Int) -> Int32 { prevLinks[i] }

    /// Appends `i` as the newest, unlinking it first if present.
    @inline(__always) mutating func append(_ i: Int) {
        if linked[i] { remove(i) }
        let i32 = Int32(i)
        prevLinks[i] = tail
        nextLinks[i] = -1
        if tail >= 0 { nextLinks[Int(tail)] = i32 } else { head = i32 }
        tail = i32
        linked[i] = true
        count += 1
    }

    /// Links `i` (not in the list) just before `j` (in the list).
    @inline(__always) mutating func insert(_ i: Int, before j: Int) {
        let p = prevLinks[j]
        let i32 = Int32(i)
        prevLinks[i] = p
        nextLinks[i] = Int32(j)
        prevLinks[j] = i32
        if p >= 0 { nextLinks[Int(p)] = i32 } else { head = i32 }
        linked[i] = true
        count += 1
    }

    /// Unlinks `i` if present.
    @inline(__always) mutating func remove(_ i: Int) {
        guard linked[i] else { return }
        let p = prevLinks[i], n = nextLinks[i]
        if p >= 0 { nextLinks[Int(p)] = n } else { head = n }
        if n >= 0 { prevLinks[Int(n)] = p } else { tail = p }
        linked[i] = false
        count -= 1
    }

    /// The oldest slot whose pin count is 0.
    @inline(__always) func firstUnpinned(_ pins: PinCounts) -> Int? {
        var i = head
        while i >= 0 {
            if !pins.isPinned(Int(i)) { return Int(i) }
            i = nextLinks[Int(i)]
        }
        return nil
    }
}

/// A bounded list of table offsets no longer cached (ARC's B1/B2, 2Q's A1out, S3-FIFO's ghost
/// queue), oldest first: insert at the newest end, remove any member, drop the oldest.
///
/// Members are a dictionary from offset to insertion stamp; the order is an array of
/// (offset, stamp) read from `start`, whose stale pairs (removed or re-inserted members) are
/// skipped and periodically compacted away, so every operation is amortized O(1).
struct GhostList {
    private var members: [UInt64: UInt64] = [:]
    private var order: [(offset: UInt64, stamp: UInt64)] = []
    private var start = 0
    private var stamp: UInt64 = 0

    /// Number of offsets remembered.
    var count: Int { members.count }
    /// Whether `offset` is remembered.
    func contains(_ offset: UInt64) -> Bool { members[offset] != nil }

    /// Remembers `offset` as the newest member.
    mutating func insert(_ offset: UInt64) {
        stamp += 1
        members[offset] = stamp
        order.append((offset, stamp))
    }

    /// Forgets `offset`; returns whether it was a member.
    @discardableResult mutating func remove(_ offset: UInt64) -> Bool {
        guard members.removeValue(forKey: offset) != nil else { return false }
        compactIfSparse()
        return true
    }

    /// Forgets the oldest member, if any.
    mutating func removeOldest() {
        while start < order.count {
            let e = order[start]
            start += 1
            if members[e.offset] == e.stamp {
                members.removeValue(forKey: e.offset)
                break
            }
        }
        compactIfSparse()
    }

    /// Drops the oldest members until at most `limit` remain.
    mutating func trim(to limit: Int) {
        while members.count > max(limit, 0) { removeOldest() }
    }

    private mutating func compactIfSparse() {
        guard order.count - start > 2 * members.count + 64 else { return }
        order = order[start...].filter { members[$0.offset] == $0.stamp }
        start = 0
    }
}

/// One of QEMU's two metadata caches of an image (`Qcow2Cache`): `n` slots of `tableSize` bytes,
/// with QEMU's slot state and counters (qcow2-model.md §3).
///
/// The cache tracks slot state only: which table offset a slot holds, its pin count (`ref`), its
/// LRU stamp (taken at release) and its dirty bit. Table *contents* live in the image model's
/// authoritative stores; this is exact because QEMU writes a dirty entry back before replacing
/// it. Operations that involve both caches of an image (write-back with dependencies, flushes)
/// are in `CacheSystem`; this type offers the single-cache primitives.
///
/// Victim choice: an empty slot wins, the first in circular order from the start index
/// `(offset / tableSize * 4) mod n`; otherwise `Policy` names a filled, unpinned slot. With
/// `QemuPolicy` this equals QEMU's scan for the strictly smallest stamp.
///
/// Invariants (checked by `checkInvariants()`): `index` maps exactly the non-empty slots; empty
/// slots are unpinned, clean and stamped 0; `dirtyCount` counts dirty slots.
public final class MetadataCache<Policy: EvictionPolicy> {
    /// Which cache this is.
    public let kind: CacheKind
    /// `is_l2_cache`: true for the L2-table cache.
    public var isL2: Bool { kind == .l2 }
    /// Number of slots.
    @exclusivity(unchecked) public private(set) var count = 0
    /// Bytes per slot (L2 slice size, or the cluster size for refcount blocks).
    @exclusivity(unchecked) public private(set) var tableSize: UInt64 = 512
    @exclusivity(unchecked) private var tableShift: UInt64 = 9

    /// Table offset held by each slot (0 = empty).
    @exclusivity(unchecked) private(set) var offsets = SlotBuffer<UInt64>(count: 0, repeating: 0)
    /// QEMU's LRU stamp per slot (`lru_counter`).
    @exclusivity(unchecked) private(set) var lru = SlotBuffer<UInt64>(count: 0, repeating: 0)
    /// Pin count per slot (`ref`).
    @exclusivity(unchecked) private(set) var pins = SlotBuffer<Int32>(count: 0, repeating: 0)
    /// Dirty bit per slot.
    @exclusivity(unchecked) private(set) var dirty = SlotBuffer<Bool>(count: 0, repeating: false)
    /// Per slot, the host file's `epoch` when the cache layer last wrote the slot's table back
    /// since it was filled (0: not since then). Set by `CacheSystem`, cleared with the slot.
    @exclusivity(unchecked) private var hostEpochs = SlotBuffer<UInt64>(count: 0, repeating: 0)

    /// The table offset slot `i` holds (0 = empty).
    public func offset(at i: Int) -> UInt64 { offsets[i] }
    /// Slot `i`'s pin count (QEMU `ref`).
    public func pinCount(at i: Int) -> Int { Int(pins[i]) }
    /// Number of dirty slots.
    @exclusivity(unchecked) public private(set) var dirtyCount = 0
    /// QEMU's cache-wide `lru_counter`.
    @exclusivity(unchecked) public private(set) var lruClock: UInt64 = 0
    /// QEMU's `cache_clean_lru_counter`.
    @exclusivity(unchecked) public private(set) var cleanMark: UInt64 = 0
    /// Entries of this cache may only be written after the other cache is flushed (`depends`).
    @exclusivity(unchecked) public var dependsOnOther = false
    /// A host flush is needed before the next write-back (`depends_on_flush`; no event).
    @exclusivity(unchecked) public var dependsOnFlush = false
    /// Counters.
    @exclusivity(unchecked) public var stats = CacheStats()

    @exclusivity(unchecked) private var index = OffsetIndex(capacity: 0)
    @exclusivity(unchecked) private var empty = Bitset(count: 0, set: true)
    /// Number of empty slots: once the cache is full, a miss skips the empty-slot search.
    @exclusivity(unchecked) private var emptyCount = 0
    @exclusivity(unchecked) private var policy = Policy(capacity: 0, kind: .l2)
    @exclusivity(unchecked) private var resident = Bitset(count: 0, set: false)
    /// The dirty slots as a bit set, so a cache write visits them without scanning every slot.
    @exclusivity(unchecked) private var dirtySet = Bitset(count: 0, set: false)
    @exclusivity(unchecked) private var residentPages = 0
    /// Slots filled by a "get empty" (a table new in this session) and not yet written back.
    @exclusivity(unchecked) private var fresh = Bitset(count: 0, set: false)
    /// Why each table last left the cache, for the miss classes.
    @exclusivity(unchecked) private var history = TableHistory()
    /// Digest of the fresh tables written back so far (`hostGuard`): count and a sum of mixed
    /// offsets, so equal digests mean, with overwhelming probability, equal sets.
    @exclusivity(unchecked) public private(set) var freshWrittenDigest: UInt64 = 0

    /// Host page size used for the resident-memory model (Linux x86-64).
    public static var pageSize: UInt64 { 4096 }

    /// An empty cache of `count` slots of `tableSize` bytes.
    public init(kind: CacheKind, count: Int, tableSize: UInt64) {
        self.kind = kind
        reset(count: count, tableSize: tableSize)
    }

    /// Empties the cache and resizes it to `count` slots of `tableSize` bytes, as QEMU's
    /// reopen creates brand-new caches (§2): LRU clock, marks and counters restart at 0.
    public func reset(count: Int, tableSize: UInt64) {
        self.count = count
        self.tableSize = tableSize
        self.tableShift = UInt64(tableSize.trailingZeroBitCount)
        offsets = SlotBuffer(count: count, repeating: 0)
        lru = SlotBuffer(count: count, repeating: 0)
        pins = SlotBuffer(count: count, repeating: 0)
        dirty = SlotBuffer(count: count, repeating: false)
        hostEpochs = SlotBuffer(count: count, repeating: 0)
        dirtyCount = 0
        lruClock = 0
        cleanMark = 0
        dependsOnOther = false
        dependsOnFlush = false
        stats = CacheStats()
        index = OffsetIndex(capacity: count)
        empty = Bitset(count: count, set: true)
        emptyCount = count
        dirtySet = Bitset(count: count, set: false)
        policy = Policy(capacity: count, kind: kind)
        fresh = Bitset(count: count, set: false)
        history = TableHistory()
        freshWrittenDigest = 0
        let pages = (UInt64(count) * tableSize + Self.pageSize - 1) / Self.pageSize
        resident = Bitset(count: Int(pages), set: false)
        residentPages = 0
    }

    /// Runs `body` on this cache's policy state: how a layer that knows more than the hooks say
    /// (the optimal policy's next uses, `OptimalLayer`) informs it.
    @inline(__always) public func updatePolicy<R>(_ body: (inout Policy) -> R) -> R { body(&policy) }

    /// QEMU's start index for a lookup of `offset`: `(offset / tableSize * 4) mod n`.
    @inline(__always) public func startIndex(_ offset: UInt64) -> Int {
        Int(((offset >> tableShift) &* 4) % UInt64(count))
    }

    /// The slot holding `offset` (QEMU `qcow2_cache_is_table_offset` / FIND), or nil.
    @inline(__always) public func find(_ offset: UInt64) -> Int? { index.find(offset) }

    /// Records a hit on slot `i` and pins it.
    @inline(__always) public func hit(_ i: Int) {
        stats.lookups &+= 1
        stats.hits &+= 1
        pins[i] += 1
        policy.hit(i, offset: offsets[i])
    }

    /// The slot to fill for a miss on `offset` (no state change).
    @inline(__always) public func victim(for offset: UInt64) -> Int {
        if emptyCount > 0, let e = empty.firstSet(from: startIndex(offset)) { return e }
        let v = policy.victim(PinCounts(pins.buffer))
        // QEMU aborts when every entry is in use (`qcow2_cache_do_get`: "Assertion `min_lru_index
        // != -1' failed"); the minimum sizes make that impossible with QEMU's request paths.
        guard let v else { preconditionFailure("qcow2 cache: every entry is in use (QEMU aborts: min_lru_index == -1)") }
        precondition(
            v >= 0 && v < count && pins[v] == 0,
            "eviction policy \(Policy.name) chose slot \(v), which is not an unpinned filled slot")
        return v
    }

    /// Fills slot `i` with `offset` after a miss and pins it. The caller has written the old
    /// table back. The slot keeps its old LRU stamp until the next release, as in QEMU.
    @inline(__always) public func fill(_ i: Int, offset: UInt64, readFromDisk: Bool) {
        occupy(i, offset: offset, readFromDisk: readFromDisk)
        pins[i] += 1
        policy.filled(i, offset: offset)
        touchMemory(i)
    }

    /// `fill(i, offset:, readFromDisk: true)` then `put(i)` of an unpinned slot (a GET released
    /// right away, as MAP's is): the same state and counters, without pinning; the policy hears
    /// `filledReleased` (by default its `filled` then `released`).
    @inline(__always) public func fillReleased(_ i: Int, offset: UInt64) {
        assert(pins[i] == 0, "fillReleased of a pinned slot")
        occupy(i, offset: offset, readFromDisk: true)
        touchMemory(i)
        lruClock &+= 1
        lru[i] = lruClock
        policy.filledReleased(i, offset: offset)
    }

    /// `hit(i)` then `put(i)`: a GET released right away.
    @inline(__always) public func hitReleased(_ i: Int) {
        stats.lookups &+= 1
        stats.hits &+= 1
        let offset = offsets[i]
        policy.hit(i, offset: offset)
        // Another holder keeps it pinned: the PUT stamps nothing (`put`).
        if pins[i] == 0 {
            lruClock &+= 1
            lru[i] = lruClock
            policy.released(i, offset: offset)
        }
    }

    /// A fill's slot state and counters, before the pin and the policy's `filled`.
    @inline(__always) private func occupy(_ i: Int, offset: UInt64, readFromDisk: Bool) {
        // Wrapping additions: no counter can reach 2^63 (one step per operation), and the
        // overflow checks cost a tenth of a miss's instructions.
        stats.lookups &+= 1
        stats.misses &+= 1
        if readFromDisk { stats.bytesRead &+= tableSize } else { stats.emptyGets &+= 1 }
        let old = offsets[i]
        if old != 0 {
            // Its history already says `.evicted`: a fill writes that, only a clean or discard
            // (which empty the slot) writes anything else.
            stats.evictions &+= 1
            index.remove(slot: i)
        } else {
            empty.clear(i)
            emptyCount -= 1
        }
        // Resident now (one history lookup for both); the reason it leaves is written when it does.
        // Compares, most frequent first, rather than a switch over an enum made from the raw
        // bits (an out-of-line initializer call and a jump table per miss).
        let before = history.exchangeRaw(offset &>> tableShift, .evicted)
        if before == TableHistory.Reason.evicted.rawValue {
            stats.missesEvicted &+= 1
        } else if before == TableHistory.Reason.never.rawValue {
            stats.missesCold &+= 1
        } else if before == TableHistory.Reason.cleaned.rawValue {
            stats.missesCleaned &+= 1
        } else {
            stats.missesDiscarded &+= 1
        }
        if readFromDisk { fresh.clear(i) } else { fresh.set(i) }
        offsets[i] = offset
        hostEpochs[i] = 0
        index.insert(offset, i)
    }

    /// `count` hits on slot `i` in a row, each followed by its PUT (QEMU reading one refcount
    /// block once per cluster): the counters, clock and stamp end as after `count` hit/put pairs.
    @inline(__always) public func repeatHits(_ i: Int, count: Int) {
        guard count > 0 else { return }
        stats.lookups += count
        stats.hits += count
        let releases = pins[i] == 0
        if releases {
            lruClock += UInt64(count)
            lru[i] = lruClock
        }
        policy.repeatedHits(i, offset: offsets[i], count: count, released: releases)
    }

    /// QEMU's PUT: unpins slot `i`; the last release stamps it.
    @inline(__always) public func put(_ i: Int) {
        // QEMU: `assert(c->entries[i].ref >= 0)` after the decrement.
        precondition(pins[i] > 0, "qcow2 cache: PUT of an entry nobody holds (ref would go below 0)")
        pins[i] -= 1
        if pins[i] == 0 {
            lruClock += 1
            lru[i] = lruClock
            policy.released(i, offset: offsets[i])
        }
    }

    /// QEMU's MARK_DIRTY (`qcow2_cache_entry_mark_dirty` asserts the entry holds a table).
    @inline(__always) public func markDirty(_ i: Int) {
        precondition(offsets[i] != 0, "qcow2 cache: MARK_DIRTY of an empty entry")
        if !dirty[i] {
            dirty[i] = true
            dirtySet.set(i)
            dirtyCount += 1
        }
    }

    /// Clears the dirty bit after a write-back and counts it.
    @inline(__always) public func markClean(_ i: Int) {
        if fresh.test(i) {
            fresh.clear(i)
            freshWrittenDigest &+= TableHistory.mix(offsets[i])
        }
        if dirty[i] {
            dirty[i] = false
            dirtySet.clear(i)
            dirtyCount -= 1
        }
        stats.writebacks += 1
        stats.bytesWritten += tableSize
    }

    /// The host file's epoch at slot `i`'s last write-back since it was filled (0: none).
    @inline(__always) func hostEpoch(at i: Int) -> UInt64 { hostEpochs[i] }
    /// Records slot `i`'s write-back to a host file in `epoch`.
    @inline(__always) func setHostEpoch(_ epoch: UInt64, at i: Int) { hostEpochs[i] = epoch }
    /// Forgets every slot's write-back epoch (the host files changed).
    func forgetHostEpochs() { hostEpochs = SlotBuffer(count: count, repeating: 0) }

    /// The first dirty slot at or after `i`, or nil: what QEMU's index-order scan in
    /// `qcow2_cache_write` reaches next that has anything to write.
    @inline(__always) public func nextDirty(from i: Int) -> Int? {
        guard i < count, dirtyCount > 0, let j = dirtySet.firstSet(from: i), j >= i else { return nil }
        return j
    }

    /// Whether slot `i` needs a write-back (dirty and non-empty).
    @inline(__always) public func needsWriteback(_ i: Int) -> Bool { dirty[i] && offsets[i] != 0 }

    /// QEMU's DISCARD_ENTRY (slot must be unpinned): empties it and drops dirty data.
    public func discard(_ i: Int) {
        precondition(pins[i] == 0, "qcow2 cache: discarding a pinned entry")
        if offsets[i] != 0 {
            index.remove(slot: i)
            history.set(offsets[i] >> tableShift, .discarded)
            policy.emptied(i, offset: offsets[i])
        }
        fresh.clear(i)
        if offsets[i] != 0 { emptyCount += 1 }
        offsets[i] = 0
        hostEpochs[i] = 0
        lru[i] = 0
        if dirty[i] {
            dirty[i] = false
            dirtySet.clear(i)
            dirtyCount -= 1
        }
        empty.set(i)
    }

    /// QEMU's cache-clean tick (`qcow2_cache_clean_unused`): empties every unpinned, clean,
    /// non-empty entry whose stamp is at most the previous tick's clock, returns each maximal run
    /// of cleaned slots' memory (rounded inward to pages), then moves the mark. Returns whether
    /// anything changed (an entry emptied or the mark moved): a tick that changes nothing would
    /// change nothing again until the next PUT.
    @discardableResult
    public func clean() -> Bool {
        let markBefore = cleanMark
        let cleanedBefore = stats.cleaned
        var i = 0
        while i < count {
            while i < count && !canClean(i) { i += 1 }
            let runStart = i
            while i < count && canClean(i) {
                index.remove(slot: i)
                history.set(offsets[i] >> tableShift, .cleaned)
                policy.emptied(i, offset: offsets[i])
                fresh.clear(i)
                offsets[i] = 0
                hostEpochs[i] = 0
                lru[i] = 0
                empty.set(i)
                emptyCount += 1
                stats.cleaned += 1
                i += 1
            }
            if i > runStart { releaseMemory(from: runStart, to: i) }
        }
        cleanMark = lruClock
        return cleanMark != markBefore || stats.cleaned != cleanedBefore
    }

    @inline(__always) private func canClean(_ i: Int) -> Bool {
        pins[i] == 0 && !dirty[i] && offsets[i] != 0 && lru[i] <= cleanMark
    }

    // MARK: resident memory (pages touched by fills, released by clean ticks)

    /// Every page of the slots is resident: a fill cannot grow resident memory.
    @inline(__always) public var fullyResident: Bool { residentPages == resident.count }

    @inline(__always) private func touchMemory(_ i: Int) {
        // Every page resident (a warm cache): nothing to count.
        if fullyResident { return }
        let first = UInt64(i) * tableSize / Self.pageSize
        let last = (UInt64(i + 1) * tableSize - 1) / Self.pageSize
        var p = first
        while p <= last {
            if !resident.test(Int(p)) {
                resident.set(Int(p))
                residentPages += 1
            }
            p += 1
        }
        stats.memoryBytes = UInt64(residentPages) * Self.pageSize
        if stats.memoryBytes > stats.memoryPeakBytes { stats.memoryPeakBytes = stats.memoryBytes }
    }

    private func releaseMemory(from a: Int, to b: Int) {
        let start = (UInt64(a) * tableSize + Self.pageSize - 1) / Self.pageSize
        let end = UInt64(b) * tableSize / Self.pageSize
        guard start < end else { return }
        for p in Int(start)..<Int(end) where resident.test(p) {
            resident.clear(p)
            residentPages -= 1
        }
        stats.memoryBytes = UInt64(residentPages) * Self.pageSize
    }

    /// Adds `seconds` × the current resident memory to the time integral.
    @inline(__always) public func accumulateMemory(seconds: Double) {
        stats.memoryByteSeconds += Double(stats.memoryBytes) * seconds
    }

    /// Slots still pinned (QEMU asserts none is at close: `qcow2_cache_destroy`).
    public var pinnedSlots: [Int] { (0..<count).filter { pins[$0] != 0 } }

    /// Verifies the structural invariants; a violation is a simulator bug.
    public func checkInvariants() -> [String] {
        var problems: [String] = []
        let missClasses = stats.missesCold + stats.missesEvicted + stats.missesCleaned + stats.missesDiscarded
        if missClasses != stats.misses { problems.append("miss classes add up to \(missClasses), not \(stats.misses) misses") }
        var dirtySeen = 0
        var emptySeen = 0
        for i in 0..<count {
            if dirty[i] { dirtySeen += 1 }
            if offsets[i] == 0 {
                if !empty.test(i) { problems.append("slot \(i) empty but not in the empty set") }
                emptySeen += 1
                if pins[i] != 0 { problems.append("slot \(i) empty but pinned") }
                if dirty[i] { problems.append("slot \(i) empty but dirty") }
            } else {
                if empty.test(i) { problems.append("slot \(i) filled but in the empty set") }
                if index.find(offsets[i]) != i { problems.append("slot \(i) not indexed") }
            }
            if pins[i] < 0 { problems.append("slot \(i) has a negative pin count") }
        }
        if emptySeen != emptyCount { problems.append("empty count \(emptyCount) but \(emptySeen) empty slots") }
        if dirtySeen != dirtyCount { problems.append("dirty count \(dirtyCount) but \(dirtySeen) dirty slots") }
        for i in 0..<count where dirtySet.test(i) != dirty[i] { problems.append("slot \(i) dirty bit and dirty set disagree") }
        return problems
    }
}

/// A fixed-size bit set with circular "first set bit from" search.
struct Bitset {
    private let words: SlotBuffer<UInt64>
    let count: Int

    init(count: Int, set: Bool) {
        self.count = count
        words = SlotBuffer(count: max((count + 63) / 64, 1), repeating: set ? ~0 : 0)
        if set, count % 64 != 0 { words[words.count - 1] = (1 << UInt64(count % 64)) - 1 }
        if count == 0 { words[0] = 0 }
    }

    @inline(__always) func test(_ i: Int) -> Bool { words[i >> 6] & (1 << UInt64(i & 63)) != 0 }
    @inline(__always) mutating func set(_ i: Int) { words[i >> 6] |= 1 << UInt64(i & 63) }
    @inline(__always) mutating func clear(_ i: Int) { words[i >> 6] &= ~(1 << UInt64(i & 63)) }

    /// The first set bit at or after `start`, wrapping around; nil if none.
    @inline(__always) func firstSet(from start: Int) -> Int? {
        let nw = words.count
        var w = start >> 6
        var bits = words[w] & (~0 << UInt64(start & 63))
        var scanned = 0
        while scanned <= nw {
            if bits != 0 { return (w << 6) + bits.trailingZeroBitCount }
            w += 1
            if w == nw { w = 0 }
            bits = words[w]
            scanned += 1
        }
        return nil
    }
}

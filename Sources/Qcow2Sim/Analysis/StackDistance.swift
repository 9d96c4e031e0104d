/// A Fenwick (binary indexed) tree of counts over positions `1...capacity` (Fenwick, "A new data
/// structure for cumulative frequency tables", 1994): O(log n) point updates and prefix sums.
/// `PositionSet` counts its blocks with it.
final class FenwickTree {
    @exclusivity(unchecked) private var tree: UnsafeMutablePointer<Int32>
    /// Positions `1...capacity`.
    @exclusivity(unchecked) private(set) var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        tree = UnsafeMutablePointer<Int32>.allocate(capacity: self.capacity + 1)
        tree.initialize(repeating: 0, count: self.capacity + 1)
    }

    deinit { tree.deallocate() }

    // Wrapping arithmetic and the pointer and bound in locals: the checked loop was 10
    // instructions per level, 6 without the overflow checks and reloads (read-1e6).
    @inline(__always) func add(_ position: Int, _ delta: Int32) {
        let t = tree, n = capacity
        var i = position
        while i <= n {
            t[i] &+= delta
            i &+= i & (0 &- i)
        }
    }

    /// Sum of the counts at positions `1...position`.
    @inline(__always) func prefix(_ position: Int) -> Int {
        let t = tree
        var i = position
        var s = 0
        while i > 0 {
            s &+= Int(t[i])
            i &-= i & (0 &- i)
        }
        return s
    }

    /// Replaces the contents with `count(i)` at each position `i` of `1...capacity`, on
    /// `capacity` positions, in O(capacity).
    func rebuild(capacity newCapacity: Int, count: (Int) -> Int32) {
        if newCapacity != capacity {
            tree.deallocate()
            capacity = max(newCapacity, 1)
            tree = UnsafeMutablePointer<Int32>.allocate(capacity: capacity + 1)
        }
        tree.initialize(repeating: 0, count: capacity + 1)
        for i in 1...capacity {
            tree[i] &+= count(i)
            let parent = i + (i & -i)
            if parent <= capacity { tree[parent] &+= tree[i] }
        }
    }
}

/// A set of positions `0..<capacity` taken in increasing order, as a bitmap with the count of
/// every 64-position block in a `FenwickTree`: how many members lie above a member costs a
/// prefix sum over blocks (64 times fewer levels' worth of nodes than a tree over positions)
/// and a population count or two. The block being filled (`open`) enters the tree only when
/// the next one opens, so an insertion costs no tree update 63 times in 64 (it was a fifth of
/// the pass's instructions on read-1e6). Positions are renumbered (`reset`) when they run out.
struct PositionSet {
    private var bits: Column<UInt64>
    private let blocks: FenwickTree
    /// The block the last insertion went to; blocks below it are counted in `blocks`.
    private var open = 0
    /// Members in the blocks below `open`, and in `open`.
    private var sealed = 0
    private var inOpen = 0
    /// Positions `0..<capacity` (a multiple of 64).
    private(set) var capacity: Int

    init(capacity: Int) {
        self.capacity = max(64, (capacity + 63) / 64 * 64)
        bits = Column(capacity: self.capacity / 64, zero: 0)
        blocks = FenwickTree(capacity: self.capacity / 64)
    }

    /// Frees the storage.
    func free() { bits.free() }

    /// Adds `p`, above every member so far.
    @inline(__always) mutating func insert(_ p: Int) {
        let b = p &>> 6
        if b != open { seal(b) }
        bits[b] |= 1 &<< UInt64(p & 63)
        inOpen &+= 1
    }

    /// Counts the open block in the tree and opens block `b`.
    private mutating func seal(_ b: Int) {
        if inOpen > 0 { blocks.add(open + 1, Int32(inOpen)) }
        sealed += inOpen
        inOpen = 0
        open = b
    }

    @inline(__always) mutating func remove(_ p: Int) {
        let b = p &>> 6
        bits[b] &= ~(1 &<< UInt64(p & 63))
        if b != open {
            blocks.add(b &+ 1, -1)
            sealed &-= 1
        } else {
            inOpen &-= 1
        }
    }

    /// Members at `p` or above, for a member `p`.
    @inline(__always) func atOrAbove(_ p: Int) -> Int {
        let b = p &>> 6
        let here = (bits[b] &>> UInt64(p & 63)).nonzeroBitCount
        if b == open { return here }
        return sealed &- blocks.prefix(b &+ 1) &+ here &+ inOpen
    }

    /// Calls `body` with every member below `end`, in increasing order.
    func forEach(below end: Int, _ body: (Int) -> Void) {
        for w in 0..<(end + 63) / 64 {
            var word = bits[w]
            while word != 0 {
                body(w << 6 | word.trailingZeroBitCount)
                word &= word &- 1
            }
        }
    }

    /// Makes the members exactly `0..<n`, on `newCapacity` positions (rounded up to 64, more
    /// than `n`).
    mutating func reset(members n: Int, capacity newCapacity: Int) {
        let old = capacity / 64
        capacity = max(64, (newCapacity + 63) / 64 * 64)
        let words = capacity / 64
        bits.reserve(words)
        bits.clear(max(old, words))
        for w in 0..<n / 64 { bits[w] = ~0 }
        if n % 64 != 0 { bits[n / 64] = (1 &<< UInt64(n % 64)) &- 1 }
        // The whole blocks are sealed; the next insertion, at n, goes to block n / 64.
        open = n / 64
        sealed = open * 64
        inOpen = n % 64
        blocks.rebuild(capacity: words) { i in i <= n / 64 ? 64 : 0 }
    }
}

/// A growable column of `T` behind a pointer: the pass's per-table and per-position state,
/// without an array's uniqueness and bounds checks on the per-operation path.
struct Column<T> {
    private(set) var base: UnsafeMutablePointer<T>
    private(set) var capacity: Int
    private let zero: T

    init(capacity: Int, zero: T) {
        self.capacity = max(capacity, 16)
        self.zero = zero
        base = UnsafeMutablePointer<T>.allocate(capacity: self.capacity)
        base.initialize(repeating: zero, count: self.capacity)
    }

    /// Frees the storage (the owner's `deinit`).
    func free() { base.deallocate() }

    @inline(__always) subscript(i: Int) -> T {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }

    /// Makes `0..<n` valid (new elements zero), doubling the storage.
    @inline(__always) mutating func reserve(_ n: Int) {
        if n > capacity { grow(n) }
    }

    private mutating func grow(_ n: Int) {
        var c = capacity
        while c < n { c *= 2 }
        let b = UnsafeMutablePointer<T>.allocate(capacity: c)
        b.moveInitialize(from: base, count: capacity)
        (b + capacity).initialize(repeating: zero, count: c - capacity)
        base.deallocate()
        base = b
        capacity = c
    }

    /// Sets `0..<n` to zero.
    func clear(_ n: Int) { base.update(repeating: zero, count: min(n, capacity)) }
}

/// The order of one eviction policy over the tables of one cache, as a stack (Mattson, Gecsei,
/// Slutz and Traiger, "Evaluation techniques for storage hierarchies", IBM Systems Journal 1970):
/// a cache of `n` entries holds exactly the `n` tables at the top, so one pass gives the stack
/// distance of every lookup and with it the hits of every cache size.
///
/// Tables are ordered by a position taken at the event the policy orders by, kept in a
/// `FenwickTree` so that a table's depth (the tables above it, plus one) costs O(log n):
///
/// - `qemu` (`qcow2_cache_put`): a table is stamped when its last user releases it, and QEMU's
///   victim is the unpinned entry with the smallest stamp (`qcow2_cache_do_get`). Pinned tables
///   cannot be victims, so they sit above every released one: they leave the tree while pinned
///   and are counted by `pinned`. Every cache of at least `pinned` entries holds them all, so the
///   order is exact for every size QEMU can run without aborting.
/// - `lru` (`LRUPolicy`): a table is stamped at every lookup. A pinned table can then be below
///   the top `n` while held, where the policy skips it (`RecencyList.firstUnpinned`) and the stack
///   is wrong for that `n`: `invalidUpTo` records the largest such size.
///
/// Which slot a table lands in (QEMU's start-index scan) changes no membership.
final class RecencyStack {
    /// Orders by release (`qemu`) or by lookup (`lru`).
    let byRelease: Bool
    /// The positions of the tables in the stack (taken in order: the top is the last).
    @exclusivity(unchecked) private var order = PositionSet(capacity: 1024)
    /// Tree position per table id, plus one (0: not in the stack).
    @exclusivity(unchecked) private var position = Column<Int32>(capacity: 1024, zero: 0)
    /// Table id per position (for compactions; only members' entries are read).
    @exclusivity(unchecked) private var holder = Column<Int32>(capacity: 1024, zero: 0)
    /// Positions taken so far (the next one is `last`).
    @exclusivity(unchecked) private var last = 0
    /// Pinned tables above the tree (`qemu` only).
    @exclusivity(unchecked) private var pinned = 0
    /// Tables pinned now (`lru`: their depths bound the exact sizes).
    @exclusivity(unchecked) private var pinnedList: [Int32] = []
    /// `histogram[d]`: lookups of a resident table at depth `d` (hits for every size >= d).
    @exclusivity(unchecked) private var histogram = Column<UInt32>(capacity: 1024, zero: 0)
    /// Counts that did not fit `histogram`'s 32 bits, by depth (half the footprint of 64-bit
    /// counts: the histogram is touched at random depths).
    @exclusivity(unchecked) private var spilled: [Int: Int] = [:]
    /// Depths counted so far are below this.
    @exclusivity(unchecked) private var depths = 2
    /// Sizes `n <= invalidUpTo` are not given exactly by the stack (a pinned table in the way).
    @exclusivity(unchecked) private(set) var invalidUpTo = 0
    /// `cumulative[d]`: lookups at depths `1...d` (built on first use after the pass).
    @exclusivity(unchecked) private var cumulative: [Int] = []

    init(byRelease: Bool) { self.byRelease = byRelease }

    deinit {
        order.free()
        position.free()
        holder.free()
        histogram.free()
    }

    /// Hits of a cache of `n` entries: lookups at depth at most `n`.
    func hits(upTo n: Int) -> Int {
        if cumulative.count != depths {
            cumulative = (0..<depths).map { Int(histogram[$0]) + (spilled[$0] ?? 0) }
            for d in 1..<cumulative.count { cumulative[d] += cumulative[d - 1] }
        }
        return cumulative[min(n, cumulative.count - 1)]
    }

    /// Forgets every table (a new session: QEMU creates new caches at open).
    func reset(ids: Int) {
        order.reset(members: 0, capacity: order.capacity)
        position.clear(ids)
        last = 0
        pinned = 0
        pinnedList.removeAll()
        histogram.clear(depths)
        spilled = [:]
        depths = 2
        cumulative = []
        invalidUpTo = 0
    }

    /// Makes room for table ids `0..<ids` and depths up to `tables + 1`.
    @inline(__always) func reserve(ids: Int, tables: Int) {
        position.reserve(ids)
        histogram.reserve(tables + 2)
    }

    @inline(__always) private func count(_ depth: Int, _ n: Int) {
        let (v, overflow) = histogram[depth].addingReportingOverflow(UInt32(truncatingIfNeeded: n))
        if overflow || n > Int(UInt32.max) {
            spill(depth, n)
        } else {
            histogram[depth] = v
        }
        if depth >= depths { depths = depth + 1 }
    }

    private func spill(_ depth: Int, _ n: Int) { spilled[depth, default: 0] += n }

    /// Depth of the table at position `p` (1 = top).
    @inline(__always) private func depth(at p: Int) -> Int {
        (byRelease ? pinned : 0) + order.atOrAbove(p)
    }

    /// Depth of table `id`, which is in the stack.
    @inline(__always) private func depth(of id: Int) -> Int { depth(at: Int(position[id]) - 1) }

    /// Puts table `id` on top of the stack.
    @inline(__always) private func push(_ id: Int) {
        if last == order.capacity { compact() }
        order.insert(last)
        holder[last] = Int32(truncatingIfNeeded: id)
        last += 1
        position[id] = Int32(truncatingIfNeeded: last)
    }

    @inline(__always) private func remove(_ id: Int) {
        order.remove(Int(position[id]) - 1)
        position[id] = 0
    }

    /// Renumbers the tables `0..<k` in order, on enough positions to keep the set at most an
    /// eighth full after, so positions never run out: O(k + capacity / 64) every
    /// `capacity - k` pushes (with a tree over positions kept half full, renumbering was 15 %
    /// of the pass's instructions on read-1e6).
    private func compact() {
        var k = 0
        order.forEach(below: last) { p in
            let id = Int(holder[p])
            holder[k] = Int32(truncatingIfNeeded: id)
            k += 1
            position[id] = Int32(truncatingIfNeeded: k)
        }
        var capacity = order.capacity
        while k * 8 > capacity { capacity *= 2 }
        holder.reserve(capacity)
        order.reset(members: k, capacity: capacity)
        last = k
    }

    /// A GET of table `id`: `resident` if the table is in the stack, `held` if it is pinned.
    @inline(__always) func get(_ id: Int, resident: Bool, held: Bool) {
        if byRelease {
            if held {
                // Pinned, so resident in every cache QEMU can run: a hit at every size.
                count(1, 1)
                return
            }
            // A miss with `pinned` entries held aborts QEMU in a cache of at most that many.
            if pinned > invalidUpTo { invalidUpTo = pinned }
            if resident {
                count(depth(of: id), 1)
                remove(id)
            }
            pinned += 1
            return
        }
        if !pinnedList.isEmpty { checkPinned(besides: id) }
        if resident {
            count(depth(of: id), 1)
            remove(id)
        }
        push(id)
        if !held { pinnedList.append(Int32(truncatingIfNeeded: id)) }
    }

    /// `lru`: a lookup while other tables are pinned; a size at or below the deepest of them is
    /// not given by the stack.
    private func checkPinned(besides id: Int) {
        for other in pinnedList where Int(other) != id {
            let d = depth(of: Int(other))
            if d > invalidUpTo { invalidUpTo = d }
        }
    }

    /// The PUT of table `id` that took its pin count to 0 (`released`) or not.
    @inline(__always) func put(_ id: Int, released: Bool) {
        guard released else { return }
        if byRelease {
            pinned -= 1
            push(id)
        } else if let k = pinnedList.lastIndex(of: Int32(truncatingIfNeeded: id)) {
            pinnedList.remove(at: k)
        }
    }

    /// `n` more lookups of the resident table `id`, each released at once unless `held`.
    @inline(__always) func repeatGet(_ id: Int, times n: Int, held: Bool) {
        if byRelease && held {
            count(1, n)
            return
        }
        count(depth(of: id), n)
        remove(id)
        push(id)
    }
}

/// Table offsets to dense ids. An L2 slice's offset is its table's cluster plus a multiple of
/// the entry size, so ids are given per cluster, a block of `cluster size / entry size` at a time:
/// the hash table (open addressing, linear probing) then holds one key per L2 table, not per
/// slice, and stays small enough to be cache-resident (16 times fewer keys with 4 KiB slices of
/// 64 KiB tables).
struct TableIds {
    private var keys: Column<UInt64>
    private var values: Column<Int32>
    private var mask: Int
    private let clusterShift: UInt64
    private let entryShift: UInt64
    private let perCluster: Int
    /// Ids given so far (`0..<count`, some never used).
    private(set) var count = 0

    init(clusterBits: Int, entryShift: Int) {
        clusterShift = UInt64(clusterBits)
        self.entryShift = UInt64(entryShift)
        perCluster = 1 << max(clusterBits - entryShift, 0)
        keys = Column(capacity: 1024, zero: 0)
        values = Column(capacity: 1024, zero: 0)
        mask = 1023
    }

    /// Frees the storage.
    func free() {
        keys.free()
        values.free()
    }

    @inline(__always) private static func hash(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32)
    }

    @inline(__always) private func slice(_ offset: UInt64) -> Int {
        Int(truncatingIfNeeded: (offset >> entryShift)) & (perCluster - 1)
    }

    /// The id of table `offset`, or nil if its cluster has none.
    @inline(__always) func lookup(_ offset: UInt64) -> Int? {
        let key = (offset >> clusterShift) &+ 1
        var i = Self.hash(key) & mask
        while true {
            let k = keys[i]
            if k == key { return Int(values[i]) + slice(offset) }
            if k == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// The id of table `offset`, given (with its cluster's) if it has none.
    @inline(__always) mutating func assign(_ offset: UInt64) -> Int {
        let key = (offset >> clusterShift) &+ 1
        var i = Self.hash(key) & mask
        while true {
            let k = keys[i]
            if k == key { return Int(values[i]) + slice(offset) }
            if k == 0 { break }
            i = (i + 1) & mask
        }
        keys[i] = key
        values[i] = Int32(truncatingIfNeeded: count)
        count += perCluster
        let id = count - perCluster + slice(offset)
        used += 1
        if used * 2 > mask { grow() }
        return id
    }

    /// Keys in the hash table.
    private var used = 0

    private mutating func grow() {
        let oldKeys = keys, oldValues = values, old = mask + 1
        keys = Column(capacity: old * 2, zero: 0)
        values = Column(capacity: old * 2, zero: 0)
        mask = old * 2 - 1
        for j in 0..<old where oldKeys[j] != 0 {
            var i = Self.hash(oldKeys[j]) & mask
            while keys[i] != 0 { i = (i + 1) & mask }
            keys[i] = oldKeys[j]
            values[i] = oldValues[j]
        }
        oldKeys.free()
        oldValues.free()
    }
}

/// One pass over a recorded operation stream (`OpRecording`) that gives, for the L2 cache of
/// one image, the lookups, hits, misses, evictions and resident memory of every cache size for
/// the `qemu` and `lru` policies at once, or says why a size needs its own replay.
///
/// The stack (`RecencyStack`) gives hits and misses exactly whenever the cache's contents depend
/// only on the order; what breaks that is detected, not approximated:
///
/// - an L2 table marked dirty, or got empty (a new table), in the image: write-backs and their
///   dependency flushes (§3.4–§3.6) then depend on the size (`dirty`);
/// - a freed cluster that is a table some size holds (`update_refcount` discards it, §4.4):
///   `discarded`;
/// - a cache-clean tick inside the trace's time (§3.7): `cleanTickAt` (a tick whose time a
///   request reaches; the caller compares it with each point's interval);
/// - the stack's own bound per policy (`RecencyStack.invalidUpTo`);
/// - a memory integral the pass cannot reproduce bit for bit (`memoryInexact`).
///
/// Everything else of the cache's counters (flushes, the refcount cache, the other images) does
/// not depend on this L2 cache's size when none of these happened.
final class StackDistancePass {
    /// The image whose L2 cache is measured (chain position).
    let image: UInt16
    /// The stacks: `qemu` first, then `lru` (nil: not asked for).
    let qemu: RecencyStack?
    let lru: RecencyStack?
    @exclusivity(unchecked) private var ids: TableIds
    /// Per table id, in one word (one memory access per operation): the session (opens so far)
    /// in which it entered the stack, resident in some size, in the high 32 bits; its pin count
    /// in the low 32.
    @exclusivity(unchecked) private var state = Column<UInt64>(capacity: 1024, zero: 0)
    @exclusivity(unchecked) private var session: UInt32 = 1
    /// Distinct tables since the open (the stack's length; it never shrinks without cleans or
    /// discards, which make the pass inexact).
    @exclusivity(unchecked) private(set) var length = 0
    /// Lookups (GET and repeated GETs) and first lookups since the open.
    @exclusivity(unchecked) private(set) var lookups = 0
    @exclusivity(unchecked) private(set) var cold = 0
    /// Some size's write-backs depend on the size (see the type's documentation).
    @exclusivity(unchecked) private(set) var dirty = false
    /// A freed cluster was a table resident in some size.
    @exclusivity(unchecked) private(set) var discarded = false
    /// The latest request time of the session (trace seconds; -inf: none), for the clean timer.
    @exclusivity(unchecked) private var latestTime = -Double.infinity
    @exclusivity(unchecked) private var openTime: Double = 0

    /// Whether a clean tick of `interval` seconds fires in the session: its first tick, at
    /// `open + interval` as `CacheSystem` computes it, is at or before a request's time.
    func cleanTickFires(interval: UInt64) -> Bool {
        interval > 0 && openTime + Double(interval) <= latestTime
    }
    @exclusivity(unchecked) private var lastTime: Double = 0
    @exclusivity(unchecked) private var lastMemoryTime: Double = 0
    /// Memory integral without timestamps: `steps[l]` = requests spent with `l` tables.
    @exclusivity(unchecked) private var steps: [UInt64] = [0]
    /// Prefix sums of `l × steps[l]` and of `steps[l]` (built after the pass).
    @exclusivity(unchecked) private var weighted: [UInt64] = []
    @exclusivity(unchecked) private var plain: [UInt64] = []
    @exclusivity(unchecked) private var overflowed = false
    /// With timestamps: every accumulation step, in order (length, seconds).
    @exclusivity(unchecked) private var timedLengths: [UInt32] = []
    @exclusivity(unchecked) private var timedSeconds: [Double] = []
    @exclusivity(unchecked) private var timed = false
    /// The memory integral cannot be reproduced (a non-integral step without timestamps).
    @exclusivity(unchecked) private(set) var memoryInexact = false
    /// Last table looked up (PUTs follow their GET).
    @exclusivity(unchecked) private var lastOffset: UInt64 = 0
    @exclusivity(unchecked) private var lastId = 0

    /// A pass over the L2 cache of chain image `image`, with clusters of 2^`clusterBits` bytes and
    /// L2 entries of `entrySize` bytes.
    init(image: Int, clusterBits: Int, entrySize: UInt64, qemu: Bool, lru: Bool) {
        self.image = UInt16(image)
        ids = TableIds(clusterBits: clusterBits, entryShift: entrySize.trailingZeroBitCount)
        self.qemu = qemu ? RecencyStack(byRelease: true) : nil
        self.lru = lru ? RecencyStack(byRelease: false) : nil
    }

    deinit {
        ids.free()
        state.free()
    }

    private func reset(time: Double) {
        qemu?.reset(ids: ids.count)
        lru?.reset(ids: ids.count)
        session += 1
        // Pins restart at 0 (every session's tables were released at its close); the session
        // number makes every table non-resident.
        for i in 0..<min(ids.count, state.capacity) { state[i] &= ~0xFFFF_FFFF }
        length = 0
        lookups = 0
        cold = 0
        dirty = false
        discarded = false
        latestTime = -Double.infinity
        openTime = time
        lastMemoryTime = time
        steps = [0]
        weighted = []
        plain = []
        overflowed = false
        timedLengths.removeAll()
        timedSeconds.removeAll()
        timed = false
        memoryInexact = false
        lastOffset = 0
        pendingMark = 0
    }

    @inline(__always) private func id(_ offset: UInt64) -> Int {
        if offset == lastOffset { return lastId }
        let i = ids.assign(offset)
        if ids.count > state.capacity {
            // Every id of the table's block, so a lookup by cluster (`freeCluster`) finds room.
            state.reserve(ids.count)
        }
        lastOffset = offset
        lastId = i
        return i
    }

    /// Consumes a batch of the recording, in order.
    func consume(_ ops: UnsafeBufferPointer<MetadataOp>) {
        // Loaded once per batch, not per operation.
        let image = self.image, qemu = self.qemu, lru = self.lru
        for op in ops {
            switch op.code {
            case .beginRequest, .beginClose:
                // Request marks are the chain's (image 0); they drive every image's timer.
                time(op)
            case .get where op.image == image && op.kind == .l2:
                if op.flag == 0 { dirty = true }
                let i = id(op.offset)
                let word = state[i]
                let held = word & 0xFFFF_FFFF != 0
                let resident = word >> 32 == UInt64(session)
                if !resident {
                    settle()
                    qemu?.reserve(ids: ids.count, tables: length + 1)
                    lru?.reserve(ids: ids.count, tables: length + 1)
                }
                qemu?.get(i, resident: resident, held: held)
                lru?.get(i, resident: resident, held: held)
                if !resident {
                    state[i] = (UInt64(session) << 32 | (word & 0xFFFF_FFFF)) &+ 1
                    length += 1
                    cold += 1
                } else {
                    state[i] = word &+ 1
                }
                lookups += 1
            case .put where op.image == image && op.kind == .l2:
                let i = id(op.offset)
                let word = state[i] &- 1
                state[i] = word
                let released = word & 0xFFFF_FFFF == 0
                qemu?.put(i, released: released)
                lru?.put(i, released: released)
            case .repeatGet where op.image == image && op.kind == .l2:
                guard op.count > 0 else { break }
                let i = id(op.offset)
                let held = state[i] & 0xFFFF_FFFF != 0
                qemu?.repeatGet(i, times: Int(op.count), held: held)
                lru?.repeatGet(i, times: Int(op.count), held: held)
                lookups += Int(op.count)
            case .markDirty where op.image == image && op.kind == .l2:
                dirty = true
            case .freeCluster where op.image == image:
                // `update_refcount` discards an L2 table at the freed cluster in every size
                // that holds it (`qcow2_cache_discard`).
                if let i = ids.lookup(op.offset), state[i] >> 32 == UInt64(session) { discarded = true }
            case .open where op.image == image:
                reset(time: Double(bitPattern: op.extra))
            default:
                break
            }
        }
    }

    /// The latest untimed request mark (its index) not yet added to the memory integral (0:
    /// none). Marks between two changes of the stack's length add one step each of the same
    /// length, so they are added as one when the length changes (the per-request accumulation
    /// was a seventh of the pass's instructions on read-1e6).
    @exclusivity(unchecked) private var pendingMark: UInt64 = 0

    /// Adds the pending untimed steps to the memory integral.
    @inline(__always) private func settle() {
        guard pendingMark != 0 else { return }
        let t = pendingMark
        pendingMark = 0
        accumulate(until: Double(t))
    }

    /// Request marks: the clean timer's clock and the memory integral (`CacheSystem`'s
    /// `beginRequest`, `advanceTime` and `accumulateMemory`).
    @inline(__always) private func time(_ op: MetadataOp) {
        if op.code == .beginClose {
            settle()
            if op.flag != 0 { accumulate(until: Double(op.offset)) }
            return
        }
        if op.flag != 0 {
            settle()
            let t = Double(bitPattern: op.extra)
            timed = true
            if t > lastTime {
                lastTime = t
                if t > latestTime { latestTime = t }
                accumulate(until: t)
            }
        } else if op.offset > 0 {
            // Timed steps are summed in order, one by one (floating point); untimed ones are
            // integers, exact in any grouping.
            if timed { accumulate(until: Double(op.offset)) } else { pendingMark = op.offset }
        }
    }

    @inline(__always) private func accumulate(until t: Double) {
        let dt = t - lastMemoryTime
        guard dt > 0 else { return }
        lastMemoryTime = t
        if timed {
            timedLengths.append(UInt32(truncatingIfNeeded: length))
            timedSeconds.append(dt)
            return
        }
        guard dt == dt.rounded(), dt < 9.0e15 else {
            memoryInexact = true
            return
        }
        while steps.count <= length { steps.append(0) }
        steps[length] &+= UInt64(dt)
    }

    /// Whether, so far, the stack gives every size above `n` entries exactly and no clean tick of
    /// `interval` seconds (0: none) has fired (checked every 256 records by `StackOnlyReader`).
    @inline(__always) func exact(above n: Int, interval: UInt64) -> Bool {
        !dirty && !discarded && !memoryInexact && (qemu?.invalidUpTo ?? 0) < n && (lru?.invalidUpTo ?? 0) < n
            && !cleanTickFires(interval: interval)
    }

    /// The counters of a cache of `n` entries of `entrySize` bytes under `policy`'s stack, as
    /// overrides of a report of the same stream (`template`, whose other counters hold for every
    /// size), or nil if the stack does not give them exactly.
    func stats(entries n: Int, entrySize: UInt64, policy stack: RecencyStack, template: CacheStats) -> CacheStats? {
        settle()
        guard !dirty, !discarded, !memoryInexact, n > stack.invalidUpTo, entrySize >= MetadataCache<QemuPolicy>.pageSize else {
            return nil
        }
        let hits = stack.hits(upTo: n)
        var s = template
        s.lookups = lookups
        s.hits = hits
        s.misses = lookups - hits
        s.emptyGets = 0
        s.evictions = s.misses - min(n, length)
        s.dirtyEvictions = 0
        s.writebacks = 0
        s.bytesRead = UInt64(s.misses) * entrySize
        s.bytesWritten = 0
        s.cleaned = 0
        s.missesCold = cold
        s.missesEvicted = s.misses - cold
        s.missesCleaned = 0
        s.missesDiscarded = 0
        let resident = UInt64(min(n, length))
        s.memoryBytes = resident * entrySize
        s.memoryPeakBytes = s.memoryBytes
        guard let integral = memoryIntegral(n, entrySize) else { return nil }
        s.memoryByteSeconds = integral
        return s
    }

    /// `CacheStats.memoryByteSeconds` of a cache of `n` entries: the sum, in the live run's
    /// order, of resident bytes × step. Without timestamps every term is an integer and the sum
    /// is exact below 2^53 in any order; with timestamps the terms are summed in order.
    private func memoryIntegral(_ n: Int, _ entrySize: UInt64) -> Double? {
        if timed {
            var sum = 0.0
            for k in timedLengths.indices {
                sum += Double(UInt64(min(n, Int(timedLengths[k]))) * entrySize) * timedSeconds[k]
            }
            return sum
        }
        // Σ_l min(n, l) × steps[l] = Σ_{l<n} l × steps[l] + n × Σ_{l>=n} steps[l], from prefix
        // sums built once (every size's integral in O(1)).
        if weighted.count != steps.count + 1 {
            weighted = [0]
            plain = [0]
            var w: UInt64 = 0, q: UInt64 = 0
            for (l, requests) in steps.enumerated() {
                let (t, o1) = UInt64(l).multipliedReportingOverflow(by: requests)
                let (w2, o2) = w.addingReportingOverflow(t)
                let (q2, o3) = q.addingReportingOverflow(requests)
                if o1 || o2 || o3 { overflowed = true }
                w = w2
                q = q2
                weighted.append(w)
                plain.append(q)
            }
        }
        guard !overflowed else { return nil }
        let k = min(n, steps.count)
        let below = weighted[k]
        let (above, o1) = UInt64(n).multipliedReportingOverflow(by: plain[steps.count] - plain[k])
        let (sum, o2) = below.addingReportingOverflow(above)
        let (bytes, o3) = sum.multipliedReportingOverflow(by: entrySize)
        // Below 2^53 the live run's double sum of integers is exact in any order.
        guard !o1, !o2, !o3, bytes < 1 << 53 else { return nil }
        return Double(bytes)
    }
}

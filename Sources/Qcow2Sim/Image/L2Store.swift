/// The authoritative content of an image's L2 tables (qcow2-model.md §1.3), keyed by the
/// table's host offset.
///
/// Each table takes the cheapest of three forms, so memory follows the entries actually set:
/// - **runs**: a table written by preallocation or by sequential allocation is a list of runs
///   (`entry(i) = host + (i - first) * CS | COPIED`, bitmap 0), so a fully preallocated 64 TiB
///   image costs a few bytes per table, not its 8 GiB of entries;
/// - **sparse**: any other change goes to a small hash map of entries (`SparseEntries`) laid
///   over the runs (an entry there overrides the runs), so scattered writes cost about 16 to 32
///   bytes per entry set, not the table's 64 KiB;
/// - **dense**: once the map would hold more bytes than the table itself (past 3/8 of the
///   entries set), the table becomes raw words (entry, and bitmap with extended L2, interleaved
///   as on disk), the fastest form to read.
struct L2Store {
    /// A contiguous run of linked clusters inside one table.
    struct Run: Equatable {
        var first: Int
        var count: Int
        var host: UInt64
    }

    /// The form a table is in (see `L2Store`).
    enum Form: Equatable {
        /// No table here yet, or one with no entry set.
        case empty
        /// Runs only.
        case runs
        /// Scattered entries in a hash map, over zero or more runs.
        case sparse
        /// Raw words.
        case dense
    }

    /// One table: runs and a sparse map while compact, else raw words (entry, and bitmap with
    /// extended L2). Raw memory rather than an array because the MAP path reads it once per
    /// request and an array read through a class costs a retain/release pair
    /// (`qcow2sim-bench read-1e7`).
    final class Table {
        @exclusivity(unchecked) var runs: [Run] = [] {
            didSet {
                let r = runs.first ?? Run(first: 0, count: 0, host: 0)
                firstRun = (Int32(truncatingIfNeeded: r.first), Int32(truncatingIfNeeded: r.first + r.count), r.host)
            }
        }
        /// `runs[0]` as (first, end, host), read without touching the array (32-bit indices:
        /// a table has at most 2^18 entries).
        @exclusivity(unchecked) private(set) var firstRun: (first: Int32, end: Int32, host: UInt64) = (0, 0, 0)
        @exclusivity(unchecked) private(set) var words: UnsafeMutablePointer<UInt64>?
        @exclusivity(unchecked) private(set) var wordCount = 0
        /// Entries set outside the runs' pattern (they override the runs); empty when dense.
        @exclusivity(unchecked) var sparse: SparseEntries

        init(wordsPerEntry: Int = 1) { sparse = SparseEntries(wordsPerEntry: wordsPerEntry) }

        deinit {
            words?.deallocate()
            sparse.deallocate()
        }

        /// Switches to materialized words, copied from `values`.
        func setWords<C: Collection<UInt64>>(_ values: C) {
            words?.deallocate()
            let p = UnsafeMutablePointer<UInt64>.allocate(capacity: max(values.count, 1))
            var i = 0
            for v in values {
                p[i] = v
                i += 1
            }
            words = p
            wordCount = values.count
        }

        /// Switches to `count` zeroed words.
        func setZeroWords(count: Int) {
            words?.deallocate()
            let p = UnsafeMutablePointer<UInt64>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            words = p
            wordCount = count
        }

        /// The form this table is in.
        var form: Form {
            if words != nil { return .dense }
            if sparse.count > 0 { return .sparse }
            return runs.isEmpty ? .empty : .runs
        }

        /// Bytes of entry storage: the run list (`runs.count` runs), the sparse map's slots and
        /// the dense words; not the object header or the run array's spare capacity.
        var bytes: Int { runs.count * MemoryLayout<Run>.stride + sparse.bytes + wordCount * 8 }
    }

    /// Slots of the direct-mapped table cache (48 KiB per image; a 1 TiB image with 64 KiB
    /// clusters has 2048 tables; 16 K and 64 K slots measured no faster).
    static let recentSlots = 1 << 12

    /// At most this many runs per table; further links go to the sparse map. Runs are scanned
    /// linearly by a lookup that misses the first one, so the list stays short.
    static let maxRuns = 16

    let geometry: Geometry
    private var tables = TableMap<Table>()
    private let wordsPerEntry: Int
    /// The sparse map's largest slot count: the most slots that take no more bytes than the
    /// dense words (4096 slots = 3072 entries for 64 KiB clusters without extended L2).
    let maxSparseCapacity: Int
    /// Loads a table not yet in the store (from the image file); nil means all zeroes.
    var loader: ((UInt64) -> ContiguousArray<UInt64>?)?

    init(geometry: Geometry) {
        self.geometry = geometry
        let wpe = geometry.extendedL2 ? 2 : 1
        self.wordsPerEntry = wpe
        let denseBytes = geometry.l2Entries * wpe * 8
        var c = SparseEntries.minCapacity
        while 2 * c * SparseEntries.slotBytes(wordsPerEntry: wpe) <= denseBytes { c *= 2 }
        self.maxSparseCapacity = c
    }

    /// A direct-mapped cache in front of `tables` (host cluster number modulo its size): random
    /// access over thousands of tables skips the dictionary's hashing and the retain of the
    /// found table (`qcow2sim-bench read-1e7`: hashing plus retain/release were half the run).
    /// Entries are unretained: `tables` keeps every table alive for the store's lifetime.
    private let recentKeys = SlotBuffer<UInt64>(count: L2Store.recentSlots, repeating: .max)
    private let recentTables = SlotBuffer<Unmanaged<Table>>(
        count: L2Store.recentSlots, repeating: Unmanaged.passUnretained(L2Store.placeholder))
    nonisolated(unsafe) private static let placeholder = Table()

    @inline(__always)
    private mutating func table(_ offset: UInt64) -> Table {
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        if recentKeys[slot] == offset { return recentTables[slot].takeUnretainedValue() }
        return table(offset, missing: slot)
    }

    /// `table` past the recent-table cache (out of line: the lookups inline only the cache).
    @inline(never)
    private mutating func table(_ offset: UInt64, missing slot: Int) -> Table {
        let t: Table
        if let found = tables[offset] {
            t = found
        } else {
            t = Table(wordsPerEntry: wordsPerEntry)
            if let loader, let words = loader(offset) { load(words, into: t) }
            tables.set(offset, t)
        }
        recentKeys[slot] = offset
        recentTables[slot] = Unmanaged.passUnretained(t)
        return t
    }

    /// Puts a table read from the image file into its cheapest form: runs when its entries
    /// form at most `maxRuns` runs, the sparse map when few are set, else dense words.
    private func load(_ words: ContiguousArray<UInt64>, into t: Table) {
        let wpe = wordsPerEntry
        let n = min(geometry.l2Entries, words.count / wpe)
        let cs = geometry.clusterSize
        var runs: [Run] = []
        var set = 0
        var runnable = true
        for i in 0..<n {
            let w = words[i * wpe]
            let b = wpe == 2 ? words[i * wpe + 1] : 0
            guard w != 0 || b != 0 else { continue }
            set += 1
            guard runnable else { continue }
            // A run entry: COPIED, a cluster-aligned offset and no other bit, bitmap 0.
            let host = w & ~EntryBits.copied
            guard b == 0, w & EntryBits.copied != 0, host & ~EntryBits.offsetMask == 0, host != 0, host & (cs - 1) == 0
            else {
                runnable = false
                continue
            }
            if let last = runs.last, last.first + last.count == i, last.host + UInt64(last.count) * cs == host {
                runs[runs.count - 1].count += 1
            } else {
                runs.append(Run(first: i, count: 1, host: host))
                if runs.count > Self.maxRuns { runnable = false }
            }
        }
        if runnable {
            t.runs = runs
            return
        }
        if SparseEntries.fits(set, maxSparseCapacity) {
            for i in 0..<n {
                let w = words[i * wpe]
                let b = wpe == 2 ? words[i * wpe + 1] : 0
                if w != 0 || b != 0 { _ = t.sparse.set(i, word: w, bitmap: b, maxCapacity: maxSparseCapacity) }
            }
            return
        }
        t.setWords(words)
    }

    /// The entry word and bitmap (0 without extended L2) of entry `i` of the table at `offset`.
    @inline(__always)
    mutating func entry(_ offset: UInt64, _ i: Int) -> (word: UInt64, bitmap: UInt64) {
        let slot =
            Int(truncatingIfNeeded: offset &>> UInt64(truncatingIfNeeded: geometry.clusterBits)) & (L2Store.recentSlots &- 1)
        if recentKeys[slot] != offset { _ = table(offset) }
        // Borrow the table without a retain: `tables` owns it.
        return recentTables[slot]._withUnsafeGuaranteedRef { t in entry(in: t, i) }
    }

    @inline(__always)
    private func entry(in t: Table, _ i: Int) -> (word: UInt64, bitmap: UInt64) {
        if let w = t.words {
            let base = i * wordsPerEntry
            return (w[base], wordsPerEntry == 2 ? w[base + 1] : 0)
        }
        if t.sparse.count != 0, let e = t.sparse.get(i) { return e }
        return runEntry(in: t, i)
    }

    /// Entry `i` as the runs alone give it.
    @inline(__always)
    private func runEntry(in t: Table, _ i: Int) -> (word: UInt64, bitmap: UInt64) {
        let r0 = t.firstRun
        let first = Int(r0.first)
        if i >= first && i < Int(r0.end) {
            // Wrapping: host offsets of a run are below 2^56.
            let k = UInt64(truncatingIfNeeded: i &- first) &<< UInt64(truncatingIfNeeded: geometry.clusterBits)
            return ((r0.host &+ k) | EntryBits.copied, 0)
        }
        if t.runs.count < 2 { return (0, 0) }
        for r in t.runs where i >= r.first && i < r.first + r.count {
            return ((r.host + UInt64(i - r.first) << UInt64(geometry.clusterBits)) | EntryBits.copied, 0)
        }
        return (0, 0)
    }

    /// How many consecutive entries from `i` (at most `limit`) are all-zero (word and bitmap),
    /// answered from the run list without visiting entries when the table is runs only.
    mutating func zeroRunLength(_ offset: UInt64, from i: Int, limit: Int) -> Int {
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        if recentKeys[slot] != offset { _ = table(offset) }
        return recentTables[slot]._withUnsafeGuaranteedRef { t in
            guard t.words == nil && t.sparse.count == 0 else {
                var n = 0
                while n < limit && entry(in: t, i + n) == (0, 0) { n += 1 }
                return n
            }
            let r0 = (first: Int(t.firstRun.first), end: Int(t.firstRun.end))
            if t.runs.count < 2 {
                // At most one run: empty entries stop at its start (if it lies ahead).
                return r0.end > r0.first && r0.first >= i ? min(limit, r0.first - i) : (r0.end > i && r0.first <= i ? 0 : limit)
            }
            var next = i + limit
            for r in t.runs where r.first + r.count > i {
                next = min(next, max(r.first, i))
                break
            }
            return next - i
        }
    }

    /// Sets entry `i` of the table at `offset`.
    mutating func set(_ offset: UInt64, _ i: Int, word: UInt64, bitmap: UInt64) {
        set(table(offset), i, word: word, bitmap: bitmap)
    }

    private mutating func set(_ t: Table, _ i: Int, word: UInt64, bitmap: UInt64, wasZero: Bool = false) {
        if t.words == nil {
            // An entry the map does not hold and the runs already give needs no slot (a zero
            // outside the runs, or a run's own value). An entry known to be 0 before a nonzero
            // `word` cannot be one.
            if !wasZero && t.sparse.get(i) == nil && runEntry(in: t, i) == (word, bitmap) { return }
            if t.sparse.set(i, word: word, bitmap: bitmap, maxCapacity: maxSparseCapacity) { return }
            materialize(t)
        }
        guard let w = t.words else { return }
        let base = i * wordsPerEntry
        w[base] = word
        if wordsPerEntry == 2 { w[base + 1] = bitmap }
    }

    /// Links `count` contiguous clusters from host offset `host` at entries `first...`, with
    /// COPIED and a zero bitmap (preallocation, sequential allocation). Stays runs-only while
    /// the new run does not overlap existing ones, in any order (LINK runs newest meta first),
    /// and the list stays within `maxRuns`.
    /// `wasZero`: the caller knows every entry of the run is 0 now (a new cluster's link).
    mutating func linkRun(_ offset: UInt64, first: Int, count: Int, host: UInt64, wasZero: Bool = false) {
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        if recentKeys[slot] != offset { _ = table(offset) }
        // Borrowed from the recent-table cache: no retain and release per link.
        recentTables[slot]._withUnsafeGuaranteedRef { t in
            linkRun(in: t, first: first, count: count, host: host, wasZero: wasZero)
        }
    }

    private mutating func linkRun(in t: Table, first: Int, count: Int, host: UInt64, wasZero: Bool) {
        if t.words == nil && t.sparse.count == 0 {
            // Runs are sorted by `first` and never overlap.
            var at = t.runs.count
            while at > 0 && t.runs[at - 1].first > first { at -= 1 }
            let prevEnd = at > 0 ? t.runs[at - 1].first + t.runs[at - 1].count : 0
            let nextStart = at < t.runs.count ? t.runs[at].first : geometry.l2Entries
            if first >= prevEnd && first + count <= nextStart {
                let cb = UInt64(geometry.clusterBits)
                var run = Run(first: first, count: count, host: host)
                var lo = at, hi = at
                if at > 0, prevEnd == first, t.runs[at - 1].host + UInt64(t.runs[at - 1].count) << cb == host {
                    run = Run(first: t.runs[at - 1].first, count: t.runs[at - 1].count + count, host: t.runs[at - 1].host)
                    lo = at - 1
                }
                if at < t.runs.count, nextStart == first + count, host + UInt64(count) << cb == t.runs[at].host {
                    run.count += t.runs[at].count
                    hi = at + 1
                }
                if t.runs.count - (hi - lo) + 1 <= Self.maxRuns {
                    t.runs.replaceSubrange(lo..<hi, with: [run])
                    return
                }
                // Scattered links: a run list would grow to one run per cluster. Few entries
                // in the runs move to the map, so lookups probe it and skip the run scan.
                flattenIfSmall(t)
            }
        }
        for j in 0..<count {
            set(
                t, first + j, word: (host + UInt64(j) << UInt64(geometry.clusterBits)) | EntryBits.copied, bitmap: 0,
                wasZero: wasZero)
        }
    }

    /// Moves the runs' entries into the sparse map when they fit in it.
    private mutating func flattenIfSmall(_ t: Table) {
        let entries = t.runs.reduce(0) { $0 + $1.count }
        var c = SparseEntries.minCapacity
        while !SparseEntries.fits(entries, c) { c *= 2 }
        guard c <= maxSparseCapacity else { return }
        let runs = t.runs
        for r in runs {
            for j in 0..<r.count {
                let w = (r.host + UInt64(j) << UInt64(geometry.clusterBits)) | EntryBits.copied
                _ = t.sparse.set(r.first + j, word: w, bitmap: 0, maxCapacity: maxSparseCapacity)
            }
        }
        t.runs = []
    }

    /// Creates an all-zero table at `offset` (a new L2 table), or copies `from` (COW of a
    /// shared table).
    mutating func create(_ offset: UInt64, copying from: UInt64? = nil) {
        let t = Table(wordsPerEntry: wordsPerEntry)
        if let from {
            let src = table(from)
            t.runs = src.runs
            t.sparse = src.sparse.copy()
            if let w = src.words { t.setWords(UnsafeBufferPointer(start: w, count: src.wordCount)) }
        }
        tables.set(offset, t)
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        recentKeys[slot] = offset
        recentTables[slot] = Unmanaged.passUnretained(t)
    }

    /// Switches `t` to dense words: the runs' entries, then the map's over them.
    private mutating func materialize(_ t: Table) {
        guard t.words == nil else { return }
        let runs = t.runs
        t.setZeroWords(count: geometry.l2Entries * wordsPerEntry)
        guard let w = t.words else { return }
        for r in runs {
            for j in 0..<r.count {
                w[(r.first + j) * wordsPerEntry] = (r.host + UInt64(j) << UInt64(geometry.clusterBits)) | EntryBits.copied
            }
        }
        let wpe = wordsPerEntry
        t.sparse.forEach { i, word, bitmap in
            w[i * wpe] = word
            if wpe == 2 { w[i * wpe + 1] = bitmap }
        }
        t.sparse.deallocate()
        t.runs = []
    }

    /// The form of the table at `offset` (`.empty` when the store has none).
    func form(_ offset: UInt64) -> Form { tables[offset]?.form ?? .empty }

    /// Bytes of entry storage of the table at `offset` (`Table.bytes`; 0 when absent).
    func bytes(_ offset: UInt64) -> Int { tables[offset]?.bytes ?? 0 }

    /// Bytes of entry storage of every table.
    var totalBytes: Int { tables.values.reduce(0) { $0 + $1.bytes } }
}

/// The authoritative refcounts of an image, per refcount block (keyed by host offset).
///
/// A block is a sorted list of runs of equal non-zero refcounts while that list takes fewer
/// bytes than the block itself (allocation is sequential, preallocation gives one run per
/// block, scattered frees split runs), so memory follows the runs, not the 2 GiB a block
/// covers; past that it is dense, one 16-bit word per refcount (64-bit above refcount_bits=16),
/// at most the block's on-disk size for the default width.
struct RefcountStore {
    /// Refcounts `start ..< start + count` all equal `value` (non-zero). 16 bytes: a block has
    /// at most 2^24 entries (2 MiB clusters, refcount_bits=1).
    struct Run: Equatable {
        private var s: UInt32
        private var n: UInt32
        var value: UInt64

        init(start: Int, count: Int, value: UInt64) {
            s = UInt32(truncatingIfNeeded: start)
            n = UInt32(truncatingIfNeeded: count)
            self.value = value
        }

        @inline(__always) var start: Int { Int(s) }
        @inline(__always) var count: Int {
            get { Int(n) }
            set { n = UInt32(truncatingIfNeeded: newValue) }
        }
        @inline(__always) var end: Int { Int(s) + Int(n) }
    }

    /// The form a block is in.
    enum Form: Equatable {
        /// No block here yet, or all refcounts 0.
        case empty
        /// Runs.
        case runs
        /// One word per refcount.
        case dense
    }

    final class Block {
        @exclusivity(unchecked) var runs: [Run] = []
        /// Dense refcounts when refcount_bits ≤ 16.
        @exclusivity(unchecked) private(set) var narrow: UnsafeMutablePointer<UInt16>?
        /// Dense refcounts when refcount_bits > 16.
        @exclusivity(unchecked) private(set) var wide: UnsafeMutablePointer<UInt64>?
        @exclusivity(unchecked) private(set) var entries = 0

        init() {}

        deinit {
            narrow?.deallocate()
            wide?.deallocate()
        }

        var isDense: Bool { narrow != nil || wide != nil }

        /// Switches to `count` zeroed dense refcounts of 16 or 64 bits.
        func setZeroDense(count: Int, narrow isNarrow: Bool) {
            narrow?.deallocate()
            wide?.deallocate()
            narrow = nil
            wide = nil
            if isNarrow {
                let p = UnsafeMutablePointer<UInt16>.allocate(capacity: max(count, 1))
                p.initialize(repeating: 0, count: max(count, 1))
                narrow = p
            } else {
                let p = UnsafeMutablePointer<UInt64>.allocate(capacity: max(count, 1))
                p.initialize(repeating: 0, count: max(count, 1))
                wide = p
            }
            entries = count
        }

        /// Dense refcount `i` (the block is dense).
        @inline(__always) func dense(_ i: Int) -> UInt64 {
            if let p = narrow { return UInt64(p[i]) }
            if let p = wide { return p[i] }
            return 0
        }

        /// Sets dense refcount `i` (the block is dense; `v` fits the width).
        @inline(__always) func setDense(_ i: Int, _ v: UInt64) {
            if let p = narrow {
                p[i] = UInt16(truncatingIfNeeded: v)
            } else if let p = wide {
                p[i] = v
            }
        }

        /// Sets refcount `i` to `v` where no run needs splitting: a dense block, or a refcount just
        /// past the last run that extends it (sequential allocation). Returns whether it did.
        @inline(__always) func setFast(_ i: Int, _ v: UInt64) -> Bool {
            if isDense {
                setDense(i, v)
                return true
            }
            // The last run through the array's buffer: one uniqueness check, no bounds checks.
            let n = runs.count
            guard n > 0 else { return false }
            return runs.withUnsafeMutableBufferPointer { r in
                guard i == r[n &- 1].end, v == r[n &- 1].value else { return false }
                r[n &- 1].count &+= 1
                return true
            }
        }

        var form: Form { isDense ? .dense : (runs.isEmpty ? .empty : .runs) }

        /// Bytes of refcount storage: the runs (16 bytes each) or the dense words; not the
        /// object header or the run array's spare capacity.
        var bytes: Int {
            runs.count * MemoryLayout<Run>.stride + entries * (narrow != nil ? 2 : (wide != nil ? 8 : 0))
        }
    }

    let geometry: Geometry
    /// Dense blocks hold 16-bit refcounts (refcount_bits ≤ 16).
    private let narrow: Bool
    /// Above this many runs a block is dense: the runs would take more bytes than the dense
    /// words (4096 runs for 64 KiB clusters and refcount_bits=16). Tests lower it to reach the
    /// dense form on small blocks.
    var maxRuns: Int
    private var blocks = TableMap<Block>()
    private var lastOffset: UInt64 = .max
    // Unretained, as `L2Store.recentTables`: `blocks` keeps every block alive.
    private var lastBlock = Unmanaged.passUnretained(RefcountStore.placeholder)
    nonisolated(unsafe) private static let placeholder = Block()
    /// Loads a block not yet in the store (from the image file); nil means all zeroes.
    var loader: ((UInt64) -> ContiguousArray<UInt64>?)?

    init(geometry: Geometry) {
        self.geometry = geometry
        narrow = geometry.refcountBits <= 16
        let denseBytes = Int(geometry.refblockEntries) * (narrow ? 2 : 8)
        maxRuns = max(16, denseBytes / MemoryLayout<Run>.stride)
    }

    @inline(__always)
    private mutating func block(_ offset: UInt64) -> Block {
        if offset == lastOffset { return lastBlock.takeUnretainedValue() }
        let b: Block
        if let found = blocks[offset] {
            b = found
        } else {
            b = Block()
            if let loader, let words = loader(offset) { load(words, into: b) }
            blocks.set(offset, b)
        }
        lastOffset = offset
        lastBlock = Unmanaged.passUnretained(b)
        return b
    }

    /// Puts a block read from the image file into runs, or dense when they are too many.
    private func load(_ words: ContiguousArray<UInt64>, into b: Block) {
        var runs: [Run] = []
        let n = min(words.count, Int(geometry.refblockEntries))
        var i = 0
        while i < n && runs.count <= maxRuns {
            let v = words[i]
            var j = i + 1
            while j < n && words[j] == v { j += 1 }
            if v != 0 { runs.append(Run(start: i, count: j - i, value: v)) }
            i = j
        }
        if runs.count <= maxRuns {
            b.runs = runs
            return
        }
        b.setZeroDense(count: Int(geometry.refblockEntries), narrow: narrow)
        for k in 0..<n where words[k] != 0 { b.setDense(k, words[k]) }
    }

    /// Index of the last run starting at or before `i`, or -1.
    @inline(__always)
    private static func runIndex(_ runs: [Run], _ i: Int) -> Int {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if runs[mid].start <= i { lo = mid + 1 } else { hi = mid }
        }
        return lo - 1
    }

    /// Refcount `i` of the block at `offset`.
    @inline(__always) mutating func get(_ offset: UInt64, _ i: Int) -> UInt64 {
        if offset != lastOffset { _ = block(offset) }
        return lastBlock._withUnsafeGuaranteedRef { b in
            if b.isDense { return b.dense(i) }
            if let last = b.runs.last, i >= last.start {
                return i < last.end ? last.value : 0
            }
            let r = Self.runIndex(b.runs, i)
            return r >= 0 && i < b.runs[r].end ? b.runs[r].value : 0
        }
    }

    /// Sets refcount `i` of the block at `offset`.
    mutating func set(_ offset: UInt64, _ i: Int, _ v: UInt64) {
        if offset != lastOffset { _ = block(offset) }
        // Fast paths on the borrowed block (no retain per refcount update).
        if lastBlock._withUnsafeGuaranteedRef({ $0.setFast(i, v) }) { return }
        if get(offset, i) == v { return }
        assign(block(offset), i..<(i + 1), v)
    }

    /// How many refcounts from `i` (at most `limit`) equal refcount `i`.
    mutating func runLength(_ offset: UInt64, from i: Int, limit: Int) -> Int {
        let b = block(offset)
        if b.isDense {
            let v = b.dense(i)
            var n = 1
            while n < limit && b.dense(i + n) == v { n += 1 }
            return n
        }
        let r = Self.runIndex(b.runs, i)
        if r >= 0 && i < b.runs[r].end {
            // Runs are merged when adjacent and equal, so one run holds the whole stretch.
            return min(limit, b.runs[r].end - i)
        }
        let next = r + 1 < b.runs.count ? b.runs[r + 1].start : Int.max
        return min(limit, next - i)
    }

    /// Sets refcounts `range` of the block at `offset` to `v` (0 clears them).
    mutating func set(_ offset: UInt64, _ range: Range<Int>, _ v: UInt64) {
        let b = block(offset)
        if b.isDense {
            for i in range { b.setDense(i, v) }
            return
        }
        if v == 0 {
            if !b.runs.isEmpty { assign(b, range, 0) }
            return
        }
        // Extending the last run, or appending after it (sequential allocation).
        if let lastRun = b.runs.last, range.lowerBound >= lastRun.end {
            if range.lowerBound == lastRun.end && lastRun.value == v {
                b.runs[b.runs.count - 1].count += range.count
            } else {
                b.runs.append(Run(start: range.lowerBound, count: range.count, value: v))
                densifyIfLong(b)
            }
        } else if b.runs.isEmpty {
            b.runs = [Run(start: range.lowerBound, count: range.count, value: v)]
        } else {
            assign(b, range, v)
        }
    }

    /// Sets refcounts `range` of run-form block `b` to `v` (0 clears them), in place: only the
    /// runs `range` overlaps and their two neighbours are rebuilt, and equal adjacent runs are
    /// joined (`runLength` relies on it).
    private func assign(_ b: Block, _ range: Range<Int>, _ v: UInt64) {
        let lo = range.lowerBound, hi = range.upperBound
        var a = Self.runIndex(b.runs, lo)
        if a < 0 || b.runs[a].end <= lo { a += 1 }
        var e = a
        while e < b.runs.count && b.runs[e].start < hi { e += 1 }
        // Runs a..<e overlap the range; widen by one on each side to join equal neighbours.
        let from = max(a - 1, 0), to = min(e + 1, b.runs.count)
        var pieces: [Run] = []
        pieces.reserveCapacity(to - from + 2)
        func add(_ r: Run) {
            guard r.count > 0 else { return }
            if let last = pieces.last, last.end == r.start, last.value == r.value {
                pieces[pieces.count - 1].count += r.count
            } else {
                pieces.append(r)
            }
        }
        var placed = false
        func place() {
            if !placed && v != 0 { add(Run(start: lo, count: hi - lo, value: v)) }
            placed = true
        }
        for j in from..<to {
            let r = b.runs[j]
            if r.end <= lo {
                add(r)
            } else if r.start >= hi {
                place()
                add(r)
            } else {
                if r.start < lo { add(Run(start: r.start, count: lo - r.start, value: r.value)) }
                place()
                if r.end > hi { add(Run(start: hi, count: r.end - hi, value: r.value)) }
            }
        }
        place()
        b.runs.replaceSubrange(from..<to, with: pieces)
        densifyIfLong(b)
    }

    /// Switches `b` to dense refcounts when its runs outgrow `maxRuns`.
    private func densifyIfLong(_ b: Block) {
        guard b.runs.count > maxRuns else { return }
        let runs = b.runs
        b.setZeroDense(count: Int(geometry.refblockEntries), narrow: narrow)
        for r in runs { for j in r.start..<r.end { b.setDense(j, r.value) } }
        b.runs = []
    }

    /// The first index at or after `i` (below `end`) whose refcount is 0, or `end`.
    mutating func firstZero(_ offset: UInt64, from i: Int, end: Int) -> Int {
        let b = block(offset)
        if b.isDense {
            var j = i
            while j < end && b.dense(j) != 0 { j += 1 }
            return j
        }
        var j = i
        var r = max(Self.runIndex(b.runs, j), 0)
        while r < b.runs.count && j < end {
            let run = b.runs[r]
            if j < run.start { return j }
            if j < run.end { j = run.end }
            r += 1
        }
        return min(j, end)
    }

    /// The first index at or after `i` (below `end`) whose refcount is not 0, or `end`.
    mutating func firstNonZero(_ offset: UInt64, from i: Int, end: Int) -> Int {
        let b = block(offset)
        if b.isDense {
            var j = i
            while j < end && b.dense(j) == 0 { j += 1 }
            return j
        }
        let r = Self.runIndex(b.runs, i)
        if r >= 0 && i < b.runs[r].end { return i }
        let next = r + 1 < b.runs.count ? b.runs[r + 1].start : end
        return min(next, end)
    }

    /// Replaces the block at `offset` with zeroes (a new refcount block).
    mutating func zero(_ offset: UInt64) {
        let b = Block()
        blocks.set(offset, b)
        lastOffset = offset
        lastBlock = Unmanaged.passUnretained(b)
    }

    /// The form of the block at `offset` (`.empty` when the store has none).
    func form(_ offset: UInt64) -> Form { blocks[offset]?.form ?? .empty }

    /// Bytes of refcount storage of the block at `offset` (`Block.bytes`; 0 when absent).
    func bytes(_ offset: UInt64) -> Int { blocks[offset]?.bytes ?? 0 }

    /// Bytes of refcount storage of every block.
    var totalBytes: Int { blocks.values.reduce(0) { $0 + $1.bytes } }
}

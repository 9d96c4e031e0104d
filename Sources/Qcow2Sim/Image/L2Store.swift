/// The authoritative content of an image's L2 tables (qcow2-model.md §1.3), keyed by the
/// table's host offset.
///
/// Tables are kept compact until they are modified: a table written by preallocation or by
/// sequential allocation is a list of runs (`entry(i) = host + (i - first) * CS | COPIED`, bitmap
/// 0), so a fully preallocated 64 TiB image costs a few bytes per table, not its 8 GiB of
/// entries. Any other change materializes the table into words (entry, and bitmap with extended
/// L2, interleaved as on disk).
struct L2Store {
    /// A contiguous run of linked clusters inside one table.
    struct Run: Equatable {
        var first: Int
        var count: Int
        var host: UInt64
    }

    /// One table: runs while compact, else raw words (entry, and bitmap with extended L2).
    /// Raw memory rather than an array because the MAP path reads it once per request and an
    /// array read through a class costs a retain/release pair (`qcow2sim-bench read-1e7`).
    final class Table {
        var runs: [Run] = [] {
            didSet {
                let r = runs.first ?? Run(first: 0, count: 0, host: 0)
                firstRun = (r.first, r.first + r.count, r.host)
            }
        }
        /// `runs[0]` as (first, end, host), read without touching the array.
        private(set) var firstRun: (first: Int, end: Int, host: UInt64) = (0, 0, 0)
        private(set) var words: UnsafeMutablePointer<UInt64>?
        private var wordCount = 0

        init() {}

        deinit { words?.deallocate() }

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

        /// The words as a collection (for copying a table).
        var wordArray: [UInt64]? { words.map { Array(UnsafeBufferPointer(start: $0, count: wordCount)) } }
    }

    /// Slots of the direct-mapped table cache (48 KiB per image; a 1 TiB image with 64 KiB
    /// clusters has 2048 tables; 16 K and 64 K slots measured no faster).
    static let recentSlots = 1 << 12

    /// Above this many runs a table is materialized into words.
    static let maxRuns = 16

    let geometry: Geometry
    private var tables: [UInt64: Table] = [:]
    private let wordsPerEntry: Int
    /// Loads a table not yet in the store (from the image file); nil means all zeroes.
    var loader: ((UInt64) -> ContiguousArray<UInt64>?)?

    init(geometry: Geometry) {
        self.geometry = geometry
        self.wordsPerEntry = geometry.extendedL2 ? 2 : 1
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
        let t: Table
        if let found = tables[offset] {
            t = found
        } else {
            t = Table()
            if let loader, let words = loader(offset) { t.setWords(words) }
            tables[offset] = t
        }
        recentKeys[slot] = offset
        recentTables[slot] = Unmanaged.passUnretained(t)
        return t
    }

    /// The entry word and bitmap (0 without extended L2) of entry `i` of the table at `offset`.
    @inline(__always)
    mutating func entry(_ offset: UInt64, _ i: Int) -> (word: UInt64, bitmap: UInt64) {
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
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
        let r0 = t.firstRun
        if i >= r0.first && i < r0.end {
            return ((r0.host + UInt64(i - r0.first) << UInt64(geometry.clusterBits)) | EntryBits.copied, 0)
        }
        if t.runs.count < 2 { return (0, 0) }
        for r in t.runs where i >= r.first && i < r.first + r.count {
            return ((r.host + UInt64(i - r.first) << UInt64(geometry.clusterBits)) | EntryBits.copied, 0)
        }
        return (0, 0)
    }

    /// How many consecutive entries from `i` (at most `limit`) are all-zero (word and bitmap),
    /// answered from the run list without visiting entries when the table is compact.
    mutating func zeroRunLength(_ offset: UInt64, from i: Int, limit: Int) -> Int {
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        if recentKeys[slot] != offset { _ = table(offset) }
        return recentTables[slot]._withUnsafeGuaranteedRef { t in
            guard t.words == nil else {
                var n = 0
                while n < limit && entry(in: t, i + n) == (0, 0) { n += 1 }
                return n
            }
            let r0 = t.firstRun
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
        let t = table(offset)
        materialize(t)
        let base = i * wordsPerEntry
        guard let w = t.words else { return }
        w[base] = word
        if wordsPerEntry == 2 { w[base + 1] = bitmap }
    }

    /// Links `count` contiguous clusters from host offset `host` at entries `first...`, with
    /// COPIED and a zero bitmap (preallocation, sequential allocation). Stays compact while the
    /// new run does not overlap existing ones, in any order (LINK runs newest meta first).
    mutating func linkRun(_ offset: UInt64, first: Int, count: Int, host: UInt64) {
        let t = table(offset)
        if t.words == nil && t.runs.count >= Self.maxRuns {
            // Scattered links: a run list would grow to one run per cluster.
            materialize(t)
        }
        if t.words == nil {
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
                t.runs.replaceSubrange(lo..<hi, with: [run])
                return
            }
        }
        for j in 0..<count {
            set(offset, first + j, word: (host + UInt64(j) << UInt64(geometry.clusterBits)) | EntryBits.copied, bitmap: 0)
        }
    }

    /// Creates an all-zero table at `offset` (a new L2 table), or copies `from` (COW of a
    /// shared table).
    mutating func create(_ offset: UInt64, copying from: UInt64? = nil) {
        let t = Table()
        if let from {
            let src = table(from)
            t.runs = src.runs
            if let w = src.wordArray { t.setWords(w) }
        }
        tables[offset] = t
        let slot = Int(truncatingIfNeeded: offset >> UInt64(geometry.clusterBits)) & (L2Store.recentSlots - 1)
        recentKeys[slot] = offset
        recentTables[slot] = Unmanaged.passUnretained(t)
    }

    private func materialize(_ t: Table) {
        guard t.words == nil else { return }
        let runs = t.runs
        t.setZeroWords(count: geometry.l2Entries * wordsPerEntry)
        guard let w = t.words else { return }
        for r in runs {
            for j in 0..<r.count {
                w[(r.first + j) * wordsPerEntry] = (r.host + UInt64(j) << UInt64(geometry.clusterBits)) | EntryBits.copied
            }
        }
        t.runs = []
    }
}

/// The authoritative refcounts of an image, per refcount block (keyed by host offset).
///
/// A block is a sorted list of runs of equal non-zero refcounts while that list stays short
/// (allocation is sequential, preallocation gives one run per block), and a plain array
/// otherwise, so a fully preallocated 64 TiB image holds a few runs per 2 GiB block.
struct RefcountStore {
    struct Run {
        var start: Int
        var count: Int
        var value: UInt64
    }

    final class Block {
        var runs: [Run] = []
        var words: ContiguousArray<UInt64>?
        init() {}
    }

    /// Above this many runs a block is materialized.
    static let maxRuns = 64

    let geometry: Geometry
    private var blocks: [UInt64: Block] = [:]
    private var lastOffset: UInt64 = .max
    // Unretained, as `L2Store.recentTables`: `blocks` keeps every block alive.
    private var lastBlock = Unmanaged.passUnretained(RefcountStore.placeholder)
    nonisolated(unsafe) private static let placeholder = Block()
    /// Loads a block not yet in the store (from the image file); nil means all zeroes.
    var loader: ((UInt64) -> ContiguousArray<UInt64>?)?

    init(geometry: Geometry) { self.geometry = geometry }

    @inline(__always)
    private mutating func block(_ offset: UInt64) -> Block {
        if offset == lastOffset { return lastBlock.takeUnretainedValue() }
        let b: Block
        if let found = blocks[offset] {
            b = found
        } else {
            b = Block()
            if let loader, let words = loader(offset) { b.words = words }
            blocks[offset] = b
        }
        lastOffset = offset
        lastBlock = Unmanaged.passUnretained(b)
        return b
    }

    /// `runs` (sorted, disjoint) with adjacent runs of equal value joined, so that one run holds
    /// a whole stretch of equal refcounts (`runLength` relies on it).
    private static func merged(_ runs: [Run]) -> [Run] {
        var merged: [Run] = []
        merged.reserveCapacity(runs.count)
        for r in runs {
            if var last = merged.last, last.start + last.count == r.start, last.value == r.value {
                last.count += r.count
                merged[merged.count - 1] = last
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    /// Index of the last run starting at or before `i`, or -1.
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
            if let w = b.words { return w[i] }
            if let last = b.runs.last, i >= last.start {
                return i < last.start + last.count ? last.value : 0
            }
            let r = Self.runIndex(b.runs, i)
            return r >= 0 && i < b.runs[r].start + b.runs[r].count ? b.runs[r].value : 0
        }
    }

    /// Sets refcount `i` of the block at `offset`.
    mutating func set(_ offset: UInt64, _ i: Int, _ v: UInt64) {
        if offset != lastOffset { _ = block(offset) }
        // Fast paths on the borrowed block (no retain per refcount update).
        let done = lastBlock._withUnsafeGuaranteedRef { b -> Bool in
            if b.words != nil {
                b.words?[i] = v
                return true
            }
            // Extending the last run (sequential allocation).
            let n = b.runs.count
            if n > 0, i == b.runs[n - 1].start + b.runs[n - 1].count, v == b.runs[n - 1].value {
                b.runs[n - 1].count += 1
                return true
            }
            return false
        }
        if done { return }
        let b = block(offset)
        if get(offset, i) == v { return }
        // General case: rebuild the runs around i.
        var runs: [Run] = []
        runs.reserveCapacity(b.runs.count + 2)
        for r in b.runs {
            if i >= r.start && i < r.start + r.count {
                if i > r.start { runs.append(Run(start: r.start, count: i - r.start, value: r.value)) }
                if i + 1 < r.start + r.count { runs.append(Run(start: i + 1, count: r.start + r.count - i - 1, value: r.value)) }
            } else {
                runs.append(r)
            }
        }
        if v != 0 {
            let at = runs.firstIndex { $0.start > i } ?? runs.count
            runs.insert(Run(start: i, count: 1, value: v), at: at)
        }
        store(Self.merged(runs), in: b)
    }

    /// How many refcounts from `i` (at most `limit`) equal refcount `i`.
    mutating func runLength(_ offset: UInt64, from i: Int, limit: Int) -> Int {
        let b = block(offset)
        if let w = b.words {
            let v = w[i]
            var n = 1
            while n < limit && w[i + n] == v { n += 1 }
            return n
        }
        let r = Self.runIndex(b.runs, i)
        if r >= 0 && i < b.runs[r].start + b.runs[r].count {
            // Runs are merged when adjacent and equal, so one run holds the whole stretch.
            return min(limit, b.runs[r].start + b.runs[r].count - i)
        }
        let next = r + 1 < b.runs.count ? b.runs[r + 1].start : Int.max
        return min(limit, next - i)
    }

    /// Sets refcounts `range` of the block at `offset` to `v` (non-zero).
    mutating func set(_ offset: UInt64, _ range: Range<Int>, _ v: UInt64) {
        let b = block(offset)
        if b.words != nil {
            for i in range { b.words?[i] = v }
            return
        }
        // Extending the last run, or appending after it (sequential allocation).
        if let lastRun = b.runs.last, range.lowerBound >= lastRun.start + lastRun.count {
            if range.lowerBound == lastRun.start + lastRun.count && lastRun.value == v {
                b.runs[b.runs.count - 1].count += range.count
            } else {
                b.runs.append(Run(start: range.lowerBound, count: range.count, value: v))
            }
        } else if b.runs.isEmpty {
            b.runs = [Run(start: range.lowerBound, count: range.count, value: v)]
        } else {
            var runs: [Run] = []
            runs.reserveCapacity(b.runs.count + 2)
            var placed = false
            for r in b.runs {
                let end = r.start + r.count
                if end <= range.lowerBound || r.start >= range.upperBound {
                    if !placed && r.start >= range.upperBound {
                        runs.append(Run(start: range.lowerBound, count: range.count, value: v))
                        placed = true
                    }
                    runs.append(r)
                    continue
                }
                if r.start < range.lowerBound {
                    runs.append(Run(start: r.start, count: range.lowerBound - r.start, value: r.value))
                }
                if !placed {
                    runs.append(Run(start: range.lowerBound, count: range.count, value: v))
                    placed = true
                }
                if end > range.upperBound {
                    runs.append(Run(start: range.upperBound, count: end - range.upperBound, value: r.value))
                }
            }
            if !placed { runs.append(Run(start: range.lowerBound, count: range.count, value: v)) }
            b.runs = Self.merged(runs)
        }
        store(b.runs, in: b)
    }

    /// Keeps `runs` as `b`'s runs, or materializes the block when they are more than `maxRuns`.
    private func store(_ runs: [Run], in b: Block) {
        guard runs.count > Self.maxRuns else {
            b.runs = runs
            return
        }
        var w = ContiguousArray<UInt64>(repeating: 0, count: Int(geometry.refblockEntries))
        for r in runs { for j in r.start..<(r.start + r.count) { w[j] = r.value } }
        b.words = w
        b.runs = []
    }

    /// The first index at or after `i` (below `end`) whose refcount is 0, or `end`.
    mutating func firstZero(_ offset: UInt64, from i: Int, end: Int) -> Int {
        let b = block(offset)
        if let w = b.words {
            var j = i
            while j < end && w[j] != 0 { j += 1 }
            return j
        }
        var j = i
        var r = max(Self.runIndex(b.runs, j), 0)
        while r < b.runs.count && j < end {
            let run = b.runs[r]
            if j < run.start { return j }
            if j < run.start + run.count { j = run.start + run.count }
            r += 1
        }
        return min(j, end)
    }

    /// The first index at or after `i` (below `end`) whose refcount is not 0, or `end`.
    mutating func firstNonZero(_ offset: UInt64, from i: Int, end: Int) -> Int {
        let b = block(offset)
        if let w = b.words {
            var j = i
            while j < end && w[j] == 0 { j += 1 }
            return j
        }
        let r = Self.runIndex(b.runs, i)
        if r >= 0 && i < b.runs[r].start + b.runs[r].count { return i }
        let next = r + 1 < b.runs.count ? b.runs[r + 1].start : end
        return min(next, end)
    }

    /// Replaces the block at `offset` with zeroes (a new refcount block).
    mutating func zero(_ offset: UInt64) {
        let b = Block()
        blocks[offset] = b
        lastOffset = offset
        lastBlock = Unmanaged.passUnretained(b)
    }
}

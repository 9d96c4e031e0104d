/// A set of 4 KiB block numbers of the host file, in pages of 512 blocks (2 MiB): pages wholly
/// in the set are kept as sorted ranges of page numbers, partly filled pages as bitmaps.
///
/// Why both: overwrites land anywhere in a large image file, so partly filled pages want O(1)
/// bit updates (a sorted list of block ranges shifted on every insert: `qcow2sim-bench
/// write50-1e6` spent 15 % of its run in memmove); but a long write fills whole pages, and one
/// bitmap per 2 MiB made a 16 TiB write hold 8 M bitmaps (2.5 GB). Whole pages cost one range
/// per contiguous stretch, so memory follows the number of distinct extents, not the file size.
///
/// Invariants: `full` is sorted, its ranges non-empty, disjoint and not touching; a page is in
/// at most one of `full` and `partial`; a `partial` bitmap is neither empty nor full; `count`
/// is the number of blocks in the set.
struct BlockRanges {
    static let pageBits = 9
    static let pageBlocks: UInt64 = 1 << 9
    static let wordsPerPage = (1 << pageBits) / 64

    /// Pages wholly in the set, as page-number ranges.
    private var full: [Range<UInt64>] = []
    /// Bitmaps of the pages partly in the set.
    private var partial = PageBitmaps()
    private var sortedPartialCache: [UInt64]?
    /// Number of blocks in the set.
    private(set) var count: UInt64 = 0

    // MARK: whole pages

    /// Index of the first range of `full` whose upper bound is above `page`.
    private func firstFull(endingAfter page: UInt64) -> Int {
        var lo = 0, hi = full.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if full[mid].upperBound <= page { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func isFull(_ page: UInt64) -> Bool {
        let i = firstFull(endingAfter: page)
        return i < full.count && full[i].lowerBound <= page
    }

    /// Adds the pages of `pr` to `full`; returns how many were not in it yet.
    private mutating func addFull(_ pr: Range<UInt64>) -> UInt64 {
        // Ranges overlapping or touching `pr`: [lo, hi).
        var lo = firstFull(endingAfter: pr.lowerBound)
        if lo > 0 && full[lo - 1].upperBound == pr.lowerBound { lo -= 1 }
        var hi = lo
        var covered: UInt64 = 0
        var lower = pr.lowerBound, upper = pr.upperBound
        while hi < full.count && full[hi].lowerBound <= pr.upperBound {
            let r = full[hi]
            let a = max(r.lowerBound, pr.lowerBound), b = min(r.upperBound, pr.upperBound)
            if b > a { covered += b - a }
            lower = min(lower, r.lowerBound)
            upper = max(upper, r.upperBound)
            hi += 1
        }
        full.replaceSubrange(lo..<hi, with: CollectionOfOne(lower..<upper))
        return UInt64(pr.count) - covered
    }

    /// Removes the pages of `pr` from `full`; returns how many were in it.
    private mutating func removeFull(_ pr: Range<UInt64>) -> UInt64 {
        let lo = firstFull(endingAfter: pr.lowerBound)
        var hi = lo
        var removed: UInt64 = 0
        var keep: [Range<UInt64>] = []
        while hi < full.count && full[hi].lowerBound < pr.upperBound {
            let r = full[hi]
            removed += min(r.upperBound, pr.upperBound) - max(r.lowerBound, pr.lowerBound)
            if r.lowerBound < pr.lowerBound { keep.append(r.lowerBound..<pr.lowerBound) }
            if r.upperBound > pr.upperBound { keep.append(pr.upperBound..<r.upperBound) }
            hi += 1
        }
        if hi > lo { full.replaceSubrange(lo..<hi, with: keep) }
        return removed
    }

    /// Sets or clears every block of the whole pages `pr`.
    private mutating func updateWholePages(_ pr: Range<UInt64>, set: Bool) {
        // Partly filled pages inside become full or empty: drop their bitmaps first.
        let inside: [UInt64] =
            UInt64(partial.count) <= UInt64(pr.count)
            ? partial.pages.filter { pr.contains($0) } : pr.filter { partial.find($0) != nil }
        for page in inside {
            guard let bk = partial.find(page) else { continue }
            let bits = partial.population(bk)
            count = set ? count + (Self.pageBlocks - bits) : count - bits
            partial.remove(at: bk)
        }
        if !inside.isEmpty { sortedPartialCache = nil }
        if set {
            // Pages that were partial are counted above; addFull counts them as new again.
            let added = addFull(pr) - UInt64(inside.count)
            count += added * Self.pageBlocks
        } else {
            count -= removeFull(pr) * Self.pageBlocks
        }
    }

    // MARK: partial pages

    /// Sets or clears blocks `[a, b)` (page-relative, `b - a` < 512 or not page-aligned) of `page`.
    /// Inlined for the common case, a page held as a bitmap that stays partly filled (a cluster's
    /// blocks at the end of the file, one data block); the rest out of line.
    @inline(__always)
    private mutating func updatePartOfPage(_ page: UInt64, _ a: Int, _ b: Int, set: Bool) {
        guard let bk = partial.findRemembering(page) ?? bitmap(forAbsent: page, set: set) else { return }
        let before = partial.population(bk)
        let after = partial.apply(bk, a, b, set: set)
        count = count &- before &+ after
        if after == Self.pageBlocks || after == 0 { settlePage(page, bucket: bk) }
    }

    /// A bitmap for `page`, which has none (it is wholly in the set or wholly out of it), to
    /// update; nil when the update changes nothing (setting inside a whole page, clearing
    /// inside an absent one).
    @inline(never)
    private mutating func bitmap(forAbsent page: UInt64, set: Bool) -> Int? {
        let wasFull = isFull(page)
        if set == wasFull { return nil }
        if wasFull { _ = removeFull(page..<(page + 1)) }
        sortedPartialCache = nil
        return partial.insert(page, filled: wasFull)
    }

    /// A bitmap that became full (the page joins `full`) or empty (it leaves the set): dropped.
    @inline(never)
    private mutating func settlePage(_ page: UInt64, bucket bk: Int) {
        let full = partial.population(bk) == Self.pageBlocks
        partial.remove(at: bk)
        sortedPartialCache = nil
        if full { _ = addFull(page..<(page + 1)) }
    }

    /// Applies `set` (or clear) to every block of `r`.
    private mutating func update(_ r: Range<UInt64>, set: Bool) {
        var b = r.lowerBound
        let e = r.upperBound
        while b < e {
            let page = b >> UInt64(Self.pageBits)
            let pageStart = page << UInt64(Self.pageBits)
            if b == pageStart && e - b >= Self.pageBlocks {
                let endPage = e >> UInt64(Self.pageBits)
                updateWholePages(page..<endPage, set: set)
                b = endPage << UInt64(Self.pageBits)
                continue
            }
            let segEnd = min(e, pageStart + Self.pageBlocks)
            updatePartOfPage(page, Int(b - pageStart), Int(segEnd - pageStart), set: set)
            b = segEnd
        }
    }

    @inline(__always)
    mutating func insert(_ r: Range<UInt64>) {
        // Most inserts: blocks inside one 64-block word of a page held as a bitmap (a new
        // cluster's blocks at the end of the file, one data block): one mask, no loop.
        let lo = r.lowerBound, hi = r.upperBound
        if hi > lo && lo >> 6 == (hi &- 1) >> 6, let bk = partial.findRemembering(lo >> UInt64(Self.pageBits)) {
            let span = hi &- lo
            let m: UInt64 = (span == 64 ? ~0 : ((1 &<< span) &- 1)) &<< (lo & 63)
            let (added, after) = partial.setBits(
                bk, Int(truncatingIfNeeded: (lo >> 6) & UInt64(Self.wordsPerPage &- 1)), m, count: span)
            count &+= added
            if after == Self.pageBlocks { settlePage(lo >> UInt64(Self.pageBits), bucket: bk) }
            return
        }
        update(r, set: true)
    }

    mutating func remove(_ r: Range<UInt64>) { update(r, set: false) }

    /// How many blocks of `r` are in the set when `r` lies inside one page: none (`.empty`), all
    /// (`.all`) or some; nil for a range over pages (the caller then updates it as it is). A
    /// lookup without an update: most host writes rewrite blocks already written (a table's
    /// write-back) or fill blocks already allocated, and then skip one set or both.
    enum Membership { case empty, some, all }

    mutating func membership(_ r: Range<UInt64>) -> Membership? {
        let pageBits = UInt64(Self.pageBits)
        let page = r.lowerBound >> pageBits
        guard !r.isEmpty, (r.upperBound - 1) >> pageBits == page else { return nil }
        guard let bk = partial.findRemembering(page) else { return isFull(page) ? .all : .empty }
        let a = Int(r.lowerBound & (Self.pageBlocks - 1)), b = Int((r.upperBound - 1) & (Self.pageBlocks - 1)) + 1
        if a >> 6 == (b - 1) >> 6 {
            // Inside one word (a 4 KiB write, a 64 KiB cluster): one mask.
            let span = b - a
            let m: UInt64 = (span == 64 ? ~0 : ((1 &<< UInt64(span)) &- 1)) &<< UInt64(a & 63)
            let present = partial.word(bk, a >> 6) & m
            return present == 0 ? .empty : present == m ? .all : .some
        }
        var any = false, all = true
        var i = a
        while i < b {
            let w = i >> 6, bit = i & 63
            let span = min(64 - bit, b - i)
            let m: UInt64 = (span == 64 ? ~0 : ((1 &<< UInt64(span)) &- 1)) &<< UInt64(bit)
            let present = partial.word(bk, w) & m
            if present != 0 { any = true }
            if present != m { all = false }
            i += span
        }
        return all ? .all : any ? .some : .empty
    }

    /// Whether block `b` is in the set.
    func contains(_ b: UInt64) -> Bool {
        let page = b >> UInt64(Self.pageBits)
        if let bk = partial.find(page) {
            return partial.word(bk, Int((b >> 6) & UInt64(Self.wordsPerPage - 1))) & (1 << (b & 63)) != 0
        }
        return isFull(page)
    }

    private mutating func sortedPartialPages() -> [UInt64] {
        if let k = sortedPartialCache { return k }
        let k = partial.pages.sorted()
        sortedPartialCache = k
        return k
    }

    /// The first block at or after `from` (page-relative `bit`) in `words` whose membership is
    /// `member`, page-relative; nil if none.
    private func scan(_ bk: Int, from bit: Int, member: Bool) -> Int? {
        var w = bit >> 6
        var bits = (member ? partial.word(bk, w) : ~partial.word(bk, w)) & (~0 << UInt64(bit & 63))
        while true {
            if bits != 0 { return w * 64 + bits.trailingZeroBitCount }
            w += 1
            if w == Self.wordsPerPage { return nil }
            bits = member ? partial.word(bk, w) : ~partial.word(bk, w)
        }
    }

    /// The first block at or after `b` whose membership equals `member`; nil if none (only
    /// possible for `member == true`).
    mutating func next(from b: UInt64, member: Bool) -> UInt64? {
        let pageBits = UInt64(Self.pageBits)
        if member {
            let page = b >> pageBits
            if let p = partial.find(page) {
                if let i = scan(p, from: Int(b & (Self.pageBlocks - 1)), member: true) {
                    return (page << pageBits) + UInt64(i)
                }
            } else if isFull(page) {
                return b
            }
            // The first whole page after `page`, and the first partly filled one.
            var best: UInt64?
            let f = firstFull(endingAfter: page + 1)
            if f < full.count { best = full[f].lowerBound << pageBits }
            let keys = sortedPartialPages()
            var lo = 0, hi = keys.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if keys[mid] <= page { lo = mid + 1 } else { hi = mid }
            }
            if lo < keys.count, let p = partial.find(keys[lo]), let i = scan(p, from: 0, member: true) {
                let candidate = (keys[lo] << pageBits) + UInt64(i)
                best = min(best ?? candidate, candidate)
            }
            return best
        }
        var b = b
        while true {
            let page = b >> pageBits
            if let p = partial.find(page) {
                if let i = scan(p, from: Int(b & (Self.pageBlocks - 1)), member: false) {
                    return (page << pageBits) + UInt64(i)
                }
                b = (page + 1) << pageBits
                continue
            }
            let f = firstFull(endingAfter: page)
            if f < full.count && full[f].lowerBound <= page {
                b = full[f].upperBound << pageBits
                continue
            }
            return b
        }
    }

    /// The maximal runs of blocks of a set, in order, produced one at a time (a set of many
    /// scattered blocks has as many runs: no array of them is built).
    struct Runs {
        private let set: BlockRanges
        private let keys: [UInt64]
        private var fi = 0, ki = 0
        /// The partly filled page being scanned: its number, bitmap, and the next word.
        private var page: UInt64 = 0
        /// The bitmap's bucket in `set.partial` (-1: none). `set` is a copy whose bitmaps alias
        /// the original's (`PageBitmaps`): the set must not change while its runs are read.
        private var bucket = -1
        private var w = BlockRanges.wordsPerPage
        private var bits: UInt64 = 0
        private var pending: Range<UInt64>?

        init(_ set: inout BlockRanges) {
            keys = set.sortedPartialPages()
            self.set = set
        }

        /// The next run of one bitmap or one whole-page range (possibly touching the last).
        private mutating func nextPiece() -> Range<UInt64>? {
            let pageBits = UInt64(BlockRanges.pageBits)
            while true {
                while bits == 0 && w < BlockRanges.wordsPerPage - 1 {
                    w += 1
                    bits = bucket >= 0 ? set.partial.word(bucket, w) : 0
                }
                if bits != 0 {
                    let t = bits.trailingZeroBitCount
                    let ones = (~(bits >> UInt64(t))).trailingZeroBitCount
                    bits = t + ones >= 64 ? 0 : bits & ~(((1 << UInt64(ones)) - 1) << UInt64(t))
                    let start = (page << pageBits) + UInt64(w * 64 + t)
                    return start..<(start + UInt64(ones))
                }
                let nextFull = fi < set.full.count ? set.full[fi].lowerBound : UInt64.max
                let nextPartial = ki < keys.count ? keys[ki] : UInt64.max
                if nextFull == .max && nextPartial == .max { return nil }
                if nextFull < nextPartial {
                    fi += 1
                    return (nextFull << pageBits)..<(set.full[fi - 1].upperBound << pageBits)
                }
                page = nextPartial
                ki += 1
                bucket = set.partial.find(page) ?? -1
                w = 0
                bits = bucket >= 0 ? set.partial.word(bucket, 0) : 0
            }
        }

        /// The next maximal run, or nil.
        mutating func next() -> Range<UInt64>? {
            while let piece = nextPiece() {
                guard let p = pending else {
                    pending = piece
                    continue
                }
                if p.upperBound == piece.lowerBound {
                    pending = p.lowerBound..<piece.upperBound
                } else {
                    pending = piece
                    return p
                }
            }
            defer { pending = nil }
            return pending
        }
    }

    /// Number of maximal runs of blocks in `self` and (when `within` is given) in `self ∩ within`
    /// or `self \ within` as `inside` says, each run split into pieces of at most `maxRun`.
    mutating func runCount(maxRun: UInt64, within other: BlockRanges? = nil, inside: Bool = true) -> UInt64 {
        guard let other else { return runCount(maxRun: maxRun, cutBy: nil, inside: true, outside: true) }
        return runCount(maxRun: maxRun, cutBy: other, inside: inside, outside: !inside)
    }

    /// `runCount(maxRun:within:inside: true)` plus the same with `inside: false`, in one pass:
    /// the runs of `self` cut where `other` begins or ends (the host file's extents, written and
    /// unwritten, at the end of every replay).
    mutating func runCount(maxRun: UInt64, cutBy other: BlockRanges) -> UInt64 {
        runCount(maxRun: maxRun, cutBy: other, inside: true, outside: true)
    }

    /// The pieces of `self`'s runs inside `other` (`inside`), outside it (`outside`), or both.
    private mutating func runCount(maxRun: UInt64, cutBy other: BlockRanges?, inside: Bool, outside: Bool) -> UInt64 {
        var total: UInt64 = 0
        // Pieces of one run of `self` cut by `other` are separated by blocks of `other` (or
        // gaps), and pieces of different runs by gaps of `self`: each piece is maximal.
        // Most pieces are shorter than `maxRun`: one each, without a division (tens of cycles
        // per piece, and a replay's host file has a piece per written cluster).
        func add(_ r: Range<UInt64>) {
            let n = r.upperBound - r.lowerBound
            total += n <= maxRun ? (n == 0 ? 0 : 1) : (n + maxRun - 1) / maxRun
        }
        var mine = Runs(&self)
        guard var other else {
            while let a = mine.next() { add(a) }
            return total
        }
        var theirs = Runs(&other)
        var b = theirs.next()
        while let a = mine.next() {
            while let r = b, r.upperBound <= a.lowerBound { b = theirs.next() }
            var cursor = a.lowerBound
            while let r = b, r.lowerBound < a.upperBound {
                let o = max(r.lowerBound, a.lowerBound)..<min(r.upperBound, a.upperBound)
                if inside { add(o) }
                if outside && o.lowerBound > cursor { add(cursor..<o.lowerBound) }
                cursor = o.upperBound
                // A run reaching past `a` may also cut the next run of `self`: keep it.
                if r.upperBound > a.upperBound { break }
                b = theirs.next()
            }
            if outside && cursor < a.upperBound { add(cursor..<a.upperBound) }
        }
        return total
    }
}

/// The bitmaps of partly filled pages, by page number: open addressing with linear probing over
/// buckets that hold the page's 8 words and their population inline.
///
/// Why not `[UInt64: [UInt64]]`: `write50-1e6` updates about 12 bitmaps per write, and the
/// dictionary's SipHash per lookup (three lookups per update) and a population count of the
/// whole page before and after each update were a third of its instructions (callgrind); here a
/// lookup is a multiply and a probe, and an update counts only the words it changes.
///
/// The buckets are `SlotBuffer`s (an array store paid a uniqueness check and a bounds check:
/// two `swift_isUniquelyReferenced` calls per update, callgrind write50-1e6), so copies of a
/// `PageBitmaps` alias one buffer until either grows: the host file owns its two sets and
/// mutates only its own; `BlockRanges.Runs` reads its copy while nothing mutates the set.
struct PageBitmaps {
    private static let wordsPerPage = BlockRanges.wordsPerPage
    /// Page number + 1 per bucket (0: empty).
    private var keys = SlotBuffer<UInt64>(count: 16, repeating: 0)
    private var words = SlotBuffer<UInt64>(count: 16 * BlockRanges.wordsPerPage, repeating: 0)
    private var pops = SlotBuffer<UInt64>(count: 16, repeating: 0)
    private var mask = 15
    /// Number of pages.
    private(set) var count = 0

    @inline(__always) private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) &>> 32) & mask
    }

    /// The bucket `remember` last found: updates come in runs on one page (a cluster's blocks, the
    /// clusters allocated one after another at the end of the file). Only a hint: `find` checks
    /// its key, so a bucket moved by a removal or a growth is merely a miss.
    private var hint = 0

    /// The bucket of `page`, or nil.
    @inline(__always) func find(_ page: UInt64) -> Int? {
        let key = page &+ 1
        if keys[hint] == key { return hint }
        var b = home(key)
        while true {
            let k = keys[b]
            if k == key { return b }
            if k == 0 { return nil }
            b = (b &+ 1) & mask
        }
    }

    /// `find`, remembering the bucket found for the next lookup.
    @inline(__always) mutating func findRemembering(_ page: UInt64) -> Int? {
        let b = find(page)
        if let b { hint = b }
        return b
    }

    /// Adds `page` (absent) with every bit set (`filled`) or none; returns its bucket.
    mutating func insert(_ page: UInt64, filled: Bool) -> Int {
        if 2 * (count + 1) > keys.count { grow() }
        let key = page &+ 1
        var b = home(key)
        while keys[b] != 0 { b = (b &+ 1) & mask }
        keys[b] = key
        hint = b
        let fill: UInt64 = filled ? ~0 : 0
        for w in 0..<Self.wordsPerPage { words[b * Self.wordsPerPage + w] = fill }
        pops[b] = filled ? BlockRanges.pageBlocks : 0
        count += 1
        return b
    }

    /// Removes the page in bucket `b` (backward-shift deletion: other buckets may move).
    mutating func remove(at b: Int) {
        var hole = b
        var j = b
        while true {
            j = (j &+ 1) & mask
            let k = keys[j]
            if k == 0 { break }
            let h = home(k)
            if (hole &- h) & mask <= (j &- h) & mask {
                keys[hole] = k
                pops[hole] = pops[j]
                for w in 0..<Self.wordsPerPage { words[hole * Self.wordsPerPage + w] = words[j * Self.wordsPerPage + w] }
                hole = j
            }
        }
        keys[hole] = 0
        count -= 1
    }

    /// Word `w` of the bitmap in bucket `b`.
    @inline(__always) func word(_ b: Int, _ w: Int) -> UInt64 { words[b &* Self.wordsPerPage &+ w] }

    /// The number of set bits of the bitmap in bucket `b`.
    @inline(__always) func population(_ b: Int) -> UInt64 { pops[b] }

    /// Sets or clears bits `[lo, hi)` of the bitmap in bucket `b`; returns its new population.
    @inline(__always) mutating func apply(_ b: Int, _ lo: Int, _ hi: Int, set: Bool) -> UInt64 {
        var pop = pops[b]
        var i = lo
        while i < hi {
            let w = i >> 6, bit = i & 63
            let span = min(64 - bit, hi - i)
            let m: UInt64 = (span == 64 ? ~0 : ((1 &<< UInt64(span)) &- 1)) &<< UInt64(bit)
            let at = b &* Self.wordsPerPage &+ w
            let old = words[at]
            // The bits that changed: all added, or all removed. Most updates find the span
            // wholly clear or wholly set, and need no population count (which baseline x86-64
            // computes in software).
            let present = old & m
            let changed: UInt64
            if present == 0 {
                changed = set ? UInt64(span) : 0
            } else if present == m {
                changed = set ? 0 : UInt64(span)
            } else {
                changed = UInt64((set ? m & ~old : present).nonzeroBitCount)
            }
            pop = set ? pop &+ changed : pop &- changed
            words[at] = set ? old | m : old & ~m
            i += span
        }
        pops[b] = pop
        return pop
    }

    /// Sets the `count` bits `m` of word `w` of the bitmap in bucket `b`; returns how many were
    /// not set and the new population.
    @inline(__always) mutating func setBits(_ b: Int, _ w: Int, _ m: UInt64, count: UInt64) -> (
        added: UInt64, population: UInt64
    ) {
        let at = b &* Self.wordsPerPage &+ w
        let old = words[at]
        let present = old & m
        // Mostly all new (a fresh cluster's blocks) or all there: no population count (which
        // baseline x86-64 computes in software).
        let added = present == 0 ? count : present == m ? 0 : UInt64((m & ~old).nonzeroBitCount)
        words[at] = old | m
        let pop = pops[b] &+ added
        pops[b] = pop
        return (added, pop)
    }

    /// The page numbers, in no particular order.
    var pages: [UInt64] { keys.buffer.compactMap { $0 == 0 ? nil : $0 - 1 } }

    private mutating func grow() {
        let oldKeys = keys, oldWords = words, oldPops = pops
        let n = keys.count * 2
        keys = SlotBuffer(count: n, repeating: 0)
        words = SlotBuffer(count: n * Self.wordsPerPage, repeating: 0)
        pops = SlotBuffer(count: n, repeating: 0)
        mask = n - 1
        hint = 0
        for i in 0..<oldKeys.count where oldKeys[i] != 0 {
            var b = home(oldKeys[i])
            while keys[b] != 0 { b = (b &+ 1) & mask }
            keys[b] = oldKeys[i]
            pops[b] = oldPops[i]
            for w in 0..<Self.wordsPerPage { words[b * Self.wordsPerPage + w] = oldWords[i * Self.wordsPerPage + w] }
        }
    }
}

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
    private var partial: [UInt64: [UInt64]] = [:]
    private var sortedPartialCache: [UInt64]?
    /// Number of blocks in the set.
    private(set) var count: UInt64 = 0

    private static let allOnes = [UInt64](repeating: ~0, count: wordsPerPage)

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
            ? partial.keys.filter { pr.contains($0) } : pr.filter { partial[$0] != nil }
        for page in inside {
            let bits = partial[page].map(Self.population) ?? 0
            count = set ? count + (Self.pageBlocks - bits) : count - bits
            partial[page] = nil
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

    private static func population(_ words: [UInt64]) -> UInt64 {
        words.reduce(0) { $0 + UInt64($1.nonzeroBitCount) }
    }

    /// Sets or clears blocks `[a, b)` (page-relative, `b - a` < 512 or not page-aligned) of `page`.
    private mutating func updatePartOfPage(_ page: UInt64, _ a: Int, _ b: Int, set: Bool) {
        let wasFull = partial[page] == nil && isFull(page)
        guard !(set && wasFull) else { return }
        var words = partial[page] ?? (wasFull ? Self.allOnes : [UInt64](repeating: 0, count: Self.wordsPerPage))
        let before = Self.population(words)
        var i = a
        while i < b {
            let w = i >> 6, bit = i & 63
            let span = min(64 - bit, b - i)
            let mask: UInt64 = (span == 64 ? ~0 : ((1 << UInt64(span)) - 1)) << UInt64(bit)
            if set { words[w] |= mask } else { words[w] &= ~mask }
            i += span
        }
        let after = Self.population(words)
        count = count - before + after
        let hadBitmap = partial[page] != nil
        if after == Self.pageBlocks {
            partial[page] = nil
            sortedPartialCache = nil
            _ = addFull(page..<(page + 1))
        } else if after == 0 {
            if hadBitmap {
                partial[page] = nil
                sortedPartialCache = nil
            }
            if wasFull { _ = removeFull(page..<(page + 1)) }
        } else {
            if wasFull { _ = removeFull(page..<(page + 1)) }
            if !hadBitmap { sortedPartialCache = nil }
            partial[page] = words
        }
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

    mutating func insert(_ r: Range<UInt64>) { update(r, set: true) }

    mutating func remove(_ r: Range<UInt64>) { update(r, set: false) }

    /// Whether block `b` is in the set.
    func contains(_ b: UInt64) -> Bool {
        let page = b >> UInt64(Self.pageBits)
        if let p = partial[page] { return p[Int((b >> 6) & UInt64(Self.wordsPerPage - 1))] & (1 << (b & 63)) != 0 }
        return isFull(page)
    }

    private mutating func sortedPartialPages() -> [UInt64] {
        if let k = sortedPartialCache { return k }
        let k = partial.keys.sorted()
        sortedPartialCache = k
        return k
    }

    /// The first block at or after `from` (page-relative `bit`) in `words` whose membership is
    /// `member`, page-relative; nil if none.
    private static func scan(_ words: [UInt64], from bit: Int, member: Bool) -> Int? {
        var w = bit >> 6
        var bits = (member ? words[w] : ~words[w]) & (~0 << UInt64(bit & 63))
        while true {
            if bits != 0 { return w * 64 + bits.trailingZeroBitCount }
            w += 1
            if w == wordsPerPage { return nil }
            bits = member ? words[w] : ~words[w]
        }
    }

    /// The first block at or after `b` whose membership equals `member`; nil if none (only
    /// possible for `member == true`).
    mutating func next(from b: UInt64, member: Bool) -> UInt64? {
        let pageBits = UInt64(Self.pageBits)
        if member {
            let page = b >> pageBits
            if let p = partial[page] {
                if let i = Self.scan(p, from: Int(b & (Self.pageBlocks - 1)), member: true) {
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
            if lo < keys.count, let p = partial[keys[lo]], let i = Self.scan(p, from: 0, member: true) {
                let candidate = (keys[lo] << pageBits) + UInt64(i)
                best = min(best ?? candidate, candidate)
            }
            return best
        }
        var b = b
        while true {
            let page = b >> pageBits
            if let p = partial[page] {
                if let i = Self.scan(p, from: Int(b & (Self.pageBlocks - 1)), member: false) {
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

    /// The maximal runs of blocks in the set, in order.
    private mutating func runs() -> [Range<UInt64>] {
        let pageBits = UInt64(Self.pageBits)
        var out: [Range<UInt64>] = []
        func add(_ r: Range<UInt64>) {
            if let last = out.last, last.upperBound == r.lowerBound {
                out[out.count - 1] = last.lowerBound..<r.upperBound
            } else {
                out.append(r)
            }
        }
        let keys = sortedPartialPages()
        var k = 0
        func addPartialPages(before limit: UInt64) {
            while k < keys.count && keys[k] < limit {
                let page = keys[k]
                if let words = partial[page] {
                    for w in 0..<Self.wordsPerPage {
                        var bits = words[w]
                        while bits != 0 {
                            let t = bits.trailingZeroBitCount
                            let ones = (~(bits >> UInt64(t))).trailingZeroBitCount
                            let start = (page << pageBits) + UInt64(w * 64 + t)
                            add(start..<(start + UInt64(ones)))
                            bits = t + ones >= 64 ? 0 : bits & ~(((1 << UInt64(ones)) - 1) << UInt64(t))
                        }
                    }
                }
                k += 1
            }
        }
        for r in full {
            addPartialPages(before: r.lowerBound)
            add((r.lowerBound << pageBits)..<(r.upperBound << pageBits))
        }
        addPartialPages(before: .max)
        return out
    }

    /// Number of maximal runs of blocks in `self` and (when `within` is given) in `self ∩ within`
    /// or `self \ within` as `inside` says, each run split into pieces of at most `maxRun`.
    mutating func runCount(maxRun: UInt64, within other: BlockRanges? = nil, inside: Bool = true) -> UInt64 {
        let mine = runs()
        var pieces: [Range<UInt64>] = []
        if var other {
            let theirs = other.runs()
            var j = 0
            for a in mine {
                while j < theirs.count && theirs[j].upperBound <= a.lowerBound { j += 1 }
                var cursor = a.lowerBound
                var t = j
                while t < theirs.count && theirs[t].lowerBound < a.upperBound {
                    let o = max(theirs[t].lowerBound, a.lowerBound)..<min(theirs[t].upperBound, a.upperBound)
                    if inside {
                        pieces.append(o)
                    } else if o.lowerBound > cursor {
                        pieces.append(cursor..<o.lowerBound)
                    }
                    cursor = o.upperBound
                    t += 1
                }
                if !inside && cursor < a.upperBound { pieces.append(cursor..<a.upperBound) }
            }
        } else {
            pieces = mine
        }
        // Pieces of one run of `self` cut by `other` are separated by blocks of `other` (or
        // gaps), and pieces of different runs by gaps of `self`: each piece is maximal.
        return pieces.reduce(0) { $0 + (UInt64($1.count) + maxRun - 1) / maxRun }
    }
}

/// The image file as the host filesystem (ext4) sees it (qcow2-model.md §11): its length, which
/// 4 KiB blocks are allocated, and which of those hold written data.
///
/// Two things QEMU reads from it: `st_blocks` (the one-time preallocation probe, §8.3) and the
/// SEEK_DATA/SEEK_HOLE map (block status recursion into the file once metadata preallocation
/// was detected). Zero-range writes (`fallocate(ZERO_RANGE)`, used instead of COW) allocate
/// *unwritten* extents: counted in `st_blocks` but reported as holes by SEEK_DATA.
final class HostFile {
    /// File length: the largest end offset ever written (or truncated to).
    private(set) var length: UInt64
    /// Allocated blocks (written or unwritten).
    private var allocated = BlockRanges()
    /// Blocks holding written data.
    private var data = BlockRanges()

    static let blockSize: UInt64 = 4096
    /// ext4: extents held in the inode itself, and extent entries per 4 KiB tree block.
    static let inodeExtents = 4
    static let extentsPerBlock = 340
    /// ext4's longest initialized extent, in blocks.
    static let maxExtentBlocks: UInt64 = 32768

    init(length: UInt64) { self.length = length }

    /// `st_blocks * 512` on ext4: allocated blocks plus the extent-tree blocks that index them.
    var allocatedBytes: UInt64 { (allocated.count + extentTreeBlocks()) * Self.blockSize }

    /// Records a data write of `bytes` at `offset`.
    func write(_ offset: UInt64, _ bytes: UInt64) {
        guard bytes > 0 else { return }
        length = max(length, offset + bytes)
        let r = Self.blocks(covering: offset, bytes)
        allocated.insert(r)
        data.insert(r)
    }

    /// Records `fallocate(FALLOC_FL_ZERO_RANGE)`: whole blocks inside become unwritten extents.
    func zeroRange(_ offset: UInt64, _ bytes: UInt64) {
        guard bytes > 0 else { return }
        length = max(length, offset + bytes)
        allocated.insert(Self.blocks(covering: offset, bytes))
        let a = (offset + Self.blockSize - 1) / Self.blockSize
        let b = (offset + bytes) / Self.blockSize
        if a < b { data.remove(a..<b) }
        // Partial blocks at the edges are written with zeroes: they hold data.
        if offset % Self.blockSize != 0 { data.insert(Self.blocks(covering: offset, 1)) }
        if (offset + bytes) % Self.blockSize != 0 { data.insert(Self.blocks(covering: offset + bytes - 1, 1)) }
    }

    /// Records a read of `[offset, offset + bytes)` through the page cache: pages of unwritten
    /// extents become up to date, and ext4's SEEK_DATA then reports them as data (observed with
    /// QEMU 7.2 on Debian 12: a guest read over a COW zero range turns it into "data").
    func read(_ offset: UInt64, _ bytes: UInt64) {
        // Written data is a subset of the allocation: equal counts mean no unwritten extent.
        guard bytes > 0, allocated.count != data.count else { return }
        var b = offset / Self.blockSize
        let end = (offset + bytes + Self.blockSize - 1) / Self.blockSize
        while b < end {
            if allocated.contains(b) && !data.contains(b) { data.insert(b..<(b + 1)) }
            b += 1
        }
    }

    /// Extends the file without allocating (truncate up).
    func extend(to newLength: UInt64) { length = max(length, newLength) }

    /// Punches a hole: frees blocks lying entirely inside `[offset, offset + bytes)`.
    func punch(_ offset: UInt64, _ bytes: UInt64) {
        let a = (offset + Self.blockSize - 1) / Self.blockSize
        let b = (offset + bytes) / Self.blockSize
        guard a < b else { return }
        allocated.remove(a..<b)
        data.remove(a..<b)
    }

    /// Marks a byte range of an existing file as written data.
    func markData(_ byteRange: Range<UInt64>) {
        let r = Self.blocks(covering: byteRange.lowerBound, byteRange.upperBound - byteRange.lowerBound)
        allocated.insert(r)
        data.insert(r)
    }

    /// Marks a byte range of an existing file as allocated but unwritten.
    func markAllocated(_ byteRange: Range<UInt64>) {
        allocated.insert(Self.blocks(covering: byteRange.lowerBound, byteRange.upperBound - byteRange.lowerBound))
    }

    /// file-posix block status (`raw_co_block_status` with SEEK_DATA/SEEK_HOLE) at `offset`
    /// for up to `bytes`: `(pnum, isZero, eof)` as the block layer sees it.
    func status(_ offset: UInt64, _ bytes: UInt64) -> (pnum: UInt64, zero: Bool, eof: Bool) {
        if offset >= length { return (0, true, true) }
        let bytes = min(bytes, length - offset)
        let block = offset / Self.blockSize
        var pnum: UInt64
        var zero: Bool
        if data.contains(block) {
            let end = data.next(from: block, member: false) ?? block
            pnum = min(end * Self.blockSize, length) - offset
            zero = false
        } else if let next = data.next(from: block, member: true), next * Self.blockSize < length {
            pnum = next * Self.blockSize - offset
            zero = true
        } else {
            pnum = bytes  // trailing hole (ENXIO)
            zero = true
        }
        pnum = min(pnum, bytes)
        return (pnum, zero, offset + pnum == length)
    }

    private static func blocks(covering offset: UInt64, _ bytes: UInt64) -> Range<UInt64> {
        (offset / blockSize)..<((offset + bytes + blockSize - 1) / blockSize)
    }

    /// Blocks of ext4's extent tree beyond the inode's four in-line extents. Written and
    /// unwritten parts of one allocated run are separate extents.
    private func extentTreeBlocks() -> UInt64 {
        let extents =
            allocated.runCount(maxRun: Self.maxExtentBlocks, within: data, inside: true)
            + allocated.runCount(maxRun: Self.maxExtentBlocks, within: data, inside: false)
        var level = extents
        var blocks: UInt64 = 0
        while level > UInt64(Self.inodeExtents) {
            level = (level + UInt64(Self.extentsPerBlock) - 1) / UInt64(Self.extentsPerBlock)
            blocks += level
        }
        return blocks
    }
}

/// A set of 4 KiB block numbers as a paged bitmap: pages of 512 blocks (2 MiB of host file)
/// created on first use, with a running count.
///
/// Chosen over a sorted range list because overwrites land anywhere in a large image file and
/// each such insert shifted the whole list (`qcow2sim-bench write50-1e6`: 15 % of the run in
/// memmove); here every update is O(pages touched).
struct BlockRanges {
    static let pageBits = 9
    static let wordsPerPage = (1 << pageBits) / 64

    private var pages: [UInt64: [UInt64]] = [:]
    private var sortedKeysCache: [UInt64]?
    /// Number of blocks in the set.
    private(set) var count: UInt64 = 0

    private static func split(_ b: UInt64) -> (page: UInt64, word: Int, bit: UInt64) {
        (b >> UInt64(pageBits), Int((b >> 6) & UInt64(wordsPerPage - 1)), b & 63)
    }

    /// Applies `set` (or clear) to every block of `r`.
    private mutating func update(_ r: Range<UInt64>, set: Bool) {
        var b = r.lowerBound
        while b < r.upperBound {
            let (page, word, bit) = Self.split(b)
            let span = min(64 - bit, r.upperBound - b)
            let mask: UInt64 = (span == 64 ? ~0 : ((1 << span) - 1)) << bit
            let old = pages[page]?[word]
            if set {
                if old == nil { sortedKeysCache = nil }
                let was = old ?? 0
                let new = was | mask
                if new != was || old == nil {
                    pages[page, default: [UInt64](repeating: 0, count: Self.wordsPerPage)][word] = new
                    count += UInt64((new ^ was).nonzeroBitCount)
                }
            } else if let was = old {
                let new = was & ~mask
                if new != was {
                    pages[page, default: []][word] = new
                    count -= UInt64((new ^ was).nonzeroBitCount)
                }
            }
            b += span
        }
    }

    mutating func insert(_ r: Range<UInt64>) { update(r, set: true) }

    mutating func remove(_ r: Range<UInt64>) { update(r, set: false) }

    /// Whether block `b` is in the set.
    func contains(_ b: UInt64) -> Bool {
        let (page, word, bit) = Self.split(b)
        guard let p = pages[page] else { return false }
        return p[word] & (1 << bit) != 0
    }

    private mutating func sortedKeys() -> [UInt64] {
        if let k = sortedKeysCache { return k }
        let k = pages.keys.sorted()
        sortedKeysCache = k
        return k
    }

    /// The first block at or after `b` whose membership equals `member`; nil if none (only
    /// possible for `member == true`).
    mutating func next(from b: UInt64, member: Bool) -> UInt64? {
        let keys = sortedKeys()
        var b = b
        // Binary search for the first page at or after b's page.
        var lo = 0, hi = keys.count
        let page0 = b >> UInt64(Self.pageBits)
        while lo < hi {
            let mid = (lo + hi) / 2
            if keys[mid] < page0 { lo = mid + 1 } else { hi = mid }
        }
        var k = lo
        while true {
            let page = b >> UInt64(Self.pageBits)
            if k >= keys.count || keys[k] > page {
                // b lies in a page that does not exist: all blocks there are absent.
                if !member { return b }
                guard k < keys.count else { return nil }
                b = keys[k] << UInt64(Self.pageBits)
                continue
            }
            let words = pages[page] ?? []
            var w = Int((b >> 6) & UInt64(Self.wordsPerPage - 1))
            var bits = (member ? words[w] : ~words[w]) & (~0 << (b & 63))
            while true {
                if bits != 0 { return (page << UInt64(Self.pageBits)) + UInt64(w * 64 + bits.trailingZeroBitCount) }
                w += 1
                if w == Self.wordsPerPage { break }
                bits = member ? words[w] : ~words[w]
            }
            b = (page + 1) << UInt64(Self.pageBits)
            k += 1
        }
    }

    /// Number of maximal runs of blocks in `self` and (when `within` is given) in `self ∩ within`
    /// or `self \ within` as `inside` says, each run split into pieces of at most `maxRun`.
    mutating func runCount(maxRun: UInt64, within other: BlockRanges? = nil, inside: Bool = true) -> UInt64 {
        var runs: UInt64 = 0
        var runStart: UInt64 = 0
        var prevEnd: UInt64 = .max  // block after the last member seen
        func close(_ end: UInt64) { runs += (end - runStart + maxRun - 1) / maxRun }
        for page in sortedKeys() {
            guard let words = pages[page] else { continue }
            let otherWords = other.flatMap { $0.pages[page] }
            for w in 0..<Self.wordsPerPage {
                var bits = words[w]
                if other != nil {
                    let o = otherWords?[w] ?? 0
                    bits = inside ? bits & o : bits & ~o
                }
                while bits != 0 {
                    let t = bits.trailingZeroBitCount
                    let block = (page << UInt64(Self.pageBits)) + UInt64(w * 64 + t)
                    // Length of the run of ones starting at t within this word.
                    let ones = (~(bits >> UInt64(t))).trailingZeroBitCount
                    if block != prevEnd {
                        if prevEnd != .max { close(prevEnd) }
                        runStart = block
                    }
                    prevEnd = block + UInt64(ones)
                    bits = t + ones >= 64 ? 0 : bits & ~(((1 << UInt64(ones)) - 1) << UInt64(t))
                }
            }
        }
        if prevEnd != .max { close(prevEnd) }
        return runs
    }
}

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
        if let run = data.run(containing: block) {
            pnum = min(run.upperBound * Self.blockSize, length) - offset
            zero = false
        } else if let next = data.firstStart(atOrAfter: block), next * Self.blockSize < length {
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

    /// Blocks of ext4's extent tree beyond the inode's four in-line extents.
    private func extentTreeBlocks() -> UInt64 {
        var extents: UInt64 = 0
        for r in allocated.ranges {
            // Written and unwritten parts of one run are separate extents.
            var pieces: [Range<UInt64>] = []
            var cursor = r.lowerBound
            for d in data.ranges(overlapping: r) {
                if d.lowerBound > cursor { pieces.append(cursor..<d.lowerBound) }
                pieces.append(max(d.lowerBound, r.lowerBound)..<min(d.upperBound, r.upperBound))
                cursor = min(d.upperBound, r.upperBound)
            }
            if cursor < r.upperBound { pieces.append(cursor..<r.upperBound) }
            for p in pieces { extents += (UInt64(p.count) + Self.maxExtentBlocks - 1) / Self.maxExtentBlocks }
        }
        var level = extents
        var blocks: UInt64 = 0
        while level > UInt64(Self.inodeExtents) {
            level = (level + UInt64(Self.extentsPerBlock) - 1) / UInt64(Self.extentsPerBlock)
            blocks += level
        }
        return blocks
    }
}

/// Sorted, disjoint, non-adjacent half-open block ranges with a running count.
struct BlockRanges {
    private(set) var ranges: [Range<UInt64>] = []
    private(set) var count: UInt64 = 0

    private func firstIndex(endingAfter x: UInt64) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        if let last = ranges.last, r.lowerBound >= last.lowerBound {
            // Fast path: appending at the end (sequential allocation).
            if r.lowerBound <= last.upperBound {
                if r.upperBound > last.upperBound {
                    count += r.upperBound - last.upperBound
                    ranges[ranges.count - 1] = last.lowerBound..<r.upperBound
                }
                return
            }
            ranges.append(r)
            count += UInt64(r.count)
            return
        }
        var i = firstIndex(endingAfter: r.lowerBound)
        if i < ranges.count && ranges[i].lowerBound <= r.lowerBound && ranges[i].upperBound >= r.upperBound {
            return  // already covered (metadata write-backs rewrite allocated tables)
        }
        var lo = r.lowerBound, hi = r.upperBound
        var removed: UInt64 = 0
        let start = i
        while i < ranges.count && ranges[i].lowerBound <= hi {
            lo = min(lo, ranges[i].lowerBound)
            hi = max(hi, ranges[i].upperBound)
            removed += UInt64(ranges[i].count)
            i += 1
        }
        ranges.replaceSubrange(start..<i, with: [lo..<hi])
        count += (hi - lo) - removed
    }

    mutating func remove(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        var i = firstIndex(endingAfter: r.lowerBound + 1)
        if i == ranges.count || ranges[i].lowerBound >= r.upperBound { return }  // nothing to remove
        var replacement: [Range<UInt64>] = []
        let start = i
        while i < ranges.count && ranges[i].lowerBound < r.upperBound {
            let c = ranges[i]
            if c.lowerBound < r.lowerBound { replacement.append(c.lowerBound..<r.lowerBound) }
            if c.upperBound > r.upperBound { replacement.append(r.upperBound..<c.upperBound) }
            count -= min(c.upperBound, r.upperBound) - max(c.lowerBound, r.lowerBound)
            i += 1
        }
        ranges.replaceSubrange(start..<i, with: replacement)
    }

    /// The range containing block `b`, if any.
    func run(containing b: UInt64) -> Range<UInt64>? {
        let i = firstIndex(endingAfter: b + 1)
        return i < ranges.count && ranges[i].contains(b) ? ranges[i] : nil
    }

    /// The first range start at or after `b`.
    func firstStart(atOrAfter b: UInt64) -> UInt64? {
        let i = firstIndex(endingAfter: b + 1)
        guard i < ranges.count else { return nil }
        return max(ranges[i].lowerBound, b)
    }

    /// Ranges overlapping `r`, in order.
    func ranges(overlapping r: Range<UInt64>) -> ArraySlice<Range<UInt64>> {
        var i = firstIndex(endingAfter: r.lowerBound + 1)
        let start = i
        while i < ranges.count && ranges[i].lowerBound < r.upperBound { i += 1 }
        return ranges[start..<i]
    }
}

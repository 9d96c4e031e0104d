/// The image file as the host filesystem (ext4) sees it (qcow2-model.md §11): its length, which
/// 4 KiB blocks are allocated, and which of those hold written data.
///
/// Two things QEMU reads from it: `st_blocks` (the one-time preallocation probe, §8.3) and the
/// SEEK_DATA/SEEK_HOLE map (block status recursion into the file once metadata preallocation
/// was detected). Zero-range writes (`fallocate(ZERO_RANGE)`, used instead of COW) allocate
/// *unwritten* extents: counted in `st_blocks` but reported as holes by SEEK_DATA.
final class HostFile {
    /// File length: the largest end offset ever written (or truncated to). Every allocated block
    /// starts below it (`write`, `zeroRange` and the marks extend it or stay inside it).
    @exclusivity(unchecked) private(set) var length: UInt64
    /// Allocated blocks (written or unwritten).
    @exclusivity(unchecked) private var allocated = BlockRanges()
    /// Blocks holding written data.
    @exclusivity(unchecked) private var data = BlockRanges()

    static let blockSize: UInt64 = 4096
    /// ext4: extents held in the inode itself, and extent entries per 4 KiB tree block.
    static let inodeExtents = 4
    static let extentsPerBlock = 340
    /// ext4's longest initialized extent, in blocks.
    static let maxExtentBlocks: UInt64 = 32768

    /// Bumped whenever a block leaves either set (a hole punched, written data zeroed): a write
    /// of a range that was written in the same epoch changes nothing, so the cache layer skips a
    /// table's write-back over its own earlier one (`MetadataCache.hostEpoch(at:)`). The length
    /// only grows, and every other change only adds blocks.
    @exclusivity(unchecked) private(set) var epoch: UInt64 = 1

    init(length: UInt64) { self.length = length }

    /// `st_blocks * 512` on ext4: allocated blocks plus the extent-tree blocks that index them.
    var allocatedBytes: UInt64 { (allocated.count + extentTreeBlocks()) * Self.blockSize }

    /// Records a data write of `bytes` at `offset`.
    func write(_ offset: UInt64, _ bytes: UInt64) {
        guard bytes > 0 else { return }
        let r = Self.blocks(covering: offset, bytes)
        // At or past the end (a new table or cluster): no block there is in either set but,
        // when `length` is not block-aligned, the one it ends in, which inserting again leaves
        // as it is: nothing to look up.
        if offset >= length {
            length = offset + bytes
            allocated.insert(r)
            data.insert(r)
            return
        }
        length = max(length, offset + bytes)
        // Written data is a subset of the allocation: a rewrite changes neither.
        if data.membership(r) == .all { return }
        if allocated.membership(r) != .all { allocated.insert(r) }
        data.insert(r)
    }

    /// Records `fallocate(FALLOC_FL_ZERO_RANGE)`: whole blocks inside become unwritten extents.
    func zeroRange(_ offset: UInt64, _ bytes: UInt64) {
        guard bytes > 0 else { return }
        length = max(length, offset + bytes)
        allocated.insert(Self.blocks(covering: offset, bytes))
        let a = (offset + Self.blockSize - 1) / Self.blockSize
        let b = (offset + bytes) / Self.blockSize
        // Zeroing blocks never written (a new cluster's) leaves the data as it is.
        if a < b && data.membership(a..<b) != .empty {
            data.remove(a..<b)
            epoch &+= 1
        }
        // Partial blocks at the edges are written with zeroes: they hold data.
        if offset % Self.blockSize != 0 { data.insert(Self.blocks(covering: offset, 1)) }
        if (offset + bytes) % Self.blockSize != 0 { data.insert(Self.blocks(covering: offset + bytes - 1, 1)) }
    }

    /// `zeroRange(offset, bytes)` then `write(dataOffset, dataBytes)` inside it, for a new
    /// cluster's zero-COW write and data write: the same sets and length. When the zeroed range
    /// is whole blocks holding no data yet (a cluster at the end of the file), the zeroing only
    /// allocates and the data write only adds its blocks to the data.
    func zeroThenWrite(_ offset: UInt64, _ bytes: UInt64, data dataOffset: UInt64, _ dataBytes: UInt64) {
        let zeroed = Self.blocks(covering: offset, bytes)
        // Block-aligned at or past the end: no block there holds data yet.
        guard offset % Self.blockSize == 0, bytes % Self.blockSize == 0, dataBytes > 0,
            offset >= length || data.membership(zeroed) == .empty
        else {
            zeroRange(offset, bytes)
            write(dataOffset, dataBytes)
            return
        }
        length = max(length, offset + bytes)
        allocated.insert(zeroed)
        data.insert(Self.blocks(covering: dataOffset, dataBytes))
    }

    /// Records a read of `[offset, offset + bytes)` through the page cache: pages of unwritten
    /// extents become up to date, and ext4's SEEK_DATA then reports them as data (observed with
    /// QEMU 7.2 on Debian 12: a guest read over a COW zero range turns it into "data").
    @inline(__always) func read(_ offset: UInt64, _ bytes: UInt64) {
        // Written data is a subset of the allocation: equal counts mean no unwritten extent.
        guard bytes > 0, allocated.count != data.count else { return }
        readUnwritten(offset, bytes)
    }

    /// `read` where the file has unwritten extents (out of line: rare, and the read path inlines
    /// the test above).
    @inline(never) private func readUnwritten(_ offset: UInt64, _ bytes: UInt64) {
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
        epoch &+= 1
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

    /// Wrapping additions: host offsets lie below 2^56 (entry offsets are masked, a header's
    /// offsets inside its file) and a length is a request's or a table's, so the sum cannot wrap.
    @inline(__always)
    private static func blocks(covering offset: UInt64, _ bytes: UInt64) -> Range<UInt64> {
        (offset / blockSize)..<((offset &+ bytes &+ (blockSize &- 1)) / blockSize)
    }

    /// Blocks of ext4's extent tree beyond the inode's four in-line extents. Written and
    /// unwritten parts of one allocated run are separate extents.
    private func extentTreeBlocks() -> UInt64 {
        let extents = allocated.runCount(maxRun: Self.maxExtentBlocks, cutBy: data)
        var level = extents
        var blocks: UInt64 = 0
        while level > UInt64(Self.inodeExtents) {
            level = (level + UInt64(Self.extentsPerBlock) - 1) / UInt64(Self.extentsPerBlock)
            blocks += level
        }
        return blocks
    }
}

/// The image file as the host filesystem sees it (qcow2-model.md §11): its length and which
/// 4 KiB blocks are allocated. Only the one-time preallocation probe (§8.3) reads it, but it is
/// also reported (`host_length_bytes`, `host_allocated_bytes`).
struct HostFile {
    /// File length: the largest end offset ever written (or truncated to).
    private(set) var length: UInt64
    /// Allocated 4 KiB blocks as sorted, disjoint, non-adjacent half-open block ranges.
    private var ranges: [Range<UInt64>] = []
    /// Number of allocated blocks.
    private(set) var allocatedBlocks: UInt64 = 0

    static let blockSize: UInt64 = 4096

    init(length: UInt64) { self.length = length }

    /// Allocated bytes (`st_blocks * 512` on ext4).
    var allocatedBytes: UInt64 { allocatedBlocks * Self.blockSize }

    /// Records a write (or a zero-range write, which allocates) of `bytes` at `offset`.
    mutating func write(_ offset: UInt64, _ bytes: UInt64) {
        guard bytes > 0 else { return }
        length = max(length, offset + bytes)
        insert((offset / Self.blockSize)..<((offset + bytes + Self.blockSize - 1) / Self.blockSize))
    }

    /// Extends the file without allocating (truncate up).
    mutating func extend(to newLength: UInt64) { length = max(length, newLength) }

    /// Punches a hole: frees blocks lying entirely inside `[offset, offset + bytes)`.
    mutating func punch(_ offset: UInt64, _ bytes: UInt64) {
        let a = (offset + Self.blockSize - 1) / Self.blockSize
        let b = (offset + bytes) / Self.blockSize
        guard a < b else { return }
        remove(a..<b)
    }

    /// Marks block ranges allocated (image files read from disk).
    mutating func markAllocated(_ blocks: Range<UInt64>) { insert(blocks) }

    private func firstIndex(endingAfter x: UInt64) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private mutating func insert(_ r: Range<UInt64>) {
        // Fast path: appending at the end (sequential allocation).
        if let last = ranges.last, r.lowerBound >= last.lowerBound {
            if r.lowerBound <= last.upperBound {
                if r.upperBound > last.upperBound {
                    allocatedBlocks += r.upperBound - last.upperBound
                    ranges[ranges.count - 1] = last.lowerBound..<r.upperBound
                }
                return
            }
            ranges.append(r)
            allocatedBlocks += UInt64(r.count)
            return
        }
        var i = firstIndex(endingAfter: r.lowerBound)
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
        allocatedBlocks += (hi - lo) - removed
    }

    private mutating func remove(_ r: Range<UInt64>) {
        var i = firstIndex(endingAfter: r.lowerBound + 1)
        var replacement: [Range<UInt64>] = []
        let start = i
        while i < ranges.count && ranges[i].lowerBound < r.upperBound {
            let c = ranges[i]
            if c.lowerBound < r.lowerBound { replacement.append(c.lowerBound..<r.lowerBound) }
            if c.upperBound > r.upperBound { replacement.append(r.upperBound..<c.upperBound) }
            let overlap = min(c.upperBound, r.upperBound) - max(c.lowerBound, r.lowerBound)
            allocatedBlocks -= overlap
            i += 1
        }
        ranges.replaceSubrange(start..<i, with: replacement)
    }
}

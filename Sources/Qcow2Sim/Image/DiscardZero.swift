/// Discard and write-zeroes (§9), and flush (§10).
extension Qcow2Image {
    /// DISCARD (§9.1): the block layer's split at cluster alignment, then qcow2's
    /// `qcow2_co_pdiscard` per piece.
    func discard(_ g: UInt64, _ len: UInt64) {
        for (offset, num) in Self.alignedPieces(g, len, align: geometry.clusterSize) { pdiscard(offset, num) }
    }

    /// The block layer's split of a request for a driver alignment (`bdrv_co_pdiscard`,
    /// `bdrv_co_do_pwrite_zeroes`): a head piece up to the first aligned offset, the aligned
    /// bulk, and a tail piece.
    static func alignedPieces(_ offset: UInt64, _ bytes: UInt64, align: UInt64) -> [(UInt64, UInt64)] {
        var pieces: [(UInt64, UInt64)] = []
        var offset = offset, bytes = bytes
        var head = offset % align
        let tail = (offset + bytes) % align
        while bytes > 0 {
            var num = bytes
            if head != 0 {
                num = min(bytes, align - head)
                head = (head + num) % align
            } else if tail != 0 && num > align {
                num -= tail
            }
            pieces.append((offset, num))
            offset += num
            bytes -= num
        }
        return pieces
    }

    private func pdiscard(_ offset: UInt64, _ bytes: UInt64) {
        // qcow2_co_pdiscard: without the zero flag a discarded cluster of an overlay would show
        // the backing file's stale data, so a v2 overlay refuses discards (-ENOTSUP, which the
        // block layer ignores).
        if version < 3 && backing != nil { return }
        let cs = geometry.clusterSize
        if (offset | bytes) % cs != 0 {
            // Partial clusters are ignored, except the whole partial cluster at an unaligned end.
            guard offset % cs == 0, offset + bytes == geometry.virtualSize else { return }
        }
        clusterDiscard(offset, bytes)
    }

    /// `qcow2_cluster_discard` (type REQUEST, not a full discard).
    private func clusterDiscard(_ offset: UInt64, _ bytes: UInt64) {
        cacheDiscards = true
        rewriteEntries(from: offset, clusters: Int(geometry.clusters(covering: bytes))) { w, b in
            let type = geometry.clusterType(w)
            // discard_in_l2_slice with discard-no-unref (8.1+, v3 only): a guest discard keeps
            // the reference (the old offset stays in the entry) except for compressed clusters.
            let keep = discardNoUnref && type != .compressed
            // Without a backing file an unallocated cluster already reads as zeroes.
            guard backing != nil || type.isAllocated else { return nil }
            if geometry.extendedL2 { return (keep ? w : 0, EntryBits.zeroMask, !keep) }
            // v2 has no zero flag: the entry is simply cleared (a discarded cluster then reads
            // from the backing file, or as zeroes without one).
            return ((version >= 3 ? EntryBits.zero : 0) | (keep ? w : 0), b, !keep)
        } kept: { w in
            keptDiscard(w)
        }
        cacheDiscards = false
        processDiscards()
    }

    /// The per-slice loop of `discard_in_l2_slice` and `zero_in_l2_slice`: for every cluster
    /// from `offset`, one TABLE_FOR_WRITE (and PUT) per L2 slice; `change` maps an entry to its
    /// new word, bitmap and whether the old one is freed (nil: unchanged). A changed entry marks
    /// the slice dirty, is stored, and its old cluster is freed (type REQUEST) if asked.
    private func rewriteEntries(
        from offset: UInt64, clusters: Int, _ change: (UInt64, UInt64) -> (word: UInt64, bitmap: UInt64, free: Bool)?,
        kept: (UInt64) -> Void = { _ in }
    ) {
        var offset = offset
        var n = clusters
        while n > 0 {
            let (slot, table) = tableForWrite(offset)
            let l2i = geometry.l2Index(offset)
            let count = min(n, sliceEntries - (l2i & (sliceEntries - 1)))
            for i in 0..<count {
                let (w, b) = l2Store.entry(table, l2i + i)
                guard let new = change(w, b), new.word != w || new.bitmap != b else { continue }
                markDirty(Self.l2, slot)
                l2Store.set(table, l2i + i, word: new.word, bitmap: new.bitmap)
                if new.free { freeEntry(w, type: .request) } else { kept(w) }
            }
            put(Self.l2, slot)
            n -= count
            offset += UInt64(count) << UInt64(geometry.clusterBits)
        }
    }

    /// discard-no-unref: the cluster keeps its reference, but with `pass-discard-request` (on with
    /// `discard=unmap`) its host range is still discarded at once (`bdrv_pdiscard` on the data
    /// file in `discard_in_l2_slice` / `zero_in_l2_slice`), for NORMAL and ZERO_ALLOC clusters.
    private func keptDiscard(_ word: UInt64) {
        let type = geometry.clusterType(word)
        guard discardPassthroughRequest, type == .normal || type == .zeroAlloc else { return }
        syncHost()
        host.punch(word & EntryBits.offsetMask, geometry.clusterSize)
    }

    /// WRITE_ZEROES (§9.2): the block layer's split at subcluster alignment, qcow2's
    /// `qcow2_co_pwrite_zeroes` per piece, and the fallback to an ordinary write of zeroes for
    /// pieces qcow2 refuses. Returns whether QEMU runs a fallback write as several segments.
    @discardableResult
    func writeZeroes(_ g: UInt64, _ len: UInt64, unmap: Bool) -> Bool {
        var multi = false
        for (offset, num) in Self.alignedPieces(g, len, align: geometry.subclusterSize) {
            var offset = offset, num = num
            // bdrv_co_do_pwrite_zeroes: where qcow2 refuses, the block layer writes a buffer of
            // zeroes of at most MAX_BOUNCE_BUFFER (16 MiB) and asks qcow2 again for the rest.
            while num > 0 && !pwriteZeroes(offset, num, unmap: unmap) {
                let n = min(num, Self.maxBounceBuffer)
                if write(offset, n) { multi = true }
                offset += n
                num -= n
            }
        }
        return multi
    }

    /// `MAX_BOUNCE_BUFFER` (block/io.c): the largest write of zeroes the block layer's
    /// write-zeroes fallback makes at once.
    static var maxBounceBuffer: UInt64 { 32768 * 512 }

    /// `qcow2_co_pwrite_zeroes`; false means "not supported" (the caller falls back).
    private func pwriteZeroes(_ offset: UInt64, _ bytes: UInt64, unmap: Bool) -> Bool {
        let sc = geometry.subclusterSize
        var offset = offset, bytes = bytes
        let head = offset % sc
        var tail = (offset + bytes + sc - 1) / sc * sc - (offset + bytes)
        if offset + bytes == geometry.virtualSize { tail = 0 }
        if head != 0 || tail != 0 {
            guard isZero(offset - head, head), isZero(offset + bytes, tail) else { return false }
            offset -= head
            bytes = sc
            let (_, type, _) = map(offset, sc)
            guard type.isUnallocated || type.isZero else { return false }
        }
        return zeroize(offset, bytes, unmap: unmap)
    }

    /// ZEROIZE (§9.2 step 3, `qcow2_subcluster_zeroize`).
    private func zeroize(_ offset: UInt64, _ bytes: UInt64, unmap: Bool) -> Bool {
        // The zero flag exists from v3 on; a v2 image without a backing file discards instead
        // (type REQUEST, not full), and with one refuses, so the block layer writes zeroes.
        if version < 3 {
            guard backing == nil else { return false }
            clusterDiscard(offset, bytes)
            return true
        }
        let cs = geometry.clusterSize
        var offset = offset
        var end = offset + bytes
        let head = min(end, (offset + cs - 1) / cs * cs) - offset
        offset += head
        let tail = end >= geometry.virtualSize ? 0 : end - max(offset, geometry.clusterStart(end))
        end -= tail
        cacheDiscards = true
        defer {
            cacheDiscards = false
            processDiscards()
        }
        if head != 0 {
            guard zeroSubclusters(offset - head, head) else { return false }
        }
        rewriteEntries(from: offset, clusters: Int(geometry.clusters(covering: end - offset))) { w, b in
            let type = geometry.clusterType(w)
            let drop = type == .compressed || (unmap && type.isAllocated)
            // zero_in_l2_slice with discard-no-unref (8.2+): an unmapped cluster keeps its
            // reference (the old word is OR-ed back in) unless it is compressed.
            let keep = discardNoUnref && type != .compressed
            let word = (drop ? 0 : w) | (keep ? w : 0)
            let free = drop && !keep
            return geometry.extendedL2 ? (word, EntryBits.zeroMask, free) : (word | EntryBits.zero, b, free)
        } kept: { w in
            // Only entries that were to be unmapped pass the discard on.
            let type = geometry.clusterType(w)
            if unmap && type.isAllocated { keptDiscard(w) }
        }
        if tail != 0 {
            guard zeroSubclusters(end, tail) else { return false }
        }
        return true
    }

    /// `zero_l2_subclusters`: set zero bits for part of one cluster (extended L2 only).
    private func zeroSubclusters(_ offset: UInt64, _ bytes: UInt64) -> Bool {
        let (slot, table) = tableForWrite(offset)
        let l2i = geometry.l2Index(offset)
        let (w, b) = l2Store.entry(table, l2i)
        defer { put(Self.l2, slot) }
        if geometry.clusterType(w) == .compressed { return false }
        let sc = UInt64(geometry.subclusterIndex(offset))
        let n = (bytes + geometry.subclusterSize - 1) / geometry.subclusterSize
        let range = ((UInt64(1) << (sc + n)) &- 1) & ~((UInt64(1) << sc) &- 1)
        let nb = (b | (range << 32)) & ~range
        if nb != b {
            l2Store.set(table, l2i, word: w, bitmap: nb)
            markDirty(Self.l2, slot)
        }
        return true
    }

    /// Flush (§10): WRITE(L2), then WRITE(RC), on this image only. Also the flush the block
    /// layer adds after every write and write-zeroes request in writethrough mode (§7.1, §9.2).
    func flushRequest() {
        // `bdrv_co_flush` returns early for read-only nodes: nothing reaches qcow2.
        if readOnly { return }
        writeCache(Self.l2)
        writeCache(Self.rc)
    }
}

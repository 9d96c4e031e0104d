/// L2 access primitives (§5), the read path (§6) and block-status queries (§8).
extension Qcow2Image {

    /// Host offset of the slice holding guest offset `g` in the table at `table` (§1.2).
    @inline(__always) func sliceOffset(_ g: UInt64, table: UInt64) -> UInt64 {
        let l2i = geometry.l2Index(g)
        let first = l2i & ~(sliceEntries &- 1)
        // Wrapping arithmetic: a table offset is below 2^56 and `first` below 2^18.
        return table &+ geometry.l2EntrySize &* UInt64(truncatingIfNeeded: first)
    }

    /// LOAD_SLICE (§5.1): one L2 GET; the slice is held until `put`.
    @inline(__always) func loadSlice(_ g: UInt64, table: UInt64) -> UInt64 { loadSlice(g, table: table, into: ops) }

    /// `loadSlice(_:table:)` into `sink`.
    @inline(__always) func loadSlice<S: OpSink>(_ g: UInt64, table: UInt64, into sink: S) -> UInt64 {
        get(Self.l2, sliceOffset(g, table: table), into: sink)
    }

    /// The L2 table host offset for guest offset `g`, or 0.
    @inline(__always) func l2Table(for g: UInt64) -> UInt64 {
        let i = geometry.l1Index(g)
        return i < l1.count ? l1[i] & EntryBits.offsetMask : 0
    }

    /// Whether `qcow2_get_host_offset` fails the request with EIO on the first entry MAP finds
    /// (`word` of type `type`): an invalid subcluster, an unaligned host cluster, a zero cluster
    /// in a v2 image.
    @inline(__always)
    private func isCorrupt(_ word: UInt64, _ type: SubclusterType) -> Bool {
        type == .invalid || (type.hasHostCluster && geometry.offsetInCluster(word & EntryBits.offsetMask) != 0)
            || (type.isZero && isVersion2)
    }

    /// MAP's bounds for `[g, g + want)`: the offset in the cluster, the L2 index, and the bytes
    /// from the cluster's start that MAP may cover (the request, cut at the slice's end).
    @inline(__always)
    private func mapBounds(_ g: UInt64, _ want: UInt64) -> (oic: UInt64, l2i: Int, need: UInt64) {
        let oic = geometry.offsetInCluster(g)
        let se = sliceEntries
        let l2i = geometry.l2Index(g)
        let sliceIndex = l2i & (se &- 1)
        // Wrapping and masking arithmetic in the per-request math (no overflow is possible:
        // `want` is at most a request's length, shifts are below 64).
        let need = min(want &+ oic, UInt64(truncatingIfNeeded: se &- sliceIndex) &<< UInt64(geometry.clusterBits))
        return (oic, l2i, need)
    }

    /// MAP (§6.1, `qcow2_get_host_offset`): the largest prefix of `[g, g + want)` with one
    /// subcluster type and contiguous host offsets within one L2 slice.
    @inline(__always)
    func map(_ g: UInt64, _ want: UInt64) -> (bytes: UInt64, type: SubclusterType, host: UInt64) {
        let cb = UInt64(geometry.clusterBits)
        let (oic, l2i, need) = mapBounds(g, want)
        let table = l2Table(for: g)
        if table == 0 { return (need - oic, .unallocatedPlain, 0) }
        let slot = loadSlice(g, table: table)
        let sc = geometry.subclusterIndex(g)
        let nbClusters = Int(truncatingIfNeeded: (need &+ geometry.clusterSize &- 1) &>> cb)
        let (w0, b0) = l2Store.entry(table, l2i)
        // Standard entries have one "subcluster" and no invalid type: the type from the word.
        var (t0, run0) = geometry.extendedL2 ? geometry.subclusterRun(w0, b0, sc) : (geometry.standardType(w0), 1)
        var host: UInt64 = 0
        if t0.hasHostCluster { host = (w0 & EntryBits.offsetMask) + oic }
        let spc = geometry.subclustersPerCluster
        if isCorrupt(w0, t0) {
            // QEMU fails the request with EIO here; go on over the rest of the cluster.
            mapCorruption(table: table, l2i: l2i, word: w0, bitmap: b0, type: t0)
            host = geometry.clusterStart(host)
            run0 = spc - sc
        }
        var count = run0
        if t0 != .compressed && t0 != .invalid && sc + run0 >= spc {
            count += followingRun(table, l2i, first: w0, type: t0, clusters: nbClusters)
        }
        put(Self.l2, slot)
        let avail = UInt64(truncatingIfNeeded: count &+ sc) &<< UInt64(truncatingIfNeeded: geometry.subclusterBits)
        return (min(avail, need) &- oic, t0, host)
    }

    /// MAP's scan past the first cluster (`qcow2_get_host_offset` through `count_contiguous_*`):
    /// the subclusters of entries `l2i + 1 ..< l2i + clusters` that continue the first entry
    /// `first` of type `type` (same type, host clusters contiguous), up to the first partial run.
    @inline(__always)
    private func followingRun(_ table: UInt64, _ l2i: Int, first w0: UInt64, type t0: SubclusterType, clusters nbClusters: Int)
        -> Int
    {
        let spc = geometry.subclustersPerCluster
        var count = 0
        var expected = w0 & EntryBits.offsetMask
        var j = 1
        while j < nbClusters {
            let (w, b) = l2Store.entry(table, l2i + j)
            let (t, run) = geometry.subclusterRun(w, b, 0)
            if t != t0 { break }
            if t0.hasHostCluster {
                expected += geometry.clusterSize
                if expected != w & EntryBits.offsetMask { break }
            }
            count += run
            if run < spc { break }
            j += 1
        }
        return count
    }

    /// The part of READ (§6.2) before the cache for a request that one MAP covers and that
    /// needs no task, on an image without a backing file or extended L2 entries (most reads of
    /// a live run without a recording or an observer): the slice MAP would GET and PUT (0: no
    /// table, so no cache operation) and the data to read (`normal`: at `host`). nil: any
    /// other request (more than one MAP, compressed data, a damaged entry), which `read` runs.
    ///
    /// The model's state does not change here, so the caller can run the cache's GET and PUT
    /// itself and then `quickReadData`: the same events and counts as `read`, in the same order
    /// (the slice's GET and PUT, then the host file's read), without the operation buffer.
    @inline(__always)
    func quickMap(_ g: UInt64, _ len: UInt64) -> (slice: UInt64, host: UInt64, normal: Bool)? {
        if len == 0 { return (0, 0, false) }
        let oic = geometry.offsetInCluster(g)
        // Most reads lie inside one cluster: MAP's first entry answers alone.
        let spanning = oic &+ len > geometry.clusterSize
        // The request goes on past the slice: a second MAP.
        if spanning && !withinOneSlice(g, len) { return nil }
        let table = l2Table(for: g)
        if table == 0 { return (0, 0, false) }
        let l2i = geometry.l2Index(g)
        let w0 = l2Store.entry(table, l2i).word
        let t0 = geometry.standardType(w0)
        // `map`'s corruption cases (and compressed data) take the general path, which reports them.
        if t0 == .compressed || isCorrupt(w0, t0) { return nil }
        if spanning && !firstRunCovers(g, len, table: table, l2i: l2i, first: w0, type: t0) { return nil }
        let normal = t0 == .normal
        return (sliceOffset(g, table: table), normal ? (w0 & EntryBits.offsetMask) &+ oic : 0, normal)
    }

    /// Whether `[g, g + len)` ends inside the L2 slice holding `g` (out of line, with
    /// `firstRunCovers`: only reads across clusters ask, and `quickMap` stays small).
    @inline(never)
    private func withinOneSlice(_ g: UInt64, _ len: UInt64) -> Bool {
        let (oic, _, need) = mapBounds(g, len)
        return need &- oic >= len
    }

    /// Whether MAP's run from the first entry (`first`, of standard type `type`) covers
    /// `[g, g + len)`, a read inside one slice.
    @inline(never)
    private func firstRunCovers(
        _ g: UInt64, _ len: UInt64, table: UInt64, l2i: Int, first w0: UInt64, type t0: SubclusterType
    ) -> Bool {
        let cb = UInt64(geometry.clusterBits)
        let (oic, _, need) = mapBounds(g, len)
        let nbClusters = Int(truncatingIfNeeded: (need &+ geometry.clusterSize &- 1) &>> cb)
        let count = nbClusters > 1 ? 1 &+ followingRun(table, l2i, first: w0, type: t0, clusters: nbClusters) : 1
        // Standard entries: one subcluster per cluster.
        return min(UInt64(truncatingIfNeeded: count) &<< cb, need) &- oic >= len
    }

    /// The part of READ after the cache for a request `quickMap` took: the guest's data read.
    @inline(__always)
    func quickReadData(_ hostOffset: UInt64, _ n: UInt64) {
        stats.guestBytesRead += n
        host.read(hostOffset, n)
    }

    /// Whether `quickMap` may be asked (no backing file, standard L2 entries).
    var takesQuickReads: Bool { backing == nil && !geometry.extendedL2 }

    /// The corruption `qcow2_get_host_offset` signals for the entry MAP found (never inlined:
    /// only damaged images get here).
    @inline(never)
    func mapCorruption(table: UInt64, l2i: Int, word: UInt64, bitmap: UInt64, type: SubclusterType) {
        // QEMU's "L2 index" is the index inside the slice.
        let index = qemuHex(l2i & (sliceEntries - 1))
        let at = table + geometry.l2EntrySize * UInt64(l2i)
        let corrupt = "qcow2: Marking image as corrupt: "
        let suppressed = "; further corruption events will be suppressed"
        if type == .invalid {
            fail(
                at + 8,
                "L2 entry \(l2i) of the table at \(qcow2Hex(table)): subcluster bitmap \(qcow2Hex(bitmap)) (entry \(qcow2Hex(word)))",
                corrupt + "Invalid cluster entry found  (L2 offset: \(qemuHex(table)), L2 index: \(index))" + suppressed)
        } else if type.isZero && isVersion2 {
            fail(
                at, "L2 entry \(l2i) of the table at \(qcow2Hex(table)) (\(qcow2Hex(word)))",
                corrupt + "Zero cluster entry found in pre-v3 image (L2 offset: \(qemuHex(table)), L2 index: \(index))"
                    + suppressed)
        } else {
            fail(
                at, "L2 entry \(l2i) of the table at \(qcow2Hex(table)) (\(qcow2Hex(word)))",
                corrupt
                    + "Cluster allocation offset \(qemuHex(word & EntryBits.offsetMask)) unaligned (L2 offset: \(qemuHex(table)), L2 index: \(index))"
                    + suppressed)
        }
    }

    /// A compressed cluster's data: `qcow2_parse_compressed_l2_entry` (host offset, bytes).
    func compressedRange(_ word: UInt64) -> (offset: UInt64, bytes: UInt64) {
        let csizeShift = UInt64(62 - (geometry.clusterBits - 8))
        let offset = word & ((1 << csizeShift) - 1)
        let sectors = ((word >> csizeShift) & ((1 << UInt64(geometry.clusterBits - 8)) - 1)) + 1
        return (offset, sectors * 512 - (offset & 511))
    }

    /// READ (§6.2, `qcow2_co_preadv_part`). Returns whether QEMU runs it through a task pool
    /// (§6.4): a segment that needs a task (backing, data, compressed) is not the last one.
    ///
    /// In a pool, a backing task is entered at once and runs until its first I/O (§13): when
    /// its first GET misses, its events after the miss's read (`get_read`) come after the rest
    /// of this loop's MAPs, and a later backing task, which waits for the backing image's lock,
    /// comes after it (`aio_task_pool_wait_all`).
    @discardableResult
    func read(_ g: UInt64, _ len: UInt64, cow: Bool = false) -> Bool {
        var g = g, left = len
        var pool = false
        // Backing tasks' events are held back until the pool is waited for, in submission order
        // (the cache layer does the holding: `deferBegin` … `deferEnd`).
        var holding = false
        while left > 0 {
            let (n, type, hostOffset) = map(g, left)
            let needsTask: Bool
            switch type {
            case .unallocatedPlain, .unallocatedAlloc: needsTask = backing != nil
            case .normal, .compressed: needsTask = true
            case .zeroPlain, .zeroAlloc, .invalid: needsTask = false
            }
            if needsTask && n < left { pool = true }
            switch type {
            case .unallocatedPlain, .unallocatedAlloc:
                if let b = backing, g < b.geometry.virtualSize {
                    if pool {
                        if !holding {
                            holding = true
                            ops.append(MetadataOp(.deferBegin, image: chainIndex))
                        }
                        ops.append(MetadataOp(.captureBegin, image: b.chainIndex))
                        b.read(g, min(n, b.geometry.virtualSize - g))
                        ops.append(MetadataOp(.captureEnd, image: b.chainIndex))
                    } else {
                        b.read(g, min(n, b.geometry.virtualSize - g))
                    }
                }
            case .normal, .compressed:
                if !cow { stats.guestBytesRead += n }
                if type == .normal { host.read(hostOffset, n) } else { checkCompressedRead(g) }
            case .zeroPlain, .zeroAlloc, .invalid:
                break
            }
            g += n
            left -= n
        }
        // The one exit (not a `defer`: that was an out-of-line call per read).
        if holding { ops.append(MetadataOp(.deferEnd, image: chainIndex)) }
        if pool { requestState.taskPool = true }
        return pool
    }

    /// A compressed cluster whose data lies past the end of the file reads as zeroes, which do
    /// not decompress: QEMU fails the read with EIO (`qcow2_co_preadv_compressed`).
    @inline(never)
    func checkCompressedRead(_ g: UInt64) {
        let table = l2Table(for: g)
        guard table != 0 else { return }
        let l2i = geometry.l2Index(g)
        let word = l2Store.entry(table, l2i).word
        let (offset, bytes) = compressedRange(word)
        // The file's length grows with table write-backs at its end.
        guardHost()
        if offset >= host.length || bytes > host.length - offset {
            fail(
                table + geometry.l2EntrySize * UInt64(l2i),
                "L2 entry \(l2i) of the table at \(qcow2Hex(table)) (\(qcow2Hex(word))): compressed data of \(bytes) bytes at \(qcow2Hex(offset)) lies past the end of the file (\(qcow2Hex(host.length)))",
                "the read fails with EIO (zeroes past the end of the file do not decompress)")
        }
    }

    /// Block status of one layer.
    enum Status { case eof, zero, data, unallocated }

    /// STATUS (§8.1, `qcow2_co_block_status` through `bdrv_co_block_status`).
    func status(_ g: UInt64, _ len: UInt64, wantZero: Bool = false) -> (pnum: UInt64, status: Status) {
        let size = geometry.virtualSize
        if g >= size { return (0, .eof) }
        let len = min(len, size - g)
        if !probeDone {
            probeDone = true
            detectPreallocation()
        }
        let (n, type, host) = map(g, len)
        switch type {
        case .zeroPlain, .zeroAlloc: return (n, .zero)
        case .normal where wantZero && metadataPreallocation:
            // BDRV_BLOCK_RECURSE: ask the host file whether the data is really there.
            guardHost()
            let f = self.host.status(host, n)
            if f.eof && (f.pnum == 0 || f.zero) { return (n, .zero) }
            return (f.pnum, f.zero ? .zero : .data)
        case .normal, .compressed: return (n, .data)
        case .unallocatedPlain, .unallocatedAlloc, .invalid: return (n, backing == nil ? .zero : .unallocated)
        }
    }

    /// Status over the chain (`bdrv_co_common_block_status_above` with base NULL): dives into
    /// backing layers while the range is unallocated. `isZero` is the ZERO flag of the result.
    func statusAbove(_ g: UInt64, _ len: UInt64, wantZero: Bool = false) -> (pnum: UInt64, isZero: Bool) {
        var (pnum, st) = status(g, len, wantZero: wantZero)
        if pnum == 0 || st != .unallocated { return (pnum, st == .zero) }
        var bytes = pnum
        var layer = backing
        while let b = layer {
            let (p, s) = b.status(g, bytes, wantZero: wantZero)
            if p == 0 { return (bytes, true) }  // a short backing file reads as zeroes
            if s != .unallocated { return (p, s == .zero) }
            bytes = p
            pnum = p
            layer = b.backing
        }
        return (pnum, false)
    }

    /// IS_ZERO_FAST (§8.2, `bdrv_co_is_zero_fast`).
    func isZeroFast(_ g: UInt64, _ len: UInt64) -> Bool {
        if len == 0 { return true }
        let (pnum, zero) = statusAbove(g, len)
        return zero && pnum == len
    }

    /// IS_ZERO (§9.2, qcow2's `is_zero`): block-status queries until the range is covered or a
    /// non-zero answer.
    func isZero(_ g: UInt64, _ len: UInt64) -> Bool {
        var g = g
        var bytes = len
        if g + bytes > geometry.virtualSize { bytes = geometry.virtualSize - min(g, geometry.virtualSize) }
        if bytes == 0 { return true }
        while true {
            let (nr, zero) = statusAbove(g, bytes, wantZero: true)
            g += nr
            bytes -= nr
            if !(zero && nr > 0 && bytes > 0) { return zero && bytes == 0 }
        }
    }

    /// The one-time preallocation probe (§8.3, `qcow2_detect_metadata_preallocation`).
    func detectPreallocation() {
        stats.preallocationProbes += 1
        // `st_blocks` counts the tables written back so far.
        guardHost()
        let realClusters = Int64(host.allocatedBytes / geometry.clusterSize)
        var threshold = max(realClusters * 10 / 9, realClusters + 2)
        let end = geometry.clusters(covering: host.length)
        var i: UInt64 = 0
        while i < end && threshold != 0 {
            // Clusters without a refcount block count 0 and cost no cache lookup: skip them in
            // bulk (a damaged image may have written data near 2^56, making the file that long).
            let t = Int(geometry.refblockIndex(ofCluster: i))
            if t >= reftable.count { break }
            if reftable[t] & EntryBits.reftableOffsetMask == 0 {
                i = UInt64(t + 1) << UInt64(geometry.refblockBits)
                continue
            }
            threshold &-= Int64(bitPattern: refcount(ofCluster: i))
            i += 1
        }
        metadataPreallocation = threshold == 0
    }
}

/// Refcount operations (§4): lookups, the free-cluster search, allocation, updates, refcount-block
/// allocation and refcount-table growth.
extension Qcow2Image {
    /// Discard types (`enum qcow2_discard_type`); only REQUEST passes through by option.
    enum DiscardType { case never, always, request, snapshot, other }

    /// Result of an update that may have to restart its caller's search (QEMU's -EAGAIN), or
    /// that failed where QEMU's fails (`failure` says why; the replay stops after the request).
    enum UpdateResult { case ok, again, failed }

    private func passthrough(_ t: DiscardType) -> Bool {
        switch t {
        case .request: discardPassthroughRequest
        case .snapshot, .always: true
        case .other, .never: false
        }
    }

    /// GET_REFCOUNT(k) (§4.1, `qcow2_get_refcount`).
    func refcount(ofCluster k: UInt64) -> UInt64 {
        let t = Int(geometry.refblockIndex(ofCluster: k))
        guard t < reftable.count else { return 0 }
        let block = reftable[t] & EntryBits.reftableOffsetMask
        guard block != 0 else { return 0 }
        let i = get(Self.rc, block)
        let v = rcStore.get(block, Int(k & (geometry.refblockEntries - 1)))
        put(Self.rc, i)
        return v
    }

    /// The first cluster at or after `k` (and before `limit`) that is free (`free`) or in use
    /// (`!free`), read straight from the store; `limit` if none.
    func nextCluster(from k: UInt64, free: Bool, limit: UInt64 = .max) -> UInt64 {
        var k = k
        let per = geometry.refblockEntries
        while k < limit {
            let t = Int(geometry.refblockIndex(ofCluster: k))
            let base = UInt64(t) << UInt64(geometry.refblockBits)
            let blockEnd = min(base + per, limit)
            let block = t < reftable.count ? reftable[t] & EntryBits.reftableOffsetMask : 0
            if block == 0 {
                // No refcount block: every cluster it would cover is free.
                if free { return k }
                k = blockEnd
                continue
            }
            let i = Int(k - base), e = Int(blockEnd - base)
            let j = free ? rcStore.firstZero(block, from: i, end: e) : rcStore.firstNonZero(block, from: i, end: e)
            if j < e { return base + UInt64(j) }
            k = blockEnd
        }
        return limit
    }

    /// FIND_FREE(n) (§4.2, `alloc_clusters_noref`): the offset of `n` consecutive free clusters
    /// at or after `fci`; `fci` ends just after them.
    func findFree(_ n: UInt64) -> UInt64 {
        processDiscards()
        if !observed {
            // Unobserved sessions (creation, populate): the same search without cache traffic,
            // skipping whole runs of used clusters.
            while true {
                let start = nextCluster(from: freeClusterIndex, free: true)
                let end = nextCluster(from: start, free: false, limit: start + n)
                if end - start >= n {
                    freeClusterIndex = start + n
                    return start << UInt64(geometry.clusterBits)
                }
                freeClusterIndex = end
            }
        }
        // QEMU reads the refcount of every cluster from `fci` up to the end of the first run of
        // `n` free ones (a used cluster restarts the count). The run is found in the store; the
        // reads are then replayed block by block (`readRefcounts`), with the same cache traffic.
        let from = freeClusterIndex
        var start = from
        while true {
            start = nextCluster(from: start, free: true)
            let end = nextCluster(from: start, free: false, limit: start + n)
            if end - start >= n { break }
            start = end
        }
        readRefcounts(from: from, count: start + n - from)
        freeClusterIndex = start + n
        return start << UInt64(geometry.clusterBits)
    }

    /// GET_REFCOUNT of clusters `k ..< k + count` in order, for its cache traffic only: the
    /// first cluster of each refcount block is a full GET (maybe a miss); the others GET the
    /// same block again, hits on the slot just released, so they are counted in bulk (their
    /// events still printed one by one). Clusters without a refcount block read nothing.
    func readRefcounts(from k: UInt64, count: UInt64) {
        var c = k
        let end = k + count
        let per = geometry.refblockEntries
        while c < end {
            let t = Int(geometry.refblockIndex(ofCluster: c))
            let blockEnd = min((UInt64(t) << UInt64(geometry.refblockBits)) + per, end)
            let block = t < reftable.count ? reftable[t] & EntryBits.reftableOffsetMask : 0
            if block != 0 {
                _ = refcount(ofCluster: c)
                // Resident: it was released just now.
                repeatGet(Self.rc, offset: block, count: Int(blockEnd - c - 1))
            }
            c = blockEnd
        }
    }

    /// ALLOC(bytes) (§4.3, `qcow2_alloc_clusters`).
    func allocate(bytes: UInt64) -> UInt64 {
        let n = geometry.clusters(covering: bytes)
        while true {
            let off = findFree(n)
            if update(off, n << UInt64(geometry.clusterBits), delta: 1, decrease: false, type: .never) != .again {
                return off
            }
        }
    }

    /// `allocate(bytes:)` of one cluster when the cluster at `freeClusterIndex` is free and has a
    /// refcount block (the common case: clusters taken one after another at the end of the
    /// file): FIND_FREE's one refcount read, then UPDATE's GET, MARK_DIRTY, store and PUT of
    /// that block, the same calls as the general path. Nil, with nothing done, otherwise.
    /// Its operations go to `sink` (the quick write's).
    @inline(__always)
    func allocateNextCluster<S: OpSink>(into sink: S) -> UInt64? {
        guard observed, pendingDiscards.isEmpty else { return nil }
        let k = freeClusterIndex
        let t = Int(truncatingIfNeeded: geometry.refblockIndex(ofCluster: k))
        guard k != 0, t < reftable.count else { return nil }
        let block = reftable[t] & EntryBits.reftableOffsetMask
        guard block != 0 else { return nil }
        let idx = Int(truncatingIfNeeded: k & (geometry.refblockEntries &- 1))
        guard rcStore.get(block, idx) == 0 else { return nil }
        // FIND_FREE (`readRefcounts` of the one cluster).
        getReleased(Self.rc, block, into: sink)
        freeClusterIndex = k &+ 1
        // UPDATE: 0 -> 1 (the store's change between MARK_DIRTY and PUT touches no cache).
        getReleased(Self.rc, block, dirty: true, into: sink)
        rcStore.set(block, idx, 1)
        return k &<< UInt64(geometry.clusterBits)
    }

    /// ALLOC_AT(off, n) (§4.3, `qcow2_alloc_clusters_at`): how many of `n` clusters from `off`
    /// could be allocated contiguously (0 if `off` is in use).
    func allocate(at off: UInt64, clusters n: UInt64) -> UInt64 {
        while true {
            var i: UInt64 = 0
            let k = geometry.hostCluster(off)
            i = nextCluster(from: k, free: false, limit: k + n) - k
            if observed {
                // QEMU reads each refcount up to and including the first used cluster.
                readRefcounts(from: k, count: i < n ? i + 1 : n)
            }
            if update(off, i << UInt64(geometry.clusterBits), delta: 1, decrease: false, type: .never) != .again {
                return i
            }
        }
    }

    /// FREE(off, bytes, type) (§4.6, `qcow2_free_clusters`).
    func free(_ off: UInt64, _ bytes: UInt64, type: DiscardType) {
        _ = update(off, bytes, delta: 1, decrease: true, type: type)
    }

    /// FREE_ENTRY(entry, type) (§4.6, `qcow2_free_any_cluster`).
    func freeEntry(_ word: UInt64, type: DiscardType) {
        switch geometry.clusterType(word) {
        case .normal, .zeroAlloc: free(word & EntryBits.offsetMask, geometry.clusterSize, type: type)
        case .compressed:
            // `qcow2_free_any_cluster`: the compressed data's byte range.
            let (offset, bytes) = compressedRange(word)
            free(offset, bytes, type: type)
        case .zeroPlain, .unallocated: break
        }
    }

    /// UPDATE (§4.4, `update_refcount`).
    func update(_ off: UInt64, _ length: UInt64, delta: UInt64, decrease: Bool, type: DiscardType) -> UpdateResult {
        guard length > 0 else { return .ok }
        if decrease { setDependency(Self.rc, on: Self.l2) }
        let cs = geometry.clusterSize
        let start = geometry.clusterStart(off)
        let last = geometry.clusterStart(off + length - 1)
        var held: UInt64?
        var heldBlock: UInt64 = 0
        // A `freeCluster` since the held block's GET may have made the cache layer release it
        // (QEMU does when the freed cluster is a cached refcount block); then the next step GETs
        // it again, and the release of the held block is already done.
        var mayBeDropped = false
        func releaseHeld(_ h: UInt64) {
            ops.append(MetadataOp(mayBeDropped ? .putHeld : .put, Self.rc, image: chainIndex, offset: h))
        }
        var prevTable = UInt64.max
        var c = start
        var result = UpdateResult.ok
        while c <= last {
            let k = c >> UInt64(geometry.clusterBits)
            let t = geometry.refblockIndex(ofCluster: k)
            if t == prevTable && mayBeDropped {
                ops.append(MetadataOp(.regetIfDropped, Self.rc, image: chainIndex, offset: heldBlock))
                mayBeDropped = false
            }
            if t != prevTable {
                if let h = held { releaseHeld(h); held = nil }
                mayBeDropped = false
                let (r, h, blockOffset) = refblock(forCluster: k)
                held = h
                heldBlock = blockOffset
                if r == .failed {
                    result = .failed
                    break
                }
                if r == .again {
                    freeClusterIndex = min(freeClusterIndex, start >> UInt64(geometry.clusterBits))
                    result = .again
                    break
                }
            }
            prevTable = t
            guard let h = held else { break }
            markDirty(Self.rc, h)
            let idx = Int(k & (geometry.refblockEntries - 1))
            let old = rcStore.get(heldBlock, idx)
            if decrease ? old < delta : old > maxRefcount - delta {
                refcountOutOfRange(k, old, decrease: decrease, block: heldBlock)
                result = .failed
                break
            }
            let new = decrease ? old - delta : old + delta
            // A run of equal refcounts in this block is updated at once. None reaching 0: per
            // cluster QEMU would only mark the held block dirty again (a no-op). All reaching 0
            // (the undo of an allocation that met a missing refcount block): each cluster's
            // operations still go out in QEMU's order, but the store changes once (one cluster at
            // a time split its run anew each time: 1 200 instructions per cluster).
            let inBlock = Int(geometry.refblockEntries) - idx
            let toLast = Int(min((last - c) >> UInt64(geometry.clusterBits), UInt64(inBlock - 1))) + 1
            let run = toLast > 1 ? rcStore.runLength(heldBlock, from: idx, limit: toLast) : 1
            if new != 0 && run > 1 {
                rcStore.set(heldBlock, idx..<(idx + run), new)
                c += UInt64(run) * cs
                continue
            }
            let n = new == 0 ? run : 1
            if new == 0 && k < freeClusterIndex { freeClusterIndex = k }
            if n > 1 { rcStore.set(heldBlock, idx..<(idx + n), new) } else { rcStore.set(heldBlock, idx, new) }
            if new == 0 {
                for j in 0..<n {
                    if j > 0 {
                        // What the loop's next turn would do for the next cluster of the run.
                        ops.append(MetadataOp(.regetIfDropped, Self.rc, image: chainIndex, offset: heldBlock))
                        markDirty(Self.rc, h)
                    }
                    stats.clustersFreed += 1
                    // QEMU looks up `offset`, the start of the whole range, not this cluster.
                    ops.append(MetadataOp(.freeCluster, image: chainIndex, offset: off, extra: h))
                    if passthrough(type) { queueDiscard(c + UInt64(j) * cs, cs) }
                }
                mayBeDropped = true
            }
            c += UInt64(n) * cs
        }
        if !cacheDiscards { processDiscards() }
        if let h = held { releaseHeld(h) }
        if result == .again && failure == nil && c > off {
            // Undo the clusters already updated (QEMU tries the same on any error; for an
            // unaligned `off` stopped in its first cluster the length would be negative, which
            // `update_refcount` refuses with EINVAL).
            _ = update(off, c - off, delta: delta, decrease: !decrease, type: .never)
        }
        return result
    }

    /// REFBLOCK_FOR(k) (§4.5, `alloc_refcount_block`): the refcount block of cluster `k`, held,
    /// allocating it (and growing the refcount table) when missing. Returns `.again` after an
    /// allocation: the caller must restart its search.
    func refblock(forCluster k: UInt64) -> (UpdateResult, UInt64?, UInt64) {
        let t = Int(geometry.refblockIndex(ofCluster: k))
        if t < reftable.count {
            let existing = reftable[t] & EntryBits.reftableOffsetMask
            if existing != 0 { return (.ok, get(Self.rc, existing), existing) }
        }
        writeCache(Self.l2)
        let nb = findFree(1)
        if nb == 0 {
            // Cluster 0 (the header) counted as free: a damaged refcount block.
            fail(
                nil, "the refcount of host cluster 0 (the header) is 0",
                "qcow2: Marking image as corrupt: Preventing invalid allocation of refcount block at offset 0; further corruption events will be suppressed"
            )
            return (.failed, nil, 0)
        }
        let nbCluster = geometry.hostCluster(nb)
        var i: UInt64
        if geometry.refblockIndex(ofCluster: nbCluster) == UInt64(t) {
            i = get(Self.rc, nb, readFromDisk: false)
            rcStore.zero(nb)
            rcStore.set(nb, Int(nbCluster & (geometry.refblockEntries - 1)), 1)
        } else {
            if update(nb, geometry.clusterSize, delta: 1, decrease: false, type: .never) == .again {
                return (.again, nil, 0)
            }
            writeCache(Self.rc)
            i = get(Self.rc, nb, readFromDisk: false)
            rcStore.zero(nb)
        }
        stats.refcountBlocksAllocated += 1
        markDirty(Self.rc, i)
        writeCache(Self.rc)
        if t < reftable.count {
            reftable[t] = nb
            writeDirect(reftableOffset + 8 * UInt64(t), 8)
            return (.again, i, nb)
        }
        put(Self.rc, i)
        let blocksUsed = (max(k + 1, nbCluster + 1) + geometry.refblockEntries - 1) / geometry.refblockEntries
        guard
            growRefcountTable(
                startOffset: blocksUsed * geometry.refblockEntries * geometry.clusterSize, newBlockIndex: t, newBlockOffset: nb)
        else { return (.failed, nil, 0) }
        i = get(Self.rc, nb)
        return (.again, i, nb)
    }

    /// `qcow2_refcount_metadata_size`: refcount blocks needed to cover `clusters` clusters plus
    /// the refcount structures themselves, with QEMU's generous growth.
    private func refcountMetadataBlocks(clusters start: UInt64, generous: Bool) -> UInt64 {
        let perTableCluster = geometry.clusterSize / 8
        let perBlock = geometry.refblockEntries
        var clusters = start
        var table: UInt64 = 0, blocks: UInt64 = 0, n: UInt64 = 0, last: UInt64
        var generous = generous
        repeat {
            last = n
            blocks = (clusters + table + blocks + perBlock - 1) / perBlock
            table = (blocks + perTableCluster - 1) / perTableCluster
            n = table + blocks
            if n == last && generous {
                clusters += (table + 1) / 2
                n = 0
                generous = false
            }
        } while n != last
        return blocks
    }

    /// GROW_REFTABLE (§4.7, `qcow2_refcount_area`). Returns false, changing nothing, where QEMU
    /// returns EFBIG: a table above `QCOW_MAX_REFTABLE_SIZE` entries.
    func growRefcountTable(startOffset: UInt64, newBlockIndex: Int, newBlockOffset: UInt64) -> Bool {
        let cs = geometry.clusterSize
        let total64 = refcountMetadataBlocks(clusters: startOffset / cs, generous: true)
        let perCluster = Int(cs / 8)
        let limit = Qcow2Limits.maxRefcountTableBytes
        let tableSize64 = ((total64 + (total64 + 1) / 2) + UInt64(perCluster) - 1) / UInt64(perCluster) * UInt64(perCluster)
        if total64 > limit || tableSize64 > limit {
            fail(
                nil,
                "refcounts up to host offset \(qcow2Hex(startOffset)) need a refcount table of \(tableSize64) entries, above QEMU's limit of \(limit) (QCOW_MAX_REFTABLE_SIZE)",
                "qcow2_refcount_area fails with EFBIG (\"File too large\"): a write fails; a discard or COW prints \"qcow2_free_clusters failed: File too large\" and leaks the cluster"
            )
            return false
        }
        let total = Int(total64)
        let areaIndex = Int(startOffset / cs / geometry.refblockEntries)
        let tableSize = Int(tableSize64)
        let tableClusters = UInt64(tableSize * 8) / cs
        var newTable = ContiguousArray<UInt64>(repeating: 0, count: tableSize)
        for j in 0..<min(reftable.count, tableSize) { newTable[j] = reftable[j] }
        newTable[newBlockIndex] = newBlockOffset
        var additional: UInt64 = 0
        if areaIndex < total {
            for j in areaIndex..<total where newTable[j] == 0 { additional += 1 }
        }
        let tableOffset = startOffset + additional * cs
        let endOffset = tableOffset + tableClusters * cs
        var blockOffset = startOffset
        if areaIndex < total {
            for j in areaIndex..<total {
                let i: UInt64
                if newTable[j] != 0 {
                    i = get(Self.rc, newTable[j])
                } else {
                    i = get(Self.rc, blockOffset, readFromDisk: false)
                    rcStore.zero(blockOffset)
                    markDirty(Self.rc, i)
                    newTable[j] = blockOffset
                    blockOffset += cs
                    stats.refcountBlocksAllocated += 1
                }
                let block = newTable[j]
                let firstCovered = UInt64(j) * geometry.refblockEntries * cs
                if firstCovered < endOffset {
                    var e = firstCovered < startOffset ? Int((startOffset - firstCovered) / cs) : 0
                    let endIndex = Int(min((endOffset - firstCovered) / cs, geometry.refblockEntries))
                    while e < endIndex {
                        rcStore.set(block, e, 1)
                        e += 1
                    }
                    markDirty(Self.rc, i)
                }
                put(Self.rc, i)
            }
        }
        writeCache(Self.rc)
        writeDirect(tableOffset, UInt64(tableSize * 8))
        writeDirect(48, 12)
        let oldOffset = reftableOffset
        let oldSize = UInt64(reftable.count * 8)
        reftable = newTable
        reftableOffset = tableOffset
        stats.refcountTableGrowths += 1
        free(oldOffset, oldSize, type: .other)
        return true
    }

    /// The largest refcount the image's refcount width holds (`s->refcount_max`).
    var maxRefcount: UInt64 { geometry.refcountBits == 64 ? .max : (1 << UInt64(geometry.refcountBits)) - 1 }

    /// `update_refcount`'s range check failed: QEMU returns EINVAL (only damaged metadata gets
    /// here: a used cluster whose refcount is 0, or one already at the refcount maximum).
    @inline(never)
    private func refcountOutOfRange(_ k: UInt64, _ old: UInt64, decrease: Bool, block: UInt64) {
        let bitOffset = (k & (geometry.refblockEntries - 1)) * UInt64(geometry.refcountBits)
        let what = decrease ? "is freed again" : "gets one more reference"
        fail(
            block + bitOffset / 8,
            "refcount of host cluster \(qcow2Hex(k)) (offset \(qcow2Hex(k << UInt64(geometry.clusterBits)))) is \(old) and the cluster \(what)",
            decrease
                ? "update_refcount fails with EINVAL: \"qcow2_free_clusters failed: Invalid argument\" and the cluster leaks"
                : "update_refcount fails with EINVAL: the refcount would exceed \(maxRefcount) and the request fails")
    }

    /// A metadata write that bypasses the caches (L1 entries, refcount-table entries, tables).
    func writeDirect(_ offset: UInt64, _ bytes: UInt64) {
        host.write(offset, bytes)
        stats.directMetadataBytesWritten += bytes
    }

    private func queueDiscard(_ offset: UInt64, _ bytes: UInt64) {
        // `update_refcount_discard`: merge with an adjacent queued region.
        for j in pendingDiscards.indices {
            let d = pendingDiscards[j]
            if offset + bytes == d.offset || d.offset + d.bytes == offset {
                pendingDiscards[j] = (min(offset, d.offset), d.bytes + bytes)
                return
            }
        }
        pendingDiscards.append((offset, bytes))
    }

    /// `qcow2_process_discards`: punch the queued host ranges.
    func processDiscards() {
        guard !pendingDiscards.isEmpty else { return }
        syncHost()
        for d in pendingDiscards { host.punch(d.offset, d.bytes) }
        pendingDiscards.removeAll(keepingCapacity: true)
    }
}

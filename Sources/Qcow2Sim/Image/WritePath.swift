/// The write path (§5.2–§5.3, §7): table allocation, cluster allocation, copy-on-write metadata,
/// the zero-COW probe and linking.
extension Qcow2Image {
    /// QEMU's `QCowL2Meta`: one contiguous allocation to link after the data is written.
    struct L2Meta {
        /// Guest offset of the first cluster.
        var guestCluster: UInt64
        /// Host offset of the first cluster.
        var hostCluster: UInt64
        var clusters: Int
        var keepOld: Bool
        /// COW head `[cowStartOffset, cowStartOffset + cowStartBytes)`, relative to guestCluster.
        var cowStartOffset: UInt64
        var cowStartBytes: UInt64
        /// COW tail, relative to guestCluster.
        var cowEndOffset: UInt64
        var cowEndBytes: UInt64
        var skipCow = false
        /// Set by preallocation: extended-L2 bitmaps are left alone.
        var prealloc = false

        var hasCow: Bool { cowStartBytes != 0 || cowEndBytes != 0 }
    }

    /// TABLE_FOR_WRITE (§5.2, `get_cluster_table`): the slice of `g`, held, allocating the L2
    /// table if the L1 entry lacks COPIED. Returns (slot, table offset).
    func tableForWrite(_ g: UInt64) -> (slot: UInt64, table: UInt64) {
        let l1i = geometry.l1Index(g)
        precondition(l1i < l1.count, "L1 growth is not modelled (§5.4): offset beyond the L1 table")
        if l1[l1i] & EntryBits.copied == 0 {
            let old = l1[l1i] & EntryBits.offsetMask
            allocateL2(l1i)
            if old != 0 { free(old, geometry.clusterSize, type: .other) }
        } else if l1[l1i] & EntryBits.offsetMask == 0 {
            // QEMU loads the slice at offset 0, which its cache refuses with an assertion (a crash
            // of qemu-io / the VM); go on as if COPIED were clear, and stop after the request.
            fail(
                l1Offset + 8 * UInt64(l1i), "L1 entry \(l1i) (\(qcow2Hex(l1[l1i]))) has the COPIED flag but no L2 table offset",
                "qcow2_cache_do_get: Assertion `offset != 0' failed (the process aborts on the first write)")
            allocateL2(l1i)
        }
        let table = l1[l1i] & EntryBits.offsetMask
        return (loadSlice(g, table: table), table)
    }

    /// ALLOCATE_L2 (§5.3, `l2_allocate`).
    func allocateL2(_ l1i: Int) {
        let old = l1[l1i] & EntryBits.offsetMask
        var new = allocate(bytes: geometry.clusterSize)
        if new == 0 {
            // Cluster 0 (the header) counted as free: QEMU's cache asserts on offset 0. Go on with
            // a table at an offset no image reaches (the replay stops after the request).
            fail(
                nil, "the refcount of host cluster 0 (the header) is 0, so a new L2 table would be allocated there",
                "qcow2_cache_do_get: Assertion `offset != 0' failed (the process aborts)")
            new = geometry.clusterStart(EntryBits.offsetMask)
        }
        stats.l2TablesAllocated += 1
        writeCache(Self.rc)
        let sliceBytes = l2EntrySize
        let slices = Int(geometry.clusterSize / sliceBytes)
        l2Store.create(new, copying: old == 0 ? nil : old)
        for s in 0..<slices {
            let i = get(Self.l2, new + UInt64(s) * sliceBytes, readFromDisk: false)
            if old != 0 {
                let j = get(Self.l2, old + UInt64(s) * sliceBytes)
                put(Self.l2, j)
            }
            markDirty(Self.l2, i)
            put(Self.l2, i)
        }
        writeCache(Self.l2)
        l1[l1i] = new | EntryBits.copied
        writeDirect(l1Offset + 8 * UInt64(l1i), 8)
    }

    /// WRITE (§7.1, `qcow2_co_pwritev_part`): returns whether QEMU runs it as several segments.
    /// The writethrough flush belongs to the request (`apply`), not to this driver call.
    ///
    /// A request whose first ALLOC_HOST does not cover it runs as a task pool (§13): each
    /// segment's task is entered at once (`aio_task_pool_start_task`) and runs until its first
    /// I/O (the zero-COW write or the data write); the request coroutine then maps the next
    /// segment. The tasks resume, after the last segment is launched (or when all
    /// `QCOW2_MAX_WORKERS` slots are busy), in the order their I/O was submitted.
    @discardableResult
    func write(_ g: UInt64, _ len: UInt64) -> Bool { write(g, len, quickInto: ops) }

    /// `write(_:_:)`, a quick write's operations sent to `sink` (`DirectOps` in a live run whose
    /// buffer is empty); the general path writes to the chain's buffer.
    @inline(__always) @discardableResult
    func write<S: OpSink>(_ g: UInt64, _ len: UInt64, quickInto sink: S) -> Bool {
        if !debugGeneralWrites && quickWrite(g, len, into: sink) { return false }
        return generalWrite(g, len)
    }

    /// WRITE through ALLOC_HOST and its tasks (every write `quickWrite` does not take).
    private func generalWrite(_ g: UInt64, _ len: UInt64) -> Bool {
        var (n, hostStart, metas) = allocateHost(g, len)
        if n == len {
            // `qcow2_add_task` with no pool: the task runs inline, to completion.
            var t = WriteTask(host: hostStart, guest: g, bytes: n, metas: metas)
            // The task holds the only reference: its metas change in place (a shared array was
            // copied at the first change, an allocation per write).
            metas = []
            while !runTask(&t) {}
            t.metas.removeAll(keepingCapacity: true)
            spareMetas = t.metas
            return false
        }
        requestState.taskPool = true
        var g = g, left = len
        // Tasks waiting for their I/O, in submission order (the order QEMU resumes them).
        var waiting: [WriteTask] = []
        var head = 0
        var launched: Int32 = 0
        // The event log tags each task's events (1, 2, …; 0 is the request's own coroutine).
        func run(_ t: inout WriteTask) -> Bool {
            ops.append(MetadataOp(.task, image: chainIndex, count: UInt32(bitPattern: t.tag)))
            defer { ops.append(MetadataOp(.task, image: chainIndex)) }
            return runTask(&t)
        }
        func resumeOne() -> Bool {
            var t = waiting[head]
            // Moved out, not shared: the task's metas change in place.
            waiting[head].metas = []
            head += 1
            if run(&t) { return true }
            waiting.append(t)
            return false
        }
        while true {
            // `aio_task_pool_wait_slot`: with every worker busy, wait until one task ends.
            while waiting.count - head >= Self.maxWorkers {
                while !resumeOne() {}
            }
            launched += 1
            var t = WriteTask(host: hostStart, guest: g, bytes: n, metas: metas, tag: launched)
            metas = []
            if !run(&t) { waiting.append(t) }
            g += n
            left -= n
            if left == 0 { break }
            (n, hostStart, metas) = allocateHost(g, left)
        }
        // `aio_task_pool_wait_all`.
        if debugReverseTaskResumption {
            // Test only: the last submitted I/O completes first, each task then runs to its end.
            for k in stride(from: waiting.count - 1, through: head, by: -1) {
                var t = waiting[k]
                while !run(&t) {}
            }
            return true
        }
        while head < waiting.count { _ = resumeOne() }
        return true
    }

    /// WRITE for the two cases most writes are, inside one cluster of an image without a backing
    /// file or extended L2 entries whose L2 table is in place (L1 entry with COPIED): a cluster
    /// of its own (a standard entry with COPIED, aligned) is overwritten; an unallocated one
    /// (entry 0) is allocated, its COW regions zeroed or copied, and linked. The same calls, in
    /// the same order, as ALLOC_HOST and the inline task make for them (§7.2–§7.7), without the
    /// general path's loops and meta arrays; anything else returns false before any of them.
    /// `QuickWriteTests` compares the two paths' events, counters and host files.
    @inline(__always)
    func quickWrite<S: OpSink>(_ g: UInt64, _ len: UInt64, into sink: S) -> Bool {
        let cs = geometry.clusterSize
        let oic = geometry.offsetInCluster(g)
        guard backing == nil, !geometry.extendedL2, len > 0, oic &+ len <= cs else { return false }
        // A cluster past the disk's end (the last one of a size that is not a multiple of the
        // cluster size): block status stops at the end, so its COW tail is not a zero-COW.
        guard geometry.clusterStart(g) &+ cs <= geometry.virtualSize else { return false }
        let l1i = geometry.l1Index(g)
        guard l1i < l1.count else { return false }
        let l1e = l1[l1i]
        let table = l1e & EntryBits.offsetMask
        guard l1e & EntryBits.copied != 0, table != 0 else { return false }
        let l2i = geometry.l2Index(g)
        let word = l2Store.entry(table, l2i).word
        let own = word & EntryBits.offsetMask
        if word == own | EntryBits.copied && own != 0 && geometry.offsetInCluster(own) == 0 {
            // KEEP_EXISTING: the slice's GET and PUT; the whole write lies in this cluster, so
            // COW_META skips it (no meta). Then the task: the data write, nothing to link.
            getReleased(Self.l2, sliceOffset(g, table: table), into: sink)
            let h = own &+ oic
            checkDataWrite(h, len)
            host.write(h, len)
            stats.guestBytesWritten += len
            return true
        }
        guard word == 0 else { return false }
        // KEEP_EXISTING finds nothing to keep; ALLOCATE_NEW allocates one cluster.
        getReleased(Self.l2, sliceOffset(g, table: table), into: sink)
        let held = loadSlice(g, table: table, into: sink)
        let a: UInt64
        if let next = allocateNextCluster(into: sink) {
            a = next
        } else {
            a = allocate(bytes: cs)
            sink.catchUp()
        }
        stats.clustersAllocated += 1
        // COW_META of an unallocated standard entry: the head up to the data, the tail to the
        // cluster's end.
        var m = L2Meta(
            guestCluster: geometry.clusterStart(g), hostCluster: a, clusters: 1, keepOld: false,
            cowStartOffset: 0, cowStartBytes: oic, cowEndOffset: oic &+ len, cowEndBytes: cs &- oic &- len)
        put(Self.l2, held, into: sink)
        // TASK: the zero-COW probe and its zero write; the data write (merged into the COW
        // write when the COW is not skipped); LINK.
        if m.hasCow && cowIsZero(m, table: table, into: sink) {
            checkDataWrite(a, cs)
            sink.sync()
            m.skipCow = true
            stats.cowSkipped += 1
            checkDataWrite(a &+ oic, len)
            host.zeroThenWrite(a, cs, data: a &+ oic, len)
        } else {
            checkDataWrite(a &+ oic, len)
            host.write(a &+ oic, len)
        }
        stats.guestBytesWritten += len
        if m.hasCow && !m.skipCow {
            link(&m)
            sink.catchUp()
            return true
        }
        // LINK of one new cluster over an unallocated entry, its COW skipped or empty (a whole
        // cluster written): nothing to copy and no old cluster to free.
        setDependency(Self.l2, on: Self.rc, into: sink)
        // The slice's GET, MARK_DIRTY and PUT; the store's change between the last two touches
        // no cache.
        getReleased(Self.l2, sliceOffset(g, table: table), dirty: true, into: sink)
        l2Store.linkRun(table, first: l2i, count: 1, host: a, wasZero: true)
        return true
    }

    /// `is_zero_cow` for `quickWrite`'s meta over an unallocated entry of `table` without a
    /// backing file: once the preallocation probe is done, each non-empty COW region's block
    /// status is MAP's GET and PUT of the slice, and it reads as zeroes.
    @inline(__always)
    private func cowIsZero<S: OpSink>(_ m: L2Meta, table: UInt64, into sink: S) -> Bool {
        guard probeDone else {
            let zero =
                isZeroFast(m.guestCluster, m.cowStartBytes) && isZeroFast(m.guestCluster &+ m.cowEndOffset, m.cowEndBytes)
            sink.catchUp()
            return zero
        }
        if m.cowStartBytes != 0 && m.cowEndBytes != 0 {
            // Both regions: two GET and PUT pairs of the slice the write holds, resident since
            // its PUT just before, as one operation (`repeatGet`: the same events and counts).
            repeatGet(Self.l2, offset: sliceOffset(m.guestCluster, table: table), count: 2, into: sink)
        } else if m.cowStartBytes != 0 || m.cowEndBytes != 0 {
            getReleased(Self.l2, sliceOffset(m.guestCluster, table: table), into: sink)
        }
        return true
    }

    /// `QCOW2_MAX_WORKERS`: tasks of one pool running at once.
    static var maxWorkers: Int { 8 }

    /// ALLOC_HOST (§7.2, `qcow2_alloc_host_offset`): metas are newest first.
    func allocateHost(_ g: UInt64, _ len: UInt64) -> (bytes: UInt64, host: UInt64, metas: [L2Meta]) {
        var pos = g, left = len, step: UInt64 = 0
        var curHost: UInt64?
        var hostStart: UInt64?
        // The last inline task's array, emptied: no allocation per write.
        var metas = spareMetas
        spareMetas = []
        while true {
            if hostStart == nil, let c = curHost { hostStart = c }
            pos += step
            left -= step
            if let c = curHost { curHost = c + step }
            if left == 0 { break }
            step = left
            let kept = keepExisting(pos, &curHost, &step, &metas)
            if kept { continue }
            if step == 0 { break }
            let allocated = allocateNew(pos, &curHost, &step, &metas)
            if allocated { continue }
            break
        }
        return (len - left, hostStart ?? 0, metas)
    }

    /// Clusters one ALLOC_HOST step may look at: up to the end of the slice.
    private func stepClusters(_ pos: UInt64, _ bytes: UInt64) -> Int {
        let n = Int(geometry.clusters(covering: geometry.offsetInCluster(pos) + bytes))
        return min(n, sliceEntries - (geometry.l2Index(pos) & (sliceEntries - 1)))
    }

    /// KEEP_EXISTING (§7.3, `handle_copied`).
    func keepExisting(_ pos: UInt64, _ host: inout UInt64?, _ bytes: inout UInt64, _ metas: inout [L2Meta]) -> Bool {
        let k = stepClusters(pos, bytes)
        let (slot, table) = tableForWrite(pos)
        let l2i = geometry.l2Index(pos)
        let word = l2Store.entry(table, l2i).word
        var result = false
        if !geometry.needsNewAllocation(word) && geometry.offsetInCluster(word & EntryBits.offsetMask) != 0 {
            // `handle_copied`: QEMU signals corruption and fails the write with EIO.
            fail(
                table + geometry.l2EntrySize * UInt64(l2i),
                "L2 entry \(l2i) of the table at \(qcow2Hex(table)) (\(qcow2Hex(word)))",
                "qcow2: Marking image as corrupt: \(word & EntryBits.zero != 0 ? "Preallocated zero" : "Data") cluster offset \(qemuHex(word & EntryBits.offsetMask)) unaligned (guest offset: \(qemuHex(pos))); further corruption events will be suppressed"
            )
        } else if !geometry.needsNewAllocation(word) {
            let clusterOffset = word & EntryBits.offsetMask
            if let h = host, h != clusterOffset {
                bytes = 0
            } else {
                var keep = 0
                var expected = clusterOffset
                while keep < k {
                    let w = l2Store.entry(table, l2i + keep).word
                    if geometry.needsNewAllocation(w) || w & EntryBits.offsetMask != expected { break }
                    expected += geometry.clusterSize
                    keep += 1
                }
                bytes = min(bytes, UInt64(keep) << UInt64(geometry.clusterBits) - geometry.offsetInCluster(pos))
                cowMeta(clusterOffset, pos, bytes, table: table, keepOld: true, &metas)
                host = clusterOffset + geometry.offsetInCluster(pos)
                result = true
            }
        }
        put(Self.l2, slot)
        return result
    }

    /// ALLOCATE_NEW (§7.4, `handle_alloc`).
    func allocateNew(_ pos: UInt64, _ host: inout UInt64?, _ bytes: inout UInt64, _ metas: inout [L2Meta]) -> Bool {
        var k = stepClusters(pos, bytes)
        let (slot, table) = tableForWrite(pos)
        let l2i = geometry.l2Index(pos)
        var need = 0
        while need < k {
            // Runs of empty entries are counted at once (preallocation walks whole slices).
            need += l2Store.zeroRunLength(table, from: l2i + need, limit: k - need)
            guard need < k, geometry.needsNewAllocation(l2Store.entry(table, l2i + need).word) else { break }
            need += 1
        }
        k = max(need, 1)
        let a: UInt64
        if let h = host {
            a = geometry.clusterStart(h)
            k = Int(allocate(at: a, clusters: UInt64(k)))
        } else {
            a = allocate(bytes: UInt64(k) << UInt64(geometry.clusterBits))
        }
        if k == 0 {
            bytes = 0
            put(Self.l2, slot)
            return false
        }
        stats.clustersAllocated += UInt64(k)
        let oic = geometry.offsetInCluster(pos)
        let nbBytes = min(bytes + oic, UInt64(k) << UInt64(geometry.clusterBits))
        host = a + oic
        bytes = min(bytes, nbBytes - oic)
        cowMeta(a, pos, bytes, table: table, keepOld: false, &metas)
        put(Self.l2, slot)
        return true
    }

    /// COW_META (§7.5, `calculate_l2_meta`).
    func cowMeta(_ hostCluster: UInt64, _ pos: UInt64, _ bytes: UInt64, table: UInt64, keepOld: Bool, _ metas: inout [L2Meta]) {
        let cs = geometry.clusterSize
        let scb = UInt64(geometry.subclusterBits)
        let sc = geometry.subclusterSize
        let l2i = geometry.l2Index(pos)
        let cowStartTo = geometry.offsetInCluster(pos)
        let cowEndFrom = cowStartTo + bytes
        let m = Int(geometry.clusters(covering: cowEndFrom))
        if keepOld {
            var skip = true
            for i in 0..<m {
                let (w, b) = l2Store.entry(table, l2i + i)
                let from = max(cowStartTo, UInt64(i) * cs)
                let to = min(cowEndFrom, UInt64(i + 1) * cs)
                let firstSc = Int((from >> scb) & UInt64(geometry.subclustersPerCluster - 1))
                let lastSc = Int(((to - 1) >> scb) & UInt64(geometry.subclustersPerCluster - 1))
                let (t, cnt) = geometry.subclusterRun(w, b, firstSc)
                if t != .normal || firstSc + cnt <= lastSc {
                    skip = false
                    break
                }
            }
            if skip { return }
        }
        let (w0, b0) = l2Store.entry(table, l2i)
        let sc0 = geometry.subclusterIndex(pos)
        let t0 = geometry.subclusterType(w0, b0, sc0)
        if t0 == .invalid { cowMetaCorruption(table: table, l2i: l2i, bitmap: b0) }
        var cowStartFrom: UInt64
        if !keepOld {
            switch t0 {
            case .compressed: cowStartFrom = 0
            case .normal, .zeroAlloc, .unallocatedAlloc:
                if geometry.extendedL2 {
                    let alloc = UInt32(truncatingIfNeeded: b0 & EntryBits.allocMask)
                    cowStartFrom = UInt64(min(sc0, alloc.trailingZeroBitCount)) << scb
                } else {
                    cowStartFrom = 0
                }
            default: cowStartFrom = UInt64(sc0) << scb
            }
        } else {
            cowStartFrom = t0 == .normal ? cowStartTo : UInt64(sc0) << scb
        }
        let (wl, bl) = l2Store.entry(table, l2i + m - 1)
        let scl = geometry.subclusterIndex(pos + bytes - 1)
        let tl = geometry.subclusterType(wl, bl, scl)
        if tl == .invalid { cowMetaCorruption(table: table, l2i: l2i + m - 1, bitmap: bl) }
        var cowEndTo: UInt64
        if !keepOld {
            switch tl {
            case .compressed: cowEndTo = (cowEndFrom + cs - 1) / cs * cs
            case .normal, .zeroAlloc, .unallocatedAlloc:
                cowEndTo = (cowEndFrom + cs - 1) / cs * cs
                if geometry.extendedL2 {
                    let alloc = UInt32(truncatingIfNeeded: bl & EntryBits.allocMask)
                    cowEndTo -= UInt64(min(geometry.subclustersPerCluster - scl - 1, alloc.leadingZeroBitCount)) << scb
                }
            default: cowEndTo = (cowEndFrom + sc - 1) / sc * sc
            }
        } else {
            cowEndTo = tl == .normal ? cowEndFrom : (cowEndFrom + sc - 1) / sc * sc
        }
        cowStartFrom = min(cowStartFrom, cowStartTo)
        let meta = L2Meta(
            guestCluster: geometry.clusterStart(pos), hostCluster: hostCluster, clusters: m, keepOld: keepOld,
            cowStartOffset: cowStartFrom, cowStartBytes: cowStartTo - cowStartFrom,
            cowEndOffset: cowEndFrom, cowEndBytes: cowEndTo - cowEndFrom)
        // Newest first; most writes make one.
        if metas.isEmpty { metas.append(meta) } else { metas.insert(meta, at: 0) }
    }

    /// `calculate_l2_meta` found a subcluster both allocated and zero: QEMU marks the image
    /// corrupt and fails the write with EIO.
    @inline(never)
    private func cowMetaCorruption(table: UInt64, l2i: Int, bitmap: UInt64) {
        fail(
            table + geometry.l2EntrySize * UInt64(l2i) + 8,
            "L2 entry \(l2i) of the table at \(qcow2Hex(table)): subcluster bitmap \(qcow2Hex(bitmap))",
            "qcow2: Marking image as corrupt: Invalid cluster entry found (L2 offset: \(qemuHex(table)), L2 index: \(qemuHex(l2i & (sliceEntries - 1)))); further corruption events will be suppressed"
        )
    }

    /// One segment's task (`Qcow2AioTask`) and how far it has run.
    struct WriteTask {
        /// Host offset of the segment's first byte.
        var host: UInt64
        /// Guest offset of the segment's first byte.
        var guest: UInt64
        /// Bytes in the segment.
        var bytes: UInt64
        /// Newest first (§7.2).
        var metas: [L2Meta]
        /// Next meta the zero-COW probe looks at; `metas.count` once the data is written.
        var nextProbe = 0
        /// The guest data has been written (or merged into a COW write).
        var dataWritten = false
        /// The coroutine tag of the task's events (`EventLog.task`; 0 runs inline).
        var tag: Int32 = 0
    }

    /// TASK (§7.6, `qcow2_co_pwritev_task`) from where `t` stopped, up to its next I/O
    /// (returns false: the task yields there) or to its end, LINK included (returns true).
    /// The zero-COW probe and the zero write of each meta, then the data write, then LINK.
    func runTask(_ t: inout WriteTask) -> Bool {
        while t.nextProbe < t.metas.count {
            let j = t.nextProbe
            t.nextProbe += 1
            let m = t.metas[j]
            guard m.hasCow else { continue }
            // `is_zero_cow`: the head, and only if it is zero, the tail.
            guard isZeroFast(m.guestCluster + m.cowStartOffset, m.cowStartBytes) else { continue }
            guard isZeroFast(m.guestCluster + m.cowEndOffset, m.cowEndBytes) else { continue }
            let start = m.hostCluster + m.cowStartOffset
            let bytes = m.cowEndOffset + m.cowEndBytes - m.cowStartOffset
            checkDataWrite(start, bytes)
            syncHost()
            host.zeroRange(start, bytes)
            t.metas[j].skipCow = true
            stats.cowSkipped += 1
            // `bdrv_co_pwrite_zeroes` on the file: the task waits for it.
            return false
        }
        if !t.dataWritten {
            t.dataWritten = true
            checkDataWrite(t.host, t.bytes)
            host.write(t.host, t.bytes)
            stats.guestBytesWritten += t.bytes
            // Unless `merge_cow` folds the data into a COW write, it is written now and the
            // task waits for it.
            if !mergesWithCow(t) { return false }
        }
        for j in t.metas.indices { link(&t.metas[j]) }
        return true
    }

    /// `merge_cow`: some meta still to copy has its COW head ending where the data starts and
    /// its tail starting where the data ends.
    func mergesWithCow(_ t: WriteTask) -> Bool {
        t.metas.contains { m in
            m.hasCow && !m.skipCow && m.guestCluster + m.cowStartOffset + m.cowStartBytes == t.guest
                && m.guestCluster + m.cowEndOffset == t.guest + t.bytes
        }
    }

    /// COPY_ON_WRITE (§7.6 step 4, `perform_cow`): reads through this image's own read path.
    func copyOnWrite(_ m: L2Meta) {
        if !m.hasCow || m.skipCow { return }
        let dataBytes = m.cowEndOffset - (m.cowStartOffset + m.cowStartBytes)
        if m.cowStartBytes != 0 && m.cowEndBytes != 0 && dataBytes <= 16384 {
            let len = m.cowEndOffset + m.cowEndBytes - m.cowStartOffset
            read(m.guestCluster + m.cowStartOffset, len, cow: true)
            stats.cowBytesRead += len
        } else {
            if m.cowStartBytes != 0 {
                read(m.guestCluster + m.cowStartOffset, m.cowStartBytes, cow: true)
                stats.cowBytesRead += m.cowStartBytes
            }
            if m.cowEndBytes != 0 {
                read(m.guestCluster + m.cowEndOffset, m.cowEndBytes, cow: true)
                stats.cowBytesRead += m.cowEndBytes
            }
        }
        if m.cowStartBytes != 0 { checkDataWrite(m.hostCluster + m.cowStartOffset, m.cowStartBytes) }
        if m.cowEndBytes != 0 { checkDataWrite(m.hostCluster + m.cowEndOffset, m.cowEndBytes) }
        host.write(m.hostCluster + m.cowStartOffset, m.cowStartBytes)
        host.write(m.hostCluster + m.cowEndOffset, m.cowEndBytes)
        stats.cowBytesWritten += m.cowStartBytes + m.cowEndBytes
        dependsOnFlush(Self.l2)
    }

    /// LINK (§7.7, `qcow2_alloc_cluster_link_l2`).
    func link(_ m: inout L2Meta) {
        copyOnWrite(m)
        setDependency(Self.l2, on: Self.rc)
        let (slot, table) = tableForWrite(m.guestCluster)
        markDirty(Self.l2, slot)
        let l2i = geometry.l2Index(m.guestCluster)
        var old: [UInt64] = []
        let cs = geometry.clusterSize
        let scb = UInt64(geometry.subclusterBits)
        let spcMask = UInt64(geometry.subclustersPerCluster - 1)
        if !geometry.extendedL2 || m.prealloc {
            var i = 0
            while i < m.clusters {
                i += l2Store.zeroRunLength(table, from: l2i + i, limit: m.clusters - i)
                guard i < m.clusters else { break }
                let w = l2Store.entry(table, l2i + i).word
                if w != 0 { old.append(w) }
                i += 1
            }
            if geometry.extendedL2 {
                for i in 0..<m.clusters {
                    let b = l2Store.entry(table, l2i + i).bitmap
                    l2Store.set(table, l2i + i, word: (m.hostCluster + UInt64(i) * cs) | EntryBits.copied, bitmap: b)
                }
            } else {
                l2Store.linkRun(table, first: l2i, count: m.clusters, host: m.hostCluster)
            }
        } else {
            let writtenFrom = m.cowStartOffset
            let writtenTo = m.cowEndOffset + m.cowEndBytes
            for i in 0..<m.clusters {
                let (w, b) = l2Store.entry(table, l2i + i)
                if w != 0 { old.append(w) }
                let from = max(writtenFrom, UInt64(i) * cs)
                let to = min(writtenTo, UInt64(i + 1) * cs)
                let firstSc = (from >> scb) & spcMask
                let lastSc = ((to - 1) >> scb) & spcMask
                let range = ((UInt64(1) << (lastSc + 1)) &- 1) & ~((UInt64(1) << firstSc) &- 1)
                let bitmap = (b | range) & ~(range << 32)
                l2Store.set(table, l2i + i, word: (m.hostCluster + UInt64(i) * cs) | EntryBits.copied, bitmap: bitmap)
            }
        }
        put(Self.l2, slot)
        if !m.keepOld {
            for w in old { freeEntry(w, type: .never) }
        }
    }
}

extension Qcow2Image {
    /// QEMU's overlap check before a guest-data write (`qcow2_pre_write_overlap_check`, default
    /// "cached" mode) for the structures whose place is fixed: the header, the L1 table and the
    /// refcount table. Only a damaged image (an L2 entry naming one of them, or a refcount of 0
    /// for one of their clusters) gets here; QEMU then marks the image corrupt and fails the write.
    @inline(__always)
    func checkDataWrite(_ offset: UInt64, _ bytes: UInt64) {
        // Most writes: at or past the end of all three (a data cluster after the metadata), which
        // needs no overlap test. Subtractions only, so a damaged offset cannot wrap.
        if offset >= geometry.clusterSize && offset >= l1Offset && offset &- l1Offset >= 8 &* UInt64(l1.count)
            && offset >= reftableOffset && offset &- reftableOffset >= 8 &* UInt64(reftable.count)
        {
            return
        }
        // In 128 bits: a damaged entry may name an offset near 2^64.
        @inline(__always) func overlaps(_ start: UInt64, _ length: UInt64) -> Bool {
            length > 0 && UInt128(offset) < UInt128(start) + UInt128(length) && UInt128(start) < UInt128(offset) + UInt128(bytes)
        }
        if !overlaps(0, geometry.clusterSize) && !overlaps(l1Offset, 8 &* UInt64(l1.count))
            && !overlaps(reftableOffset, 8 &* UInt64(reftable.count))
        {
            return
        }
        dataWriteOverlap(offset, bytes)
    }

    /// `checkDataWrite`'s failure (out of line: only damaged images get here).
    @inline(never)
    private func dataWriteOverlap(_ offset: UInt64, _ bytes: UInt64) {
        let end = offset + bytes
        func overlaps(_ start: UInt64, _ length: UInt64) -> Bool { length > 0 && offset < start + length && start < end }
        let what: String
        if overlaps(0, geometry.clusterSize) {
            what = "qcow2_header"
        } else if overlaps(l1Offset, 8 * UInt64(l1.count)) {
            what = "active L1 table"
        } else {
            what = "refcount table"
        }
        fail(
            offset, "guest data write of \(bytes) bytes at host offset \(qcow2Hex(offset))",
            "qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with \(what)); further corruption events will be suppressed"
        )
    }
}

import TraceKit

/// One qcow2 image of a backing chain: its metadata (L1 table, L2 tables, refcount table and
/// blocks), its two metadata caches, its host file, and QEMU 7.2's operations on them, each a
/// plain synchronous function that emits cache events in QEMU's order (qcow2-model.md §3–§11).
///
/// The image decides *which* metadata is touched and in what order; `MetadataCache` and its
/// `Policy` decide *whether* it is resident. Section numbers in comments refer to
/// qcow2-model.md; QEMU function names to block/qcow2*.c of QEMU 7.2.
public final class Qcow2Image<Policy: EvictionPolicy> {
    /// Index of the refcount cache in `caches` (QEMU's `is_l2_cache 0`).
    @usableFromInline static var rc: Int { 0 }
    /// Index of the L2 cache in `caches` (`is_l2_cache 1`).
    @usableFromInline static var l2: Int { 1 }

    /// The image's geometry.
    public let geometry: Geometry
    /// The qcow2 version (2 = `compat=0.10`, 3); v2 has no zero flag (§9, DiscardZero.swift).
    var version = 3
    /// `discard-no-unref=on` for the trace session (QEMU 8.1+): guest discards and write-zeroes
    /// keep the clusters allocated (DiscardZero.swift).
    var discardNoUnref = false
    /// Position in the chain (0 = base).
    public let chainIndex: Int
    /// The backing image, if any.
    public let backing: Qcow2Image<Policy>?

    /// The two caches, indexed by `is_l2_cache` (0 refcount, 1 L2).
    public let caches = CachePair<Policy>(
        rc: MetadataCache(isL2: false, count: 0, tableSize: 512), l2: MetadataCache(isL2: true, count: 0, tableSize: 512))
    /// The effective cache sizing of the current session.
    public internal(set) var sizing: CacheSizing?
    /// Per-image counters of the current session.
    public internal(set) var stats = ImageStats()
    /// Where events go (nil: not recorded).
    var log: EventLog?
    /// Where resident-memory changes go (nil: not recorded).
    var timeline: MemoryTimeline?
    /// The trace session, whose cache traffic is measured. Creation, populate and preparation
    /// sessions are not: their refcount searches read the store directly (same result, same
    /// final image, no per-cluster cache GETs).
    var observed = true
    /// Entries per L2 slice in the current session (L2 cache entry size / L2 entry size),
    /// set at open: MAP and ALLOC_HOST need it on every request.
    private(set) var sliceEntries = 1
    /// Opened read-only (backing images).
    public internal(set) var readOnly = false
    /// Writethrough: flush both caches after every write request.
    var writethrough = false
    /// Discards reach the host file for REQUEST-type frees (qemu-io's "unmap" open flag).
    var discardPassthroughRequest = true

    // Authoritative metadata (§1).
    var l1: ContiguousArray<UInt64>
    var l1Offset: UInt64
    var reftable: ContiguousArray<UInt64>
    var reftableOffset: UInt64
    var l2Store: L2Store
    var rcStore: RefcountStore
    let host: HostFile

    // Session state (reset at every open).
    var freeClusterIndex: UInt64 = 0
    var probeDone = false
    /// Raised when QEMU would run part of the current request through a task pool (§6.4,
    /// §13): its cross-image event order is then not deterministic. Shared by the chain.
    var requestState = RequestState()
    /// The probe found metadata preallocation (`s->metadata_preallocation`): block status of
    /// data clusters then recurses into the host file's data/hole map.
    var metadataPreallocation = false
    var cacheDiscards = false
    var pendingDiscards: [(offset: UInt64, bytes: UInt64)] = []
    /// Trace time of the next cache-clean tick (nil: the timer is off).
    var nextCleanTick: Double?
    var lastMemoryTime: Double = 0

    /// The file this image was loaded from (nil: built by the simulator), for messages.
    let filePath: String?
    /// A version-2 image: zero clusters are corruption there (QEMU's "pre-v3" check).
    var isVersion2: Bool { version < 3 }
    /// The first point where QEMU would fail the current request or mark the image corrupt
    /// (see `fail`); the replay stops with it after the request (exit 65).
    var failure: Qcow2FileError?
    /// Whether refcounts matched references when the image was loaded (checked in debug builds
    /// only); the end-of-run invariant check compares refcounts only then.
    var refcountsTrusted = true

    /// Test-only: on the lookup with this sequence number (counting every GET of this image),
    /// a miss picks the next slot instead of QEMU's victim. Used to prove validation catches a
    /// single wrong eviction.
    public var debugMisEvictAtLookup: Int?
    /// Test-only: multi-segment write tasks resume last submitted first (`write`, §13).
    var debugReverseTaskResumption = false
    private var lookupSequence = 0

    /// An image in the state `qemu-img create` leaves before allocating anything: header,
    /// refcount table and refcount block 0 written, no refcounts yet (§12 step 1). Call
    /// `create()` to finish creation.
    init(geometry: Geometry, chainIndex: Int, backing: Qcow2Image<Policy>?) {
        self.geometry = geometry
        self.chainIndex = chainIndex
        self.backing = backing
        let cs = geometry.clusterSize
        l1 = ContiguousArray(repeating: 0, count: geometry.l1Size)
        l1Offset = 0
        reftable = ContiguousArray(repeating: 0, count: Int(cs / 8))
        reftable[0] = 2 * cs
        reftableOffset = cs
        l2Store = L2Store(geometry: geometry)
        rcStore = RefcountStore(geometry: geometry)
        rcStore.zero(2 * cs)
        host = HostFile(length: 0)
        host.write(0, 3 * cs)
        filePath = nil
    }

    /// An image whose metadata is loaded from a real file, lazily.
    ///
    /// - Throws: `Qcow2FileError` (exit 65) for an L1 or refcount-table entry that points outside
    ///   the file, at an unaligned offset, or at a cluster another metadata structure occupies.
    init(file: Qcow2File, chainIndex: Int, backing: Qcow2Image<Policy>?) throws {
        let h = file.header
        geometry = h.geometry
        version = h.version
        self.chainIndex = chainIndex
        self.backing = backing
        filePath = file.path
        l1 = ContiguousArray(try file.l1Table())
        reftable = ContiguousArray(try file.refcountTable())
        // Tables are read lazily; check now that every one lies inside the file, so a damaged
        // image is refused at open with the table's location rather than read as zeroes later.
        try Self.checkTables(file: file, l1: l1, reftable: reftable)
        l1Offset = h.l1TableOffset
        reftableOffset = h.refcountTableOffset
        l2Store = L2Store(geometry: h.geometry)
        rcStore = RefcountStore(geometry: h.geometry)
        host = HostFile(length: file.fileLength)
        let extended = h.geometry.extendedL2
        // The loaders run inside cache operations, which cannot throw: a read error is recorded
        // as the image's failure (the replay stops after the request) and the table reads as
        // zeroes until then.
        l2Store.loader = { [unowned self] offset in
            let t: (entries: [UInt64], bitmaps: [UInt64]?)
            do {
                t = try file.l2Table(at: offset)
            } catch let e as Qcow2FileError {
                if failure == nil { failure = e }
                return nil
            } catch {
                return nil
            }
            var words = ContiguousArray<UInt64>()
            words.reserveCapacity(t.entries.count * (extended ? 2 : 1))
            for (i, e) in t.entries.enumerated() {
                words.append(e)
                if extended { words.append(t.bitmaps?[i] ?? 0) }
            }
            return words
        }
        rcStore.loader = { [unowned self] offset in
            do {
                return ContiguousArray(try file.refcountBlock(at: offset))
            } catch let e as Qcow2FileError {
                if failure == nil { failure = e }
                return nil
            } catch {
                return nil
            }
        }
        for r in try file.allocatedRanges() { host.markAllocated(r) }
        for r in try file.dataRanges() { host.markData(r) }
        #if DEBUG
            // A damaged image may start with wrong refcounts; the invariant check at the end of a
            // run can then only judge the caches.
            refcountsTrusted = refcountProblems(limit: 1).isEmpty
        #endif
    }

    /// Throws for an L1 or refcount-table entry whose table is not a whole, aligned cluster inside
    /// the file, or lies in a cluster the header, the L1 table, the refcount table or another kind
    /// of table occupies. QEMU reads such tables, but marks the image corrupt on the first write
    /// to one of them (`qcow2_pre_write_overlap_check`: "Preventing invalid write on metadata
    /// (overlaps with …)"); the simulator keeps each kind of table in its own store and could not
    /// follow a cluster that is two tables at once.
    private static func checkTables(file: Qcow2File, l1: ContiguousArray<UInt64>, reftable: ContiguousArray<UInt64>) throws {
        let h = file.header
        let g = h.geometry
        let cs = g.clusterSize
        let length = file.fileLength
        // Fixed structures as cluster ranges (the header is cluster 0).
        let l1Clusters =
            g.hostCluster(h.l1TableOffset)..<(g.hostCluster(h.l1TableOffset) + g.clusters(covering: UInt64(h.l1Size) * 8))
        let rtClusters =
            g.hostCluster(h.refcountTableOffset)..<(g.hostCluster(h.refcountTableOffset) + UInt64(h.refcountTableClusters))
        var refblocks = Set<UInt64>()
        func check(_ e: UInt64, mask: UInt64, index i: Int, tableAt: UInt64, entry: String, table: String) throws -> UInt64? {
            let t = e & mask
            guard t != 0 else { return nil }
            let at = tableAt + 8 * UInt64(i)
            if t % cs != 0 || t > length || cs > length - t {
                throw Qcow2FileError(
                    file: file.path, byteOffset: at,
                    message:
                        "\(entry) \(i) points to \(table) at \(qcow2Hex(t)) that is not a whole cluster inside the file (length \(qcow2Hex(length)))"
                )
            }
            let k = g.hostCluster(t)
            let clash: String? =
                k == 0
                ? "the header" : l1Clusters.contains(k) ? "the L1 table" : rtClusters.contains(k) ? "the refcount table" : nil
            if let clash {
                throw Qcow2FileError(
                    file: file.path, byteOffset: at,
                    message:
                        "\(entry) \(i) points to \(table) at \(qcow2Hex(t)), inside \(clash); QEMU marks the image corrupt on the first write there (\"Preventing invalid write on metadata\")"
                )
            }
            return k
        }
        for (i, e) in reftable.enumerated() {
            if let k = try check(
                e, mask: EntryBits.reftableOffsetMask, index: i, tableAt: h.refcountTableOffset, entry: "refcount table entry",
                table: "a refcount block")
            {
                refblocks.insert(k)
            }
        }
        for (i, e) in l1.enumerated() {
            if let k = try check(
                e, mask: EntryBits.offsetMask, index: i, tableAt: h.l1TableOffset, entry: "L1 entry", table: "an L2 table"),
                refblocks.contains(k)
            {
                throw Qcow2FileError(
                    file: file.path, byteOffset: h.l1TableOffset + 8 * UInt64(i),
                    message:
                        "L1 entry \(i) points to an L2 table at \(qcow2Hex(k << UInt64(g.clusterBits))), which is also a refcount block; QEMU marks the image corrupt on the first write there (\"Preventing invalid write on metadata\")"
                )
            }
        }
    }

    /// Records the first place where QEMU would fail the current request (`-EIO`, `-EFBIG`,
    /// `-EINVAL`) or mark the image corrupt (`qcow2_signal_corruption`): `field` names the
    /// metadata, `byteOffset` its place in the file, `qemu` what QEMU reports. The caller goes on
    /// with a safe value; the replay stops after the request with this error (exit 65).
    func fail(_ byteOffset: UInt64?, _ field: String, _ qemu: String) {
        guard failure == nil else { return }
        failure = Qcow2FileError(
            file: filePath ?? "image \(chainIndex)", byteOffset: byteOffset, message: "\(field): QEMU 7.2: \(qemu)")
    }

    // MARK: - Sessions (§2, §10)

    /// Opens a session: new empty caches sized by `sizing`, `fci` 0, the probe not yet run,
    /// counters zeroed, the clean timer armed at `time + interval`.
    func open(sizing: CacheSizing, readOnly: Bool, writethrough: Bool, log: EventLog?, time: Double = 0, observed: Bool = true) {
        self.observed = observed
        self.sizing = sizing
        self.readOnly = readOnly
        self.writethrough = writethrough
        self.log = log
        caches.rc.reset(count: sizing.refcountEntries, tableSize: sizing.refcountEntrySize)
        caches.l2.reset(count: sizing.l2Entries, tableSize: sizing.l2EntrySize)
        sliceEntries = Int(sizing.l2EntrySize / geometry.l2EntrySize)
        freeClusterIndex = 0
        probeDone = false
        metadataPreallocation = false
        cacheDiscards = false
        pendingDiscards = []
        stats = ImageStats()
        lookupSequence = 0
        nextCleanTick = sizing.cleanInterval > 0 ? time + Double(sizing.cleanInterval) : nil
        lastMemoryTime = time
    }

    /// Closes the session (§10): a writable image writes both caches (block-layer flush) and
    /// then flushes both (inactivation); a read-only image only flushes both.
    func close() {
        if !readOnly {
            writeCache(Self.l2)
            writeCache(Self.rc)
        }
        writeCache(Self.l2)
        writeCache(Self.rc)
    }

    /// Advances trace time to `t`: runs every cache-clean tick due by then (§3.7) and integrates
    /// resident memory over time.
    ///
    /// Between two requests only the ticks change the caches, and a tick that changes nothing
    /// (nothing to clean and the mark already at the clock) leaves the state as it found it, so
    /// every later tick before `t` would change nothing either. Such ticks are counted, not run:
    /// at most three ticks are evaluated per request gap whatever its length. Tick times are
    /// `open time + k × interval`, exact integers below `TraceRecord.maxTime` + 2^32, so the
    /// jumped-to tick is the one repeated addition would reach.
    func advanceTime(to t: Double) {
        while let tick = nextCleanTick, tick <= t, let s = sizing {
            let interval = Double(s.cleanInterval)
            accumulateMemory(until: tick)
            let changedL2 = caches[Self.l2].clean()
            let changedRC = caches[Self.rc].clean()
            stats.cleanTicks += 1
            stats.cleanTicksEvaluated += 1
            timeline?.sample(time: tick, image: self)
            if changedL2 || changedRC {
                nextCleanTick = tick + interval
                continue
            }
            // Idle ticks: skip to the first tick after `t`.
            var skipped = ((t - tick) / interval).rounded(.down)
            var next = tick + (skipped + 1) * interval
            while next <= t {
                next += interval
                skipped += 1
            }
            while skipped > 0 && next - interval > t {
                next -= interval
                skipped -= 1
            }
            stats.cleanTicks += UInt64(skipped)
            nextCleanTick = next
        }
        accumulateMemory(until: t)
    }

    /// Integrates resident memory up to trace time `t` (no clean ticks).
    func accumulateMemory(until t: Double) {
        let dt = t - lastMemoryTime
        if dt > 0 {
            caches[0].accumulateMemory(seconds: dt)
            caches[1].accumulateMemory(seconds: dt)
            lastMemoryTime = t
        }
    }

    // MARK: - Cache operations (§3)

    @inline(__always)
    func emit(_ kind: CacheEvent.Kind, _ c: Int, offset: UInt64 = 0, readFromDisk: Bool = true, index: Int = 0) {
        guard let log else { return }
        log.append(
            CacheEvent(
                kind: kind, image: chainIndex, isL2: c == Self.l2, offset: offset, readFromDisk: readFromDisk, index: index))
    }

    /// GET (§3.2): a hit pins the entry; a miss writes the victim back and fills it.
    @inline(__always)
    func get(_ c: Int, _ offset: UInt64, readFromDisk: Bool = true) -> Int {
        // Offset 0 marks an empty slot; callers check table offsets that come from a file.
        precondition(offset != 0, "qcow2 cache: GET of offset 0")
        emit(.get, c, offset: offset, readFromDisk: readFromDisk)
        lookupSequence += 1
        if let i = caches[c].find(offset) {
            caches[c].hit(i)
            emit(.getDone, c, index: i)
            return i
        }
        var v = caches[c].victim(for: offset)
        if lookupSequence == debugMisEvictAtLookup {
            // Test-only: pick another unpinned slot than QEMU would.
            var w = (v + 1) % caches[c].count
            while caches[c].pinCount(at: w) != 0 && w != v { w = (w + 1) % caches[c].count }
            v = w
        }
        emit(.replaceEntry, c, index: v)
        if caches[c].needsWriteback(v) { caches[c].stats.dirtyEvictions += 1 }
        writeback(c, v)
        emit(.getRead, c, index: v)
        caches[c].fill(v, offset: offset, readFromDisk: readFromDisk)
        emit(.getDone, c, index: v)
        return v
    }

    /// `count` more GET/PUT pairs of the table at `offset`, resident in slot `i`: hits, with
    /// their events.
    func repeatGet(_ c: Int, _ i: Int, offset: UInt64, count: Int) {
        guard count > 0 else { return }
        if log != nil {
            for _ in 0..<count {
                emit(.get, c, offset: offset)
                emit(.getDone, c, index: i)
            }
        }
        lookupSequence += count
        caches[c].repeatHits(i, count: count)
    }

    /// PUT (§3.3).
    @inline(__always) func put(_ c: Int, _ i: Int) { caches[c].put(i) }

    /// MARK_DIRTY (§3.3).
    @inline(__always) func markDirty(_ c: Int, _ i: Int) { caches[c].markDirty(i) }

    /// WB (§3.4): writes one dirty entry back, flushing the cache it depends on first.
    func writeback(_ c: Int, _ i: Int) {
        guard caches[c].needsWriteback(i) else { return }
        emit(.entryFlush, c, index: i)
        if caches[c].dependsOnOther {
            writeCache(1 - c)
            caches[c].dependsOnOther = false
            caches[c].dependsOnFlush = false
        } else if caches[c].dependsOnFlush {
            caches[c].dependsOnFlush = false
        }
        host.write(caches[c].offset(at: i), caches[c].tableSize)
        caches[c].markClean(i)
    }

    /// WRITE / FLUSH (§3.5): one `qcow2_cache_flush` line, then every dirty entry in index order.
    /// (FLUSH adds a host flush, which prints nothing.)
    func writeCache(_ c: Int) {
        emit(.flush, c)
        caches[c].stats.flushes += 1
        // QEMU scans every slot in index order; only dirty ones write, so jump between them.
        // A write-back (and the dependency flush it may start) only clears dirty bits, so a
        // slot skipped here stays clean until the full scan would have passed it.
        var i = 0
        while let j = caches[c].nextDirty(from: i) {
            writeback(c, j)
            i = j + 1
        }
    }

    /// SET_DEP(c, d) (§3.6): entries of `c` may only be written after `d` is flushed.
    func setDependency(_ c: Int, on d: Int) {
        if caches[d].dependsOnOther {
            writeCache(c)
            caches[d].dependsOnOther = false
            caches[d].dependsOnFlush = false
        }
        caches[c].dependsOnOther = true
    }

    /// DISCARD_ENTRY of the entry holding `offset`, if cached (§3.8).
    func discardEntry(_ c: Int, at offset: UInt64) -> Bool {
        guard let i = caches[c].find(offset) else { return false }
        return discardSlot(c, i)
    }

    /// DISCARD_ENTRY of slot `i`. A pinned slot only happens when a damaged image frees a
    /// cluster that is also a table in use; QEMU's cache asserts there, the simulator records the
    /// failure and leaves the slot alone.
    func discardSlot(_ c: Int, _ i: Int) -> Bool {
        if caches[c].pinCount(at: i) != 0 {
            fail(
                nil,
                "host cluster \(qcow2Hex(caches[c].offset(at: i))) is freed while the \(c == Self.l2 ? "L2 table" : "refcount block") it holds is in use",
                "qcow2_cache_discard: Assertion `c->entries[i].ref == 0' failed (the process aborts)")
            return false
        }
        caches[c].discard(i)
        return true
    }
}

/// An image's two caches, subscripted by `is_l2_cache`.
public struct CachePair<Policy: EvictionPolicy> {
    /// The refcount-block cache (`is_l2_cache 0`).
    public let rc: MetadataCache<Policy>
    /// The L2-table cache (`is_l2_cache 1`).
    public let l2: MetadataCache<Policy>

    /// The cache with `is_l2_cache == c`.
    @inline(__always) public subscript(c: Int) -> MetadataCache<Policy> { c == 1 ? l2 : rc }
}

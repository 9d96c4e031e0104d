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
    }

    /// An image whose metadata is loaded from a real file, lazily.
    init(file: Qcow2File, chainIndex: Int, backing: Qcow2Image<Policy>?) throws {
        let h = file.header
        geometry = h.geometry
        version = h.version
        self.chainIndex = chainIndex
        self.backing = backing
        l1 = ContiguousArray(try file.l1Table())
        reftable = ContiguousArray(try file.refcountTable())
        // Tables are read lazily; check now that every one lies inside the file, so a damaged
        // image is refused at open with the table's location rather than read as zeroes later.
        try Self.checkTables(l1, mask: EntryBits.offsetMask, at: h.l1TableOffset, what: ("L1 entry", "an L2 table"), file: file)
        try Self.checkTables(
            reftable, mask: EntryBits.reftableOffsetMask, at: h.refcountTableOffset,
            what: ("refcount table entry", "a refcount block"), file: file)
        l1Offset = h.l1TableOffset
        reftableOffset = h.refcountTableOffset
        l2Store = L2Store(geometry: h.geometry)
        rcStore = RefcountStore(geometry: h.geometry)
        let extended = h.geometry.extendedL2
        l2Store.loader = { offset in
            guard let t = try? file.l2Table(at: offset) else { return nil }
            var words = ContiguousArray<UInt64>()
            words.reserveCapacity(t.entries.count * (extended ? 2 : 1))
            for (i, e) in t.entries.enumerated() {
                words.append(e)
                if extended { words.append(t.bitmaps?[i] ?? 0) }
            }
            return words
        }
        rcStore.loader = { offset in
            guard let b = try? file.refcountBlock(at: offset) else { return nil }
            return ContiguousArray(b)
        }
        host = HostFile(length: file.fileLength)
        for r in try file.allocatedRanges() { host.markAllocated(r) }
        for r in try file.dataRanges() { host.markData(r) }
    }

    /// Throws for a table entry pointing at a table that is not a whole cluster inside the file.
    private static func checkTables(
        _ entries: ContiguousArray<UInt64>, mask: UInt64, at tableOffset: UInt64, what: (entry: String, table: String),
        file: Qcow2File
    ) throws {
        let cs = file.header.geometry.clusterSize
        for (i, e) in entries.enumerated() where e & mask != 0 {
            let t = e & mask
            if t % cs != 0 || t + cs > file.fileLength {
                throw Qcow2FileError(
                    file: file.path, byteOffset: tableOffset + 8 * UInt64(i),
                    message:
                        "\(what.entry) \(i) points to \(what.table) at 0x\(String(t, radix: 16)) that is not a whole cluster inside the file (length 0x\(String(file.fileLength, radix: 16)))"
                )
            }
        }
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

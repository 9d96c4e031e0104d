import TraceKit

/// One qcow2 image of a backing chain: its metadata (L1 table, L2 tables, refcount table and
/// blocks), its host file, and QEMU 7.2's operations on them, each a plain synchronous function
/// that emits metadata operations (`MetadataOp`) in QEMU's order (qcow2-model.md §3–§11).
///
/// The image decides *which* metadata is touched and in what order; it knows no cache. The cache
/// layer (`CacheSystem`) consumes the operations and decides *whether* a table is resident.
/// Section numbers in comments refer to qcow2-model.md; QEMU function names to block/qcow2*.c of
/// QEMU 7.2.
///
/// A GET returns the table offset as the handle its PUT and MARK_DIRTY name.
public final class Qcow2Image {
    /// The refcount-block cache (QEMU's `is_l2_cache 0`).
    static var rc: CacheKind { .refcount }
    /// The L2-table cache (`is_l2_cache 1`).
    static var l2: CacheKind { .l2 }

    /// The image's geometry.
    public let geometry: Geometry
    /// The qcow2 version (2 = `compat=0.10`, 3); v2 has no zero flag (§9, DiscardZero.swift).
    @exclusivity(unchecked) var version = 3
    /// `discard-no-unref=on` for the trace session (QEMU 8.1+): guest discards and write-zeroes
    /// keep the clusters allocated (DiscardZero.swift).
    @exclusivity(unchecked) var discardNoUnref = false
    /// Position in the chain (0 = base).
    public let chainIndex: Int
    /// The backing image, if any.
    public let backing: Qcow2Image?

    /// Where this image's metadata operations go: one buffer for the whole chain (the base's),
    /// so the images' operations interleave in QEMU's order.
    let ops: OpBuffer
    /// The L2 cache entry size of the current session (a slice, or the whole table).
    @exclusivity(unchecked) public internal(set) var l2EntrySize: UInt64 = 0
    /// Per-image counters of the current session.
    @exclusivity(unchecked) public internal(set) var stats = ImageStats()
    /// The trace session, whose cache traffic is measured. Creation, populate and preparation
    /// sessions are not: their refcount searches read the store directly (same result, same
    /// final image, no per-cluster cache GETs).
    @exclusivity(unchecked) var observed = true
    /// Entries per L2 slice in the current session (L2 cache entry size / L2 entry size),
    /// set at open: MAP and ALLOC_HOST need it on every request.
    @exclusivity(unchecked) private(set) var sliceEntries = 1
    /// Opened read-only (backing images).
    @exclusivity(unchecked) public internal(set) var readOnly = false
    /// Writethrough: flush both caches after every write request.
    @exclusivity(unchecked) var writethrough = false
    /// Discards reach the host file for REQUEST-type frees (qemu-io's "unmap" open flag).
    @exclusivity(unchecked) var discardPassthroughRequest = true

    // Authoritative metadata (§1).
    @exclusivity(unchecked) var l1: ContiguousArray<UInt64>
    @exclusivity(unchecked) var l1Offset: UInt64
    @exclusivity(unchecked) var reftable: ContiguousArray<UInt64>
    @exclusivity(unchecked) var reftableOffset: UInt64
    @exclusivity(unchecked) var l2Store: L2Store
    @exclusivity(unchecked) var rcStore: RefcountStore
    let host: HostFile

    // Session state (reset at every open).
    @exclusivity(unchecked) var freeClusterIndex: UInt64 = 0
    @exclusivity(unchecked) var probeDone = false
    /// Raised when QEMU would run part of the current request through a task pool (§6.4,
    /// §13): its cross-image event order is then not deterministic. Shared by the chain.
    @exclusivity(unchecked) var requestState = RequestState()
    /// The probe found metadata preallocation (`s->metadata_preallocation`): block status of
    /// data clusters then recurses into the host file's data/hole map.
    @exclusivity(unchecked) var metadataPreallocation = false
    @exclusivity(unchecked) var cacheDiscards = false
    @exclusivity(unchecked) var pendingDiscards: [(offset: UInt64, bytes: UInt64)] = []

    /// The file this image was loaded from (nil: built by the simulator), for messages.
    let filePath: String?
    /// A version-2 image: zero clusters are corruption there (QEMU's "pre-v3" check).
    var isVersion2: Bool { version < 3 }
    /// The first point where QEMU would fail the current request or mark the image corrupt
    /// (see `fail`); the replay stops with it after the request (exit 65).
    @exclusivity(unchecked) var failure: Qcow2FileError?
    /// Whether refcounts matched references when the image was loaded (checked in debug builds
    /// only); the end-of-run invariant check compares refcounts only then.
    @exclusivity(unchecked) var refcountsTrusted = true

    /// Test-only: multi-segment write tasks resume last submitted first (`write`, §13).
    @exclusivity(unchecked) var debugReverseTaskResumption = false
    /// Test-only: every write takes the general path (`quickWrite` never runs).
    @exclusivity(unchecked) var debugGeneralWrites = false
    /// An empty array with capacity that `allocateHost` starts from (`write`'s inline task
    /// hands its array back).
    @exclusivity(unchecked) var spareMetas: [L2Meta] = []

    /// An image in the state `qemu-img create` leaves before allocating anything: header,
    /// refcount table and refcount block 0 written, no refcounts yet (§12 step 1). Call
    /// `create()` to finish creation.
    init(geometry: Geometry, chainIndex: Int, backing: Qcow2Image?) {
        self.geometry = geometry
        self.chainIndex = chainIndex
        self.backing = backing
        ops = backing?.ops ?? OpBuffer()
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
    init(file: Qcow2File, chainIndex: Int, backing: Qcow2Image?) throws {
        let h = file.header
        geometry = h.geometry
        version = h.version
        self.chainIndex = chainIndex
        self.backing = backing
        ops = backing?.ops ?? OpBuffer()
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

    /// Opens a session: the cache layer opens new empty caches (`.open`), `fci` 0, the probe not
    /// yet run, counters zeroed. `l2EntrySize` is the session's L2 cache entry size.
    func open(l2EntrySize: UInt64, readOnly: Bool, writethrough: Bool, time: Double = 0, observed: Bool = true) {
        self.observed = observed
        self.l2EntrySize = l2EntrySize
        self.readOnly = readOnly
        self.writethrough = writethrough
        sliceEntries = Int(l2EntrySize / geometry.l2EntrySize)
        freeClusterIndex = 0
        probeDone = false
        metadataPreallocation = false
        cacheDiscards = false
        pendingDiscards = []
        stats = ImageStats()
        ops.append(MetadataOp(.open, image: chainIndex, flag: readOnly ? 1 : 0, extra: time.bitPattern))
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
        ops.sync()
    }

    // MARK: - Metadata operations (§3), for the cache layer

    /// GET (§3.2) of the table at `offset` (`readFromDisk` false: "get empty" of a new table).
    /// Returns the handle PUT and MARK_DIRTY take: the offset itself.
    @inline(__always)
    func get(_ c: CacheKind, _ offset: UInt64, readFromDisk: Bool = true) -> UInt64 {
        get(c, offset, readFromDisk: readFromDisk, into: ops)
    }

    /// `get(_:_:readFromDisk:)` into `sink`.
    @inline(__always)
    func get<S: OpSink>(_ c: CacheKind, _ offset: UInt64, readFromDisk: Bool = true, into sink: S) -> UInt64 {
        sink.append(MetadataOp(.get, c, image: chainIndex, offset: offset, flag: readFromDisk ? 1 : 0))
        return offset
    }

    /// GET of the table at `offset`, then (`dirty`) MARK_DIRTY, then PUT, into `sink`.
    @inline(__always)
    func getReleased<S: OpSink>(_ c: CacheKind, _ offset: UInt64, dirty: Bool = false, into sink: S) {
        sink.appendReleased(MetadataOp(.get, c, image: chainIndex, offset: offset, flag: 1), dirty: dirty)
    }

    /// `count` more GET/PUT pairs of the table at `offset`, resident since its last PUT.
    func repeatGet(_ c: CacheKind, offset: UInt64, count: Int) { repeatGet(c, offset: offset, count: count, into: ops) }

    /// `repeatGet(_:offset:count:)` into `sink`.
    @inline(__always)
    func repeatGet<S: OpSink>(_ c: CacheKind, offset: UInt64, count: Int, into sink: S) {
        guard count > 0 else { return }
        sink.append(MetadataOp(.repeatGet, c, image: chainIndex, offset: offset, count: UInt32(clamping: count)))
    }

    /// PUT (§3.3).
    @inline(__always) func put(_ c: CacheKind, _ table: UInt64) { put(c, table, into: ops) }

    /// `put(_:_:)` into `sink`.
    @inline(__always) func put<S: OpSink>(_ c: CacheKind, _ table: UInt64, into sink: S) {
        sink.append(MetadataOp(.put, c, image: chainIndex, offset: table))
    }

    /// MARK_DIRTY (§3.3).
    @inline(__always) func markDirty(_ c: CacheKind, _ table: UInt64) { markDirty(c, table, into: ops) }

    /// `markDirty(_:_:)` into `sink`.
    @inline(__always) func markDirty<S: OpSink>(_ c: CacheKind, _ table: UInt64, into sink: S) {
        sink.append(MetadataOp(.markDirty, c, image: chainIndex, offset: table))
    }

    /// WRITE / FLUSH (§3.5) of one cache.
    func writeCache(_ c: CacheKind) { ops.append(MetadataOp(.writeCache, c, image: chainIndex)) }

    /// SET_DEP(c, d) (§3.6): entries of `c` may only be written after `d` is flushed.
    func setDependency(_ c: CacheKind, on d: CacheKind) { setDependency(c, on: d, into: ops) }

    /// `setDependency(_:on:)` into `sink`.
    @inline(__always) func setDependency<S: OpSink>(_ c: CacheKind, on d: CacheKind, into sink: S) {
        precondition(d == c.other, "a cache depends on the other cache of its image")
        sink.append(MetadataOp(.setDependency, c, image: chainIndex))
    }

    /// `qcow2_cache_depends_on_flush` (§3.6).
    func dependsOnFlush(_ c: CacheKind) { ops.append(MetadataOp(.dependsOnFlush, c, image: chainIndex)) }

    /// The model is about to read host-file state that the cache layer's write-backs change.
    func guardHost() { ops.guardHost(image: chainIndex) }

    /// Hands buffered operations to the cache layer before the model changes the host file in a
    /// way that does not commute with a table write-back (a punch, a zero range).
    func syncHost() { ops.sync() }
}

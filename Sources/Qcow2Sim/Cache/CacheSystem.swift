import TraceKit

/// The cache layer of a chain: QEMU's `block/qcow2-cache.c` for every image, driven by the model's
/// metadata operations (`MetadataOp`). It owns every cache-dependent decision — hits, victims,
/// write-backs with their dependency flushes, the clean timer, discards of freed tables — and the
/// observers of them: the event log, the memory timeline and the host-file writes of write-backs.
///
/// Topology (`CacheTopology`): one refcount cache and one L2 cache per image, as QEMU has
/// (`caches(image:)`), or — a what-if, not QEMU — one of each shared by every image of the chain
/// (`.chain`), entries keyed by image and table offset (`ImageCaches.tag`).
///
/// QEMU's asserts at the cache's boundary hold in every run: a PUT of an entry nobody holds, a
/// MARK_DIRTY of an empty entry, a miss with every entry pinned and (at `finish`) an entry still
/// pinned when the image closes stop the process as they stop QEMU.
public final class CacheSystem<Policy: EvictionPolicy>: MetadataOpConsumer {
    /// One image's caches and the session state that belongs to them.
    public final class ImageCaches {
        /// The refcount-block cache.
        public let refcount: MetadataCache<Policy>
        /// The L2-table cache.
        public let l2: MetadataCache<Policy>
        /// The cache sizing of the session.
        @exclusivity(unchecked) public internal(set) var sizing: CacheSizing
        /// Cache-clean ticks run (idle ticks included) and evaluated.
        @exclusivity(unchecked) public internal(set) var cleanTicks: UInt64 = 0
        /// Ticks whose effect was computed (at most three per request gap).
        @exclusivity(unchecked) public internal(set) var cleanTicksEvaluated: UInt64 = 0
        @exclusivity(unchecked) var nextCleanTick: Double?
        @exclusivity(unchecked) var lastMemoryTime: Double = 0
        @exclusivity(unchecked) var lookupSequence = 0
        /// The refcount block `update_refcount` held when a `freeCluster` released it (0: none).
        @exclusivity(unchecked) var droppedHold: UInt64 = 0
        /// The slot of the last GET per kind (by cache key), so PUT and MARK_DIRTY by offset need
        /// no lookup.
        @exclusivity(unchecked) var lastSlot = (rc: (offset: UInt64(0), slot: 0), l2: (offset: UInt64(0), slot: 0))
        /// What this image's table offsets are ORed with to make cache keys: 0 with per-image
        /// caches; `(image + 1) << 56` in a shared cache (qcow2 table offsets are below 2^56:
        /// `L2E_OFFSET_MASK`, and the model checks refcount block offsets against the file).
        public let tag: UInt64
        /// QEMU's `depends` of this image's refcount and L2 cache (`qcow2_cache_set_dependency`):
        /// per image even when the cache is shared, since a dependency names the other cache
        /// *of the same image*.
        @exclusivity(unchecked) var dependsOnOther = (rc: false, l2: false)
        /// QEMU's `depends_on_flush` per cache of this image.
        @exclusivity(unchecked) var dependsOnFlush = (rc: false, l2: false)
        /// In a shared cache: the digest of this image's fresh tables written back (what
        /// `MetadataCache.freshWrittenDigest` is for a cache of its own).
        @exclusivity(unchecked) var sharedDigest = (rc: UInt64(0), l2: UInt64(0))

        /// `refcount` and `l2` unretained, for the per-operation paths: a strong load of either
        /// costs a retain/release pair per operation (callgrind, read-1e6). Safe: both are `let`s
        /// of this object, so they live as long as it does.
        private let refs: (rc: Unmanaged<MetadataCache<Policy>>, l2: Unmanaged<MetadataCache<Policy>>)

        init(sizing: CacheSizing) {
            self.sizing = sizing
            refcount = MetadataCache(kind: .refcount, count: sizing.refcountEntries, tableSize: sizing.refcountEntrySize)
            l2 = MetadataCache(kind: .l2, count: sizing.l2Entries, tableSize: sizing.l2EntrySize)
            tag = 0
            refs = (Unmanaged.passUnretained(refcount), Unmanaged.passUnretained(l2))
        }

        init(sizing: CacheSizing, sharing refcount: MetadataCache<Policy>, _ l2: MetadataCache<Policy>, image: Int) {
            self.sizing = sizing
            self.refcount = refcount
            self.l2 = l2
            tag = UInt64(image + 1) << 56
            refs = (Unmanaged.passUnretained(refcount), Unmanaged.passUnretained(l2))
        }

        @inline(__always) func depends(_ k: CacheKind) -> Bool { k == .l2 ? dependsOnOther.l2 : dependsOnOther.rc }
        @inline(__always) func setDepends(_ k: CacheKind, _ v: Bool) {
            if k == .l2 { dependsOnOther.l2 = v } else { dependsOnOther.rc = v }
        }
        @inline(__always) func dependsFlush(_ k: CacheKind) -> Bool { k == .l2 ? dependsOnFlush.l2 : dependsOnFlush.rc }
        @inline(__always) func setDependsFlush(_ k: CacheKind, _ v: Bool) {
            if k == .l2 { dependsOnFlush.l2 = v } else { dependsOnFlush.rc = v }
        }

        /// `l2`, unretained.
        @inline(__always) var l2Ref: Unmanaged<MetadataCache<Policy>> { refs.l2 }

        /// The cache of kind `k`.
        @inline(__always) public subscript(k: CacheKind) -> MetadataCache<Policy> { k == .l2 ? l2 : refcount }

        /// Runs `body` on the cache of kind `k`, borrowed without a retain.
        @inline(__always) func with<R>(_ k: CacheKind, _ body: (MetadataCache<Policy>) -> R) -> R {
            (k == .l2 ? refs.l2 : refs.rc)._withUnsafeGuaranteedRef(body)
        }
    }

    /// Every image's caches, base first.
    public let images: [ImageCaches]
    /// Per image (QEMU) or shared by the chain (a what-if).
    public let topology: CacheTopology
    /// `topology` is `.chain`: every image's `ImageCaches` holds the same two caches.
    private let shared: Bool
    /// The images whose clean timer and memory integral run: all, or (one shared cache) the top.
    private let timedImages: Range<Int>
    /// `images` unretained, for the per-batch and per-request paths (a strong element load costs
    /// a retain/release pair). Safe: `images` is a `let` that owns them for this object's life.
    private let imageRefs: [Unmanaged<ImageCaches>]
    /// Where events go (nil: not recorded).
    public let log: EventLog?
    /// Where resident-memory changes go (nil: not recorded).
    public let timeline: MemoryTimeline?
    /// Host files that write-backs write to (live runs); nil in a replay of a recording, where
    /// `hostGuard` operations check instead that the write-backs match the recording's.
    @exclusivity(unchecked) var hosts: [HostFile]? {
        didSet {
            hostRefs = hosts.map { $0.map { Unmanaged.passUnretained($0) } }
            // Write-back epochs are of the files they were written to.
            for im in images {
                im.l2.forgetHostEpochs()
                im.refcount.forgetHostEpochs()
            }
        }
    }
    /// `hosts` unretained, for the write-backs (a strong element load costs a retain/release pair
    /// per write-back). Safe: `hosts` owns them while they are here.
    @exclusivity(unchecked) private var hostRefs: [Unmanaged<HostFile>]?
    /// Told about every operation when set (`explain`: one request step by step); nil on every
    /// other run.
    @exclusivity(unchecked) public var observer: (any CacheObserver)?
    /// Test-only: on the top image's lookup with this sequence number, a miss picks the next
    /// slot instead of QEMU's victim.
    @exclusivity(unchecked) public var debugMisEvictAtLookup: Int?
    /// The first point where QEMU would fail (an assert at the cache's boundary reached by a
    /// damaged image); the run stops with it after the request.
    @exclusivity(unchecked) public private(set) var failure: (image: Int, field: String, qemu: String)?
    /// The index of the request at whose `hostGuard` this replay's write-backs first differed
    /// from the recording's (nil: none did); its counts from there on are not trusted.
    @exclusivity(unchecked) public private(set) var divergedAt: UInt64?

    @exclusivity(unchecked) private var lastTime: Double = 0
    @exclusivity(unchecked) private var requestTime: Double = 0
    /// Untimed requests have run since the memory integrals were last brought up to date.
    @exclusivity(unchecked) private var memoryPending = false
    @exclusivity(unchecked) private var requestIndex: UInt64 = 0
    @exclusivity(unchecked) private var location: () -> TraceLocation = { .file }
    /// Held-back events of the read pools being run (innermost last), see `MetadataOp.Code`.
    @exclusivity(unchecked) private var deferred: [[CacheEvent]] = []

    /// A cache layer for a chain whose images (base first) open with `sizings`.
    public init(sizings: [CacheSizing], log: EventLog? = nil, timeline: MemoryTimeline? = nil) {
        images = sizings.map { ImageCaches(sizing: $0) }
        imageRefs = images.map { Unmanaged.passUnretained($0) }
        self.log = log
        self.timeline = timeline
        topology = .perImage
        shared = false
        timedImages = 0..<sizings.count
    }

    /// A cache layer with `topology`. For `.chain`, `sizings` must agree on the L2 entry size
    /// and the cluster size (one slot size per cache); every image then reports the shared
    /// sizing, the top image (last) the shared caches' counters and the others none, and the
    /// top image's `cache-clean-interval` drives the one clean timer.
    public init(sizings: [CacheSizing], topology: CacheTopology, log: EventLog? = nil, timeline: MemoryTimeline? = nil) {
        self.log = log
        self.timeline = timeline
        self.topology = topology
        switch topology {
        case .perImage:
            images = sizings.map { ImageCaches(sizing: $0) }
            shared = false
            timedImages = 0..<sizings.count
        case .chain(let l2Entries, let refcountEntries):
            var s = sizings.last ?? sizings[0]
            s.l2Entries = l2Entries
            s.refcountEntries = refcountEntries
            let rc = MetadataCache<Policy>(kind: .refcount, count: refcountEntries, tableSize: s.refcountEntrySize)
            let l2 = MetadataCache<Policy>(kind: .l2, count: l2Entries, tableSize: s.l2EntrySize)
            images = sizings.indices.map { ImageCaches(sizing: s, sharing: rc, l2, image: $0) }
            shared = true
            timedImages = max(sizings.count - 1, 0)..<sizings.count
        }
        imageRefs = images.map { Unmanaged.passUnretained($0) }
    }

    /// The cache key of `offset` for image `im` and the image owning a cache key.
    @inline(__always) private func key(_ im: ImageCaches, _ offset: UInt64) -> UInt64 { offset | im.tag }
    @inline(__always) private func owner(_ key: UInt64, default image: Int) -> Int { shared ? Int(key >> 56) - 1 : image }
    private static var offsetMask: UInt64 { (1 << 56) - 1 }

    /// The cache and slot holding image `image`'s table at `offset` in cache `kind`, or nil.
    public func slot(image: Int, kind: CacheKind, offset: UInt64) -> (cache: MetadataCache<Policy>, slot: Int)? {
        let im = images[image]
        guard let i = im[kind].find(key(im, offset)) else { return nil }
        return (im[kind], i)
    }

    /// The caches of image `image`.
    public func caches(image: Int) -> ImageCaches { images[image] }

    /// Where the current request's record is, for the event log's request marks (live runs).
    func locate(with f: @escaping () -> TraceLocation) { location = f }

    // MARK: - Consuming operations

    /// Processes a batch in order.
    public func consume(_ ops: UnsafeMutableBufferPointer<MetadataOp>) {
        // `explain` only: one branch per batch on every other run.
        if observer != nil { return consumeObserved(ops) }
        // The base image's caches are looked up once per batch (most chains have one image).
        imageRefs[0]._withUnsafeGuaranteedRef { first in
            let n = ops.count
            var k = 0
            while k < n {
                let image = ops[k].image
                if image == 0 {
                    // GET and PUT are most operations: tested before the full switch, with
                    // compares rather than a jump table, whose one indirect branch alternating
                    // between them was mispredicted at nearly every operation (callgrind
                    // --branch-sim, read-1e6: 2.8 of 2.9 indirect branches per request).
                    let code = ops[k].code
                    if code == .get {
                        let kind = ops[k].kind
                        let offset = ops[k].offset
                        let next = k &+ 1
                        if next < n && ops[next].code == .put && ops[next].offset == offset && ops[next].kind == kind
                            && ops[next].image == 0
                        {
                            // A GET released right away (MAP's slice, a refcount read): the same
                            // as the two operations, without the PUT's dispatch and slot lookup.
                            getPut(first, kind, offset, readFromDisk: ops[k].flag != 0)
                            k = next &+ 1
                            continue
                        }
                        let last = next &+ 1
                        if last < n && ops[next].code == .markDirty && ops[next].offset == offset && ops[next].kind == kind
                            && ops[next].image == 0 && ops[last].code == .put && ops[last].offset == offset
                            && ops[last].kind == kind && ops[last].image == 0
                        {
                            // GET, MARK_DIRTY, PUT of one table (a refcount update, a LINK): the
                            // three on the slot the GET finds, without two dispatches and lookups.
                            getMarkDirtyPut(first, kind, offset, readFromDisk: ops[k].flag != 0)
                            k = last &+ 1
                            continue
                        }
                        _ = get(first, kind, offset, readFromDisk: ops[k].flag != 0, image: 0)
                    } else if code == .put {
                        put(first, ops[k].kind, ops[k].offset)
                    } else if code == .markDirty {
                        // Two per allocating write (the refcount block, the slice).
                        markDirty(first, ops[k].kind, ops[k].offset)
                    } else {
                        apply(&ops[k], first)
                    }
                } else {
                    imageRefs[Int(image)]._withUnsafeGuaranteedRef { apply(&ops[k], $0) }
                }
                k &+= 1
            }
        }
    }

    /// One operation of image 0, run now: a live run's quick write (`DirectOps`). Inlined at each
    /// call site, where the operation's code is a constant, so the switch folds away.
    @inline(__always)
    func applyNow(_ op: MetadataOp, _ im: ImageCaches) {
        assert(observer == nil, "direct operations bypass the observer")
        assert(op.image == 0, "direct operations are of image 0")
        switch op.code {
        case .get: _ = get(im, op.kind, op.offset, readFromDisk: op.flag != 0, image: 0)
        case .put: put(im, op.kind, op.offset)
        case .markDirty: markDirty(im, op.kind, op.offset)
        case .repeatGet: repeatGet(im, op.kind, op.offset, count: Int(op.count), image: 0)
        case .setDependency: setDependency(im, op.kind, image: 0)
        default:
            var op = op
            apply(&op, im)
        }
    }

    /// `get`, (`dirty`) MARK_DIRTY and PUT of image 0 run now (`DirectOps`): the batch loop's
    /// fused steps.
    @inline(__always)
    func applyReleasedNow(_ get: MetadataOp, dirty: Bool, _ im: ImageCaches) {
        assert(observer == nil && get.code == .get && get.image == 0, "a direct released GET of image 0")
        if dirty {
            getMarkDirtyPut(im, get.kind, get.offset, readFromDisk: get.flag != 0)
        } else {
            getPut(im, get.kind, get.offset, readFromDisk: get.flag != 0)
        }
    }

    /// Image 0's caches, unretained (`DirectOps`). Safe while this object lives: `images` owns them.
    var topCachesRef: Unmanaged<ImageCaches> { imageRefs[0] }

    /// Whether `quietGetPut` may stand for `getPutTopL2`: no event log, no test-only
    /// mis-eviction, no observer. Asked once per batch of quick reads.
    var takesQuietGetPut: Bool { log == nil && debugMisEvictAtLookup == nil && observer == nil }

    /// Runs `body` on image 0's caches and its L2 cache, borrowed without a retain, for a batch
    /// of `quietGetPut(_:_:_:)`s (`takesQuietGetPut` holds).
    @inline(__always)
    func withTopL2<R>(_ body: (ImageCaches, MetadataCache<Policy>) throws -> R) rethrows -> R {
        try imageRefs[0]._withUnsafeGuaranteedRef { im in try im.l2Ref._withUnsafeGuaranteedRef { c in try body(im, c) } }
    }

    /// An L2 GET then PUT of image 0's table at `offset`, as a batch of those two operations
    /// would run them (a live run's quick reads, `Qcow2Image.quickMap`). Only without an
    /// observer, which must see the operations.
    @inline(__always)
    func getPutTopL2(_ offset: UInt64) {
        assert(observer == nil, "quick reads bypass the observer")
        // With events to log (or the test-only mis-eviction), the general GET and PUT.
        if log != nil || debugMisEvictAtLookup != nil {
            return imageRefs[0]._withUnsafeGuaranteedRef { getPut($0, .l2, offset, readFromDisk: true) }
        }
        withTopL2 { quietGetPut($0, $1, offset) }
    }

    /// `get` then `put` of image 0's L2 table at `offset` where no event is logged: the same
    /// slot choice, write-back, memory accounting and counters, with the fill and the release
    /// fused (`MetadataCache.fillReleased`, `hitReleased`).
    @inline(__always)
    func quietGetPut(_ im: ImageCaches, _ c: MetadataCache<Policy>, _ offset: UInt64) {
        assert(takesQuietGetPut, "quiet GET and PUT with a log, an observer or a mis-eviction")
        precondition(offset != 0, "qcow2 cache: GET of offset 0")
        im.lookupSequence &+= 1
        let key = key(im, offset)
        let i: Int
        if let hit = c.find(key) {
            c.hitReleased(hit)
            i = hit
        } else {
            let v = c.victim(for: key)
            if c.needsWriteback(v) {
                c.stats.dirtyEvictions += 1
                writeback(im, c, .l2, v, image: 0)
            }
            // Untimed: the memory integral must be current before resident memory grows.
            if memoryPending && !c.fullyResident { settleMemory() }
            c.fillReleased(v, offset: key)
            i = v
        }
        im.lastSlot.l2 = (key, i)
    }

    /// GET then PUT of the same table of image 0 (nothing between them).
    @inline(__always)
    private func getPut(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64, readFromDisk: Bool) {
        precondition(offset != 0, "qcow2 cache: GET of offset 0")
        im.with(k) { c in
            let i = get(im, c, k, offset, readFromDisk: readFromDisk, image: 0)
            c.put(i)
        }
    }

    /// GET, MARK_DIRTY and PUT of the same table of image 0 (nothing between them).
    @inline(__always)
    private func getMarkDirtyPut(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64, readFromDisk: Bool) {
        precondition(offset != 0, "qcow2 cache: GET of offset 0")
        im.with(k) { c in
            let i = get(im, c, k, offset, readFromDisk: readFromDisk, image: 0)
            c.markDirty(i)
            c.put(i)
        }
    }

    /// The batch one operation at a time, the observer told before and after each.
    @inline(never)
    private func consumeObserved(_ ops: UnsafeMutableBufferPointer<MetadataOp>) {
        guard let observer else { return }
        for k in ops.indices {
            observer.willApply(ops[k], caches: self)
            imageRefs[Int(ops[k].image)]._withUnsafeGuaranteedRef { apply(&ops[k], $0) }
            observer.didApply(ops[k], caches: self)
        }
    }

    /// Every operation but image 0's GET and PUT. Kept out of line so its switch does not merge
    /// with `consume`'s two tests into one jump table.
    @inline(never)
    private func apply(_ op: inout MetadataOp, _ im: ImageCaches) {
        switch op.code {
        case .get: _ = get(im, op.kind, op.offset, readFromDisk: op.flag != 0, image: Int(op.image))
        case .repeatGet: repeatGet(im, op.kind, op.offset, count: Int(op.count), image: Int(op.image))
        case .put: put(im, op.kind, op.offset)
        case .markDirty: markDirty(im, op.kind, op.offset)
        case .writeCache: writeCache(im, op.kind, image: Int(op.image))
        case .setDependency: setDependency(im, op.kind, image: Int(op.image))
        case .dependsOnFlush: im.setDependsFlush(op.kind, true)
        case .freeCluster: freeCluster(im, op.offset, held: op.extra, image: Int(op.image))
        case .regetIfDropped:
            if im.droppedHold == op.offset && op.offset != 0 {
                im.droppedHold = 0
                _ = get(im, .refcount, op.offset, readFromDisk: true, image: Int(op.image))
            }
        case .putHeld:
            if im.droppedHold == op.offset && op.offset != 0 {
                im.droppedHold = 0
            } else {
                put(im, .refcount, op.offset)
            }
        case .hostGuard:
            let digest =
                shared
                ? im.sharedDigest.l2 &+ (im.sharedDigest.rc &* 3)
                : im.l2.freshWrittenDigest &+ (im.refcount.freshWrittenDigest &* 3)
            if hosts != nil {
                op.extra = digest
            } else if digest != op.extra && divergedAt == nil {
                divergedAt = requestIndex
            }
        case .beginRequest: beginRequest(index: op.offset, time: op.flag != 0 ? Double(bitPattern: op.extra) : nil)
        case .endRequest: endRequest(flag: op.flag)
        case .open: open(im, image: Int(op.image), time: Double(bitPattern: op.extra))
        case .beginClose:
            if op.flag != 0 {
                // No timestamps: memory is averaged per request up to the last one.
                memoryPending = false
                for k in timedImages { accumulateMemory(images[k], until: Double(op.offset)) }
            }
            log?.beginClose()
        case .task: log?.task = Int32(bitPattern: op.count)
        case .deferBegin: if log != nil { deferred.append([]) }
        case .captureBegin: log?.beginCapture()
        case .captureEnd:
            guard let log, !deferred.isEmpty else { return }
            let events = log.endCapture()
            // The backing task yields at its first I/O (a miss's read or a write-back) only if
            // it is the first one held; a later task waits for the backing image's lock.
            var cut = 0
            if deferred[deferred.count - 1].isEmpty {
                cut = (events.firstIndex { $0.kind == .getRead || $0.kind == .entryFlush }).map { $0 + 1 } ?? events.count
            }
            for ev in events[..<cut] { log.append(ev) }
            deferred[deferred.count - 1] += events[cut...]
        case .deferEnd:
            guard let log, let held = deferred.popLast() else { return }
            for ev in held { log.append(ev) }
        }
    }

    // MARK: - Sessions and time (§2, §3.7)

    private func open(_ im: ImageCaches, image: Int, time: Double) {
        let s = im.sizing
        // A shared cache opens with the chain's first image (base first): the others' opens
        // follow before any lookup and must not empty it again.
        if !shared || image == 0 {
            im.refcount.reset(count: s.refcountEntries, tableSize: s.refcountEntrySize)
            im.l2.reset(count: s.l2Entries, tableSize: s.l2EntrySize)
        }
        im.dependsOnOther = (false, false)
        im.dependsOnFlush = (false, false)
        im.sharedDigest = (0, 0)
        im.lookupSequence = 0
        im.droppedHold = 0
        im.lastSlot = ((0, 0), (0, 0))
        im.cleanTicks = 0
        im.cleanTicksEvaluated = 0
        im.nextCleanTick = s.cleanInterval > 0 ? time + Double(s.cleanInterval) : nil
        im.lastMemoryTime = time
        timeline?.sample(time: time, image: image, caches: im)
    }

    /// `endRequest`: the memory timeline's per-request sample and the event log's mark of a
    /// request run as concurrent segments (`flag` as in `MetadataOp.Code.endRequest`).
    @inline(__always)
    func endRequest(flag: UInt8) {
        if let timeline { for k in images.indices { timeline.sample(time: requestTime, image: k, caches: images[k]) } }
        if flag & 1 != 0 { log?.markMultiSegment(write: flag & 2 != 0) }
    }

    /// `beginRequest`. A live run without a recorder calls this and `endRequest(flag:)` directly
    /// around each request's batch (the operations would be the batch's first and last, so the
    /// order is the same); a recording and its replays carry them as operations.
    @inline(__always)
    func beginRequest(index: UInt64, time: Double?) {
        requestIndex = index
        if let t = time {
            if memoryPending { settleMemory() }
            if t > lastTime {
                lastTime = t
                for k in timedImages { imageRefs[k]._withUnsafeGuaranteedRef { advanceTime($0, image: k, to: t) } }
            }
            requestTime = t
        } else {
            // No timestamps: memory is averaged per request and the clean timer never fires.
            // The integral is brought up to date only where resident memory changes (a fill of
            // a cache not yet fully resident, `settleMemory`) and at close: the same integer
            // sums as one addition per request, without the per-request work.
            memoryPending = true
            requestTime = Double(index)
        }
        if log != nil { markRequest(index) }
    }

    /// The event log's request mark (kept out of line: the hot path runs without a log).
    @inline(never)
    private func markRequest(_ index: UInt64) {
        log?.beginRequest(Int(index), location: location())
    }

    /// Runs every cache-clean tick due by `t` (§3.7) and integrates resident memory over time.
    ///
    /// Between two requests only the ticks change the caches, and a tick that changes nothing
    /// (nothing to clean and the mark already at the clock) leaves the state as it found it, so
    /// every later tick before `t` would change nothing either. Such ticks are counted, not run:
    /// at most three ticks are evaluated per request gap whatever its length. Tick times are
    /// `open time + k × interval`, exact integers below `TraceRecord.maxTime` + 2^32, so the
    /// jumped-to tick is the one repeated addition would reach.
    private func advanceTime(_ im: ImageCaches, image: Int, to t: Double) {
        while let tick = im.nextCleanTick, tick <= t {
            let interval = Double(im.sizing.cleanInterval)
            accumulateMemory(im, until: tick)
            let changedL2 = im.l2.clean()
            let changedRC = im.refcount.clean()
            im.cleanTicks += 1
            im.cleanTicksEvaluated += 1
            timeline?.sample(time: tick, image: image, caches: im)
            if changedL2 || changedRC {
                im.nextCleanTick = tick + interval
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
            im.cleanTicks += UInt64(skipped)
            im.nextCleanTick = next
        }
        accumulateMemory(im, until: t)
    }

    /// Brings every timed image's memory integral up to `requestTime` (untimed requests).
    @inline(never)
    private func settleMemory() {
        memoryPending = false
        for k in timedImages { accumulateMemory(images[k], until: requestTime) }
    }

    private func accumulateMemory(_ im: ImageCaches, until t: Double) {
        let dt = t - im.lastMemoryTime
        if dt > 0 {
            im.refcount.accumulateMemory(seconds: dt)
            im.l2.accumulateMemory(seconds: dt)
            im.lastMemoryTime = t
        }
    }

    /// QEMU's asserts at close (`qcow2_cache_destroy`: no entry may still be pinned), and the
    /// caches' own invariants in debug builds. Returns the problems found.
    public func finish() -> [String] {
        var problems: [String] = []
        for (k, im) in images.enumerated() {
            for kind in CacheKind.allCases {
                let c = im[kind]
                if !c.pinnedSlots.isEmpty {
                    problems.append(
                        "image \(k) \(kind) cache: entries \(c.pinnedSlots) still pinned at close (QEMU asserts ref == 0)")
                }
                #if DEBUG
                    problems += c.checkInvariants().map { "image \(k) \(kind) cache: \($0)" }
                #endif
            }
        }
        return problems
    }

    // MARK: - Cache operations (§3)

    @inline(__always)
    private func emit(
        _ kind: CacheEvent.Kind, _ c: CacheKind, image: Int, offset: UInt64 = 0, readFromDisk: Bool = true, index: Int = 0
    ) {
        guard let log else { return }
        log.append(CacheEvent(kind: kind, image: image, isL2: c == .l2, offset: offset, readFromDisk: readFromDisk, index: index))
    }

    /// The slot holding `offset` in cache `k`, which the caller holds (PUT, MARK_DIRTY).
    @inline(__always)
    private func slot(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64) -> Int {
        let last = k == .l2 ? im.lastSlot.l2 : im.lastSlot.rc
        let key = key(im, offset)
        if last.offset == key && offset != 0 { return last.slot }
        guard let i = im.with(k, { $0.find(key) }) else {
            preconditionFailure("qcow2 cache: PUT or MARK_DIRTY of table \(qcow2Hex(offset)), which the \(k) cache does not hold")
        }
        return i
    }

    /// GET (§3.2): a hit pins the entry; a miss writes the victim back and fills it.
    @inline(__always)
    private func get(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64, readFromDisk: Bool, image: Int) -> Int {
        // Offset 0 marks an empty slot; the model checks table offsets that come from a file.
        precondition(offset != 0, "qcow2 cache: GET of offset 0")
        return im.with(k) { c in get(im, c, k, offset, readFromDisk: readFromDisk, image: image) }
    }

    @inline(__always)
    private func get(
        _ im: ImageCaches, _ c: MetadataCache<Policy>, _ k: CacheKind, _ offset: UInt64, readFromDisk: Bool, image: Int
    ) -> Int {
        emit(.get, k, image: image, offset: offset, readFromDisk: readFromDisk)
        im.lookupSequence += 1
        let key = key(im, offset)
        let i: Int
        if let hit = c.find(key) {
            c.hit(hit)
            emit(.getDone, k, image: image, index: hit)
            i = hit
        } else {
            var v = c.victim(for: key)
            if im.lookupSequence == debugMisEvictAtLookup && image == images.count - 1 {
                // Test-only: pick another unpinned slot than QEMU would.
                var w = (v + 1) % c.count
                while c.pinCount(at: w) != 0 && w != v { w = (w + 1) % c.count }
                v = w
            }
            emit(.replaceEntry, k, image: image, index: v)
            if c.needsWriteback(v) {
                c.stats.dirtyEvictions += 1
                writeback(im, c, k, v, image: image)
            }
            emit(.getRead, k, image: image, index: v)
            // Untimed: the memory integral must be current before resident memory grows.
            if memoryPending && !c.fullyResident { settleMemory() }
            c.fill(v, offset: key, readFromDisk: readFromDisk)
            emit(.getDone, k, image: image, index: v)
            i = v
        }
        if k == .l2 { im.lastSlot.l2 = (key, i) } else { im.lastSlot.rc = (key, i) }
        return i
    }

    /// `count` more GET/PUT pairs of the resident table at `offset`: hits, with their events.
    private func repeatGet(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64, count: Int, image: Int) {
        guard count > 0 else { return }
        let i = slot(im, k, offset)
        if log != nil {
            for _ in 0..<count {
                emit(.get, k, image: image, offset: offset)
                emit(.getDone, k, image: image, index: i)
            }
        }
        im.lookupSequence += count
        im.with(k) { $0.repeatHits(i, count: count) }
    }

    /// MARK_DIRTY (§3.3) of a table the caller holds.
    @inline(__always)
    private func markDirty(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64) {
        let i = slot(im, k, offset)
        im.with(k) { $0.markDirty(i) }
    }

    /// PUT (§3.3).
    @inline(__always)
    private func put(_ im: ImageCaches, _ k: CacheKind, _ offset: UInt64) {
        let i = slot(im, k, offset)
        im.with(k) { $0.put(i) }
    }

    /// WB (§3.4): writes one dirty entry back, flushing the cache it depends on first. In a
    /// shared cache the entry may be another image's (a victim): its own image's dependency is
    /// the one that applies, and its flush writes only that image's entries of the other cache.
    private func writeback(_ im: ImageCaches, _ k: CacheKind, _ i: Int, image: Int) {
        im.with(k) { c in writeback(im, c, k, i, image: image) }
    }

    private func writeback(_ im: ImageCaches, _ c: MetadataCache<Policy>, _ k: CacheKind, _ i: Int, image: Int) {
        guard c.needsWriteback(i) else { return }
        if shared {
            // The entry's owner (a shared cache holds every image's tables), borrowed.
            let owner = owner(c.offset(at: i), default: image)
            return imageRefs[owner]._withUnsafeGuaranteedRef { writeback(owned: $0, c, k, i, image: owner) }
        }
        // Not `shared ? images[image] : im`: the merged value is a strong copy, a retain and
        // release per write-back.
        writeback(owned: im, c, k, i, image: image)
    }

    /// `writeback` of an entry of image `image`, whose caches are `im`.
    @inline(__always)
    private func writeback(owned im: ImageCaches, _ c: MetadataCache<Policy>, _ k: CacheKind, _ i: Int, image: Int) {
        emit(.entryFlush, k, image: image, index: i)
        if im.depends(k) {
            writeCache(im, k.other, image: image)
            im.setDepends(k, false)
            im.setDependsFlush(k, false)
        } else if im.dependsFlush(k) {
            im.setDependsFlush(k, false)
        }
        if shared {
            let offset = c.offset(at: i) & Self.offsetMask
            hostRefs?[image]._withUnsafeGuaranteedRef { writeBack(c, i, offset, to: $0) }
            let before = c.freshWrittenDigest
            c.markClean(i)
            if c.freshWrittenDigest != before {
                if k == .l2 {
                    im.sharedDigest.l2 &+= TableHistory.mix(offset)
                } else {
                    im.sharedDigest.rc &+= TableHistory.mix(offset)
                }
            }
            return
        }
        hostRefs?[image]._withUnsafeGuaranteedRef { writeBack(c, i, c.offset(at: i), to: $0) }
        c.markClean(i)
    }

    /// Slot `i`'s table written to the host file at `offset`, unless the slot's last write-back
    /// since it was filled was in the file's current epoch: that write covered the same blocks,
    /// and nothing has left the file's block sets since, so it would change nothing.
    @inline(__always)
    private func writeBack(_ c: MetadataCache<Policy>, _ i: Int, _ offset: UInt64, to host: HostFile) {
        let epoch = host.epoch
        if c.hostEpoch(at: i) == epoch { return }
        host.write(offset, c.tableSize)
        c.setHostEpoch(epoch, at: i)
    }

    /// WRITE / FLUSH (§3.5): one `qcow2_cache_flush` line, then every dirty entry in index order.
    private func writeCache(_ im: ImageCaches, _ k: CacheKind, image: Int) {
        emit(.flush, k, image: image)
        // Borrowed: `im[k]` is a strong copy, a retain and release per flush.
        im.with(k) { c in writeCache(im, c, k, image: image) }
    }

    private func writeCache(_ im: ImageCaches, _ c: MetadataCache<Policy>, _ k: CacheKind, image: Int) {
        c.stats.flushes += 1
        // QEMU scans every slot in index order; only dirty ones write, so jump between them.
        // A write-back (and the dependency flush it may start) only clears dirty bits, so a
        // slot skipped here stays clean until the full scan would have passed it.
        var i = 0
        while let j = c.nextDirty(from: i) {
            // A shared cache: only this image's entries (its tag; 0 with per-image caches, where
            // every offset is below 2^56).
            if c.offset(at: j) >> 56 == im.tag >> 56 { writeback(im, c, k, j, image: image) }
            i = j + 1
        }
    }

    /// SET_DEP(c, d) (§3.6): entries of `k` may only be written after the other cache is flushed.
    private func setDependency(_ im: ImageCaches, _ k: CacheKind, image: Int) {
        if im.depends(k.other) {
            writeCache(im, k, image: image)
            im.setDepends(k.other, false)
            im.setDependsFlush(k.other, false)
        }
        im.setDepends(k, true)
    }

    /// `update_refcount` for a cluster whose refcount reached 0 (§4.4): a cached refcount block
    /// there makes QEMU release the held block and discard it; a cached L2 table is discarded.
    private func freeCluster(_ im: ImageCaches, _ offset: UInt64, held: UInt64, image: Int) {
        if let e = im.refcount.find(key(im, offset)) {
            if held != 0 {
                put(im, .refcount, held)
                im.droppedHold = held
            }
            discard(im, .refcount, e, image: image)
        }
        if let e = im.l2.find(key(im, offset)) { discard(im, .l2, e, image: image) }
    }

    /// DISCARD_ENTRY of slot `i` (§3.8). A pinned slot only happens when a damaged image frees a
    /// cluster that is also a table in use; QEMU's cache asserts there, the simulator records the
    /// failure and leaves the slot alone.
    private func discard(_ im: ImageCaches, _ k: CacheKind, _ i: Int, image: Int) {
        let c = im[k]
        if c.pinCount(at: i) != 0 {
            if failure == nil {
                failure = (
                    image,
                    "host cluster \(qcow2Hex(c.offset(at: i) & Self.offsetMask)) is freed while the \(k == .l2 ? "L2 table" : "refcount block") it holds is in use",
                    "qcow2_cache_discard: Assertion `c->entries[i].ref == 0' failed (the process aborts)"
                )
            }
            return
        }
        c.discard(i)
        let last = k == .l2 ? im.lastSlot.l2 : im.lastSlot.rc
        if last.slot == i {
            if k == .l2 { im.lastSlot.l2 = (0, 0) } else { im.lastSlot.rc = (0, 0) }
        }
    }
}

/// The cache layer as an operation sink: each operation runs as the model makes it. For a live
/// run of one image without a recorder or an observer, whose operation buffer is empty (the
/// request boundary handed it over): the same calls in the same order as the buffer's batch.
///
/// Every reference unretained (a strong load costs a retain and release per operation): the
/// engine holds the cache layer, its image caches and the buffer for the whole run.
struct DirectOps<Policy: EvictionPolicy>: OpSink {
    private let system: Unmanaged<CacheSystem<Policy>>
    private let caches: Unmanaged<CacheSystem<Policy>.ImageCaches>
    /// The image's buffer, which the model's general helpers still write to.
    private let buffer: Unmanaged<OpBuffer>

    init(system: CacheSystem<Policy>, buffer: OpBuffer) {
        self.system = Unmanaged.passUnretained(system)
        caches = system.topCachesRef
        self.buffer = Unmanaged.passUnretained(buffer)
    }

    @inline(__always) func append(_ op: MetadataOp) {
        system._withUnsafeGuaranteedRef { s in caches._withUnsafeGuaranteedRef { s.applyNow(op, $0) } }
    }
    @inline(__always) func appendReleased(_ get: MetadataOp, dirty: Bool) {
        system._withUnsafeGuaranteedRef { s in caches._withUnsafeGuaranteedRef { s.applyReleasedNow(get, dirty: dirty, $0) } }
    }
    @inline(__always) func sync() {}
    @inline(__always) func catchUp() {
        system._withUnsafeGuaranteedRef { s in buffer._withUnsafeGuaranteedRef { $0.sync(into: s) } }
    }
}

/// Which images a metadata cache serves.
public enum CacheTopology: Equatable, Sendable {
    /// One L2 and one refcount cache per image: QEMU.
    case perImage
    /// A what-if (`cache-scope=chain`, not QEMU): one L2 cache of `l2Entries` and one refcount
    /// cache of `refcountEntries` entries for every image of the chain, keyed by image and table.
    case chain(l2Entries: Int, refcountEntries: Int)
}

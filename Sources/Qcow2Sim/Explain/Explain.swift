import TraceKit

/// `qcow2sim explain`: runs a trace up to request N and shows that request step by step
/// (`ExplainReport`). The run is `simulate`'s (the same chain, options and cache layer); the
/// cache layer's observer (`CacheObserver`) records request N's operations with the slot state
/// around each, and the image model is read (never changed) just before and just after it.
public enum Explain {
    /// Runs `reader` up to request `number` (from 1) and explains that request.
    ///
    /// - Throws: `SimulationError.usage` when the trace has fewer requests, for `--policy opt`
    ///   and for what-ifs (both run through a recording, not the live cache layer); the run's own
    ///   errors otherwise.
    public static func run<R: TraceReader>(config: SimulationConfig, reader: inout R, request number: Int, trace: String)
        throws -> ExplainReport
    {
        guard number >= 1 else { throw SimulationError.usage("--request \(number): requests are counted from 1") }
        if config.policy == OptimalPolicy.name {
            throw SimulationError.usage(
                "explain runs the live cache layer; --policy opt (Belady's MIN over a recording) has no victim scan to show")
        }
        if !config.whatIf.isEmpty {
            throw SimulationError.usage("explain shows QEMU's own behaviour; --what-if is not available here")
        }
        let source = ExplainSource(BoxedSource(reader), target: number)
        defer { if let inner = source.inner as? BoxedSource<R> { reader = inner.reader } }
        let visitor = ExplainRunner(config: config, source: source, number: number, trace: trace)
        guard let report = try PolicyRegistry.open(config.policy, visitor) else {
            throw SimulationError.usage(
                "unknown policy '\(config.policy)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
        }
        return report
    }
}

/// The records up to the explained one; reads the model just before it and just after it. The
/// simulation asks for record k + 1 only after request k's operations are all consumed, so the
/// model's state there is exactly "before" and "after".
final class ExplainSource: RecordSource {
    let inner: RecordSource
    let target: Int
    private(set) var count = 0
    var before: ((TraceRecord) -> Void)?
    var after: (() -> Void)?
    private(set) var record: TraceRecord?
    private(set) var recordLocation: TraceLocation = .file

    init(_ inner: RecordSource, target: Int) {
        self.inner = inner
        self.target = target
    }

    override func next() throws -> TraceRecord? {
        if count == target {
            count += 1
            after?()
            return nil
        }
        guard count < target else { return nil }
        guard let r = try inner.next() else {
            throw SimulationError.usage(
                "--request \(target): \(inner.fileName.isEmpty ? "the trace" : inner.fileName) has \(count) request\(count == 1 ? "" : "s")"
            )
        }
        count += 1
        if count == target {
            record = r
            recordLocation = inner.location()
            before?(r)
        }
        return r
    }

    override func location() -> TraceLocation { inner.location() }
    override var fileName: String { inner.fileName }
}

/// Records the explained request's operations with the cache state around each.
final class ExplainObserver: CacheObserver {
    struct Step {
        var op: MetadataOp
        var before: CacheState?
        var after: CacheState?
        var events: [CacheEvent]
    }

    let target: UInt64
    private(set) var recording = false
    private(set) var done = false
    private(set) var steps: [Step] = []
    private var pending: [CacheEvent] = []
    private var current: CacheState?
    /// Per image: the caches just after the request's start (after any clean-timer ticks) and
    /// just before it (the cleaned counts tell what the ticks dropped).
    private(set) var atStart: [(l2: CacheState, rc: CacheState)] = []
    private(set) var beforeStart: [(l2: CacheState, rc: CacheState)] = []
    private(set) var allEvents: [CacheEvent] = []
    let images: Int

    init(target: Int, images: Int) {
        self.target = UInt64(target - 1)
        self.images = images
    }

    func event(_ e: CacheEvent) {
        guard recording else { return }
        pending.append(e)
        allEvents.append(e)
    }

    private static func hasCache(_ c: MetadataOp.Code) -> Bool {
        switch c {
        case .get, .repeatGet, .put, .markDirty, .writeCache, .setDependency, .dependsOnFlush, .freeCluster, .regetIfDropped,
            .putHeld:
            true
        default: false
        }
    }

    func willApply(_ op: MetadataOp, caches: any CacheStateView) {
        if op.code == .beginRequest && op.offset == target && !done {
            beforeStart = (0..<images).map { (caches.state(image: $0, kind: .l2), caches.state(image: $0, kind: .refcount)) }
            return
        }
        guard recording else { return }
        if op.code == .endRequest {
            recording = false
            done = true
            return
        }
        pending = []
        current = Self.hasCache(op.code) ? caches.state(image: Int(op.image), kind: kindOf(op)) : nil
    }

    func didApply(_ op: MetadataOp, caches: any CacheStateView) {
        if op.code == .beginRequest && op.offset == target && !done {
            atStart = (0..<images).map { (caches.state(image: $0, kind: .l2), caches.state(image: $0, kind: .refcount)) }
            recording = true
            return
        }
        guard recording else { return }
        let after = Self.hasCache(op.code) ? caches.state(image: Int(op.image), kind: kindOf(op)) : nil
        steps.append(Step(op: op, before: current, after: after, events: pending))
        pending = []
    }

    private func kindOf(_ op: MetadataOp) -> CacheKind {
        switch op.code {
        case .freeCluster, .regetIfDropped, .putHeld: .refcount
        default: op.kind
        }
    }
}

/// What the explanation reads of one image of the chain, before or after the request.
struct ImageSnapshot {
    var l1: [UInt64]
    var reftable: [UInt64]
    var freeClusterIndex: UInt64
    var stats: ImageStats
    /// (word, bitmap) of the entries of the walked clusters (nil: no table), by guest cluster start.
    var entries: [UInt64: (word: UInt64, bitmap: UInt64)?] = [:]
    /// Refcounts read, by host cluster.
    var refcounts: [UInt64: UInt64] = [:]
    var hostLength: UInt64
}

extension Qcow2Image {
    /// The L2 table of guest offset `g` from the L1 table (0: none), read without any cache
    /// operation.
    func inspectTable(_ g: UInt64) -> UInt64 {
        let i = geometry.l1Index(g)
        return i < l1.count ? l1[i] & EntryBits.offsetMask : 0
    }

    /// The L2 entry of guest offset `g`, read from the authoritative store without any cache
    /// operation (nil: no L2 table).
    func inspectEntry(_ g: UInt64) -> (word: UInt64, bitmap: UInt64)? {
        let t = inspectTable(g)
        guard t != 0 else { return nil }
        return l2Store.entry(t, geometry.l2Index(g))
    }

    /// The refcount of host cluster `k` from the store (no cache operation; 0 without a block).
    func inspectRefcount(_ k: UInt64) -> UInt64 {
        let t = Int(geometry.refblockIndex(ofCluster: k))
        guard t < reftable.count else { return 0 }
        let block = reftable[t] & EntryBits.reftableOffsetMask
        guard block != 0 else { return 0 }
        return rcStore.get(block, Int(k & (geometry.refblockEntries - 1)))
    }

    func snapshot(walk: [UInt64], refcounts: [UInt64]) -> ImageSnapshot {
        var s = ImageSnapshot(
            l1: Array(l1), reftable: Array(reftable), freeClusterIndex: freeClusterIndex, stats: stats, hostLength: host.length)
        for g in walk where g < geometry.virtualSize { s.entries[geometry.clusterStart(g)] = inspectEntry(g) }
        for k in refcounts { s.refcounts[k] = inspectRefcount(k) }
        return s
    }

    /// COW_META's regions for a write of `[pos, pos + bytes)` inside one cluster, from the entry
    /// as it is now (`cowMeta`, §7.5); empty when the write needs none.
    func inspectCow(_ pos: UInt64, _ bytes: UInt64) -> [(start: UInt64, startBytes: UInt64, end: UInt64, endBytes: UInt64)] {
        let table = inspectTable(pos)
        if table == 0 {
            // No table: every entry is UNALLOCATED_PLAIN, COW_META's plain case: from the start of
            // the first touched subcluster to the end of the last one.
            let sc = geometry.subclusterSize
            let from = geometry.offsetInCluster(pos)
            let start = from / sc * sc
            let end = (from + bytes + sc - 1) / sc * sc
            return [(start, from - start, from + bytes, end - from - bytes)]
        }
        let word = l2Store.entry(table, geometry.l2Index(pos)).word
        var metas: [L2Meta] = []
        cowMeta(0, pos, bytes, table: table, keepOld: !geometry.needsNewAllocation(word), &metas)
        return metas.map { ($0.cowStartOffset, $0.cowStartBytes, $0.cowEndOffset, $0.cowEndBytes) }
    }
}

/// Runs the explained trace with one policy type.
struct ExplainRunner: PolicyVisitor {
    let config: SimulationConfig
    let source: ExplainSource
    let number: Int
    let trace: String

    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> ExplainReport {
        let chain = try ChainBuilder.build(config, policy: P.self)
        let observer = ExplainObserver(target: number, images: chain.count)
        let log = EventLog(retainEvents: false) { observer.event($0) }
        var replay = Replay(chain: chain, config: config, log: log, misEvict: nil, timeline: nil)
        replay.observer = observer
        var walk: [UInt64] = []
        var window: [UInt64] = []
        var before: [ImageSnapshot] = []
        var after: [ImageSnapshot] = []
        var cow: [(UInt64, [(start: UInt64, startBytes: UInt64, end: UInt64, endBytes: UInt64)])] = []
        var sizings: [CacheSizing] = []
        source.before = { rec in
            walk = ExplainBuilder.walkOffsets(rec, chain: chain)
            window = ExplainBuilder.refcountWindow(rec, chain: chain, walk: walk)
            before = chain.map { $0.snapshot(walk: walk, refcounts: window) }
            if rec.op == .write, let top = chain.last {
                for g in walk where g < top.geometry.virtualSize {
                    let cs = top.geometry.clusterStart(g)
                    let from = max(g, rec.offset), to = min(cs + top.geometry.clusterSize, rec.offset + rec.length)
                    if to > from { cow.append((cs, top.inspectCow(from, to - from))) }
                }
            }
        }
        source.after = {
            after = chain.map { image in
                // Refcounts of every cluster the request may have touched: the window, the
                // tables and clusters the after-state names.
                var ks = Set(window)
                ks.formUnion(ExplainBuilder.namedClusters(image: image, walk: walk))
                return image.snapshot(walk: walk, refcounts: Array(ks))
            }
        }
        _ = try replay.run(source, policy: P.self)
        sizings = try replay.sizings()
        guard let rec = source.record, !before.isEmpty, !after.isEmpty else {
            throw SimulationError.usage("--request \(number): the trace has fewer requests")
        }
        var b = ExplainBuilder(
            config: config, chain: chain, sizings: sizings, record: rec, number: number, location: source.recordLocation,
            trace: trace, observer: observer, before: before, after: after, cow: cow)
        return b.build()
    }
}

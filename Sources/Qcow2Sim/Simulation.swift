import Foundation
import TraceKit

/// Why a simulation could not run; each carries its sysexits code.
public enum SimulationError: Error, CustomStringConvertible, Equatable {
    /// A bad option value (`-o`, `--drive`, `--size`, populate): EX_USAGE.
    case usage(String)
    /// Bad trace data, located: EX_DATAERR.
    case trace(TraceError)
    /// An image file that cannot be read or is not usable: its message and code.
    case image(String, Int32)

    /// The message, compiler-style for located errors.
    public var description: String {
        switch self {
        case .usage(let m): m
        case .trace(let e): e.description
        case .image(let m, _): m
        }
    }

    /// sysexits code.
    public var exitCode: Int32 {
        switch self {
        case .usage: 64
        case .trace: 65
        case .image(_, let c): c
        }
    }
}

/// What one image of the chain did during the trace session.
public struct ImageReport: Sendable {
    /// Chain position (0 = base).
    public var index: Int
    /// Geometry of the image.
    public var geometry: Geometry
    /// Effective cache configuration.
    public var sizing: CacheSizing
    /// L2-table cache counters.
    public var l2: CacheStats
    /// Refcount-block cache counters.
    public var refcount: CacheStats
    /// Allocation, COW and data counters.
    public var image: ImageStats
    /// Host file length at the end.
    public var hostLengthBytes: UInt64
    /// Host bytes allocated at the end (4 KiB-block model).
    public var hostAllocatedBytes: UInt64
}

/// The outcome of `Simulation.run`.
public struct SimulationReport: Sendable {
    /// One report per image, base first.
    public var images: [ImageReport]
    /// Trace records replayed.
    public var requests: Int
    /// Records per op.
    public var requestsByOp: [TraceRecord.Op: Int]
    /// Requests QEMU would run as concurrent segments (reads, writes).
    public var multiSegmentReads = 0
    /// Multi-segment writes (QEMU may reorder their LINKs).
    public var multiSegmentWrites = 0
    /// Trace time spanned (seconds; 0 without timestamps).
    public var duration: Double
    /// Eviction policy used.
    public var policy: String
    /// The what-ifs the run applied (`KEY=VALUE`, as given; empty: QEMU's own behaviour).
    public var whatIf: [String] = []
    /// Wall-clock seconds spent building the initial images (creation, populate, preparation).
    public var setupSeconds: Double = 0
    /// Wall-clock seconds spent replaying the trace (open to close).
    public var replaySeconds: Double = 0

    /// The span memory was averaged over: trace seconds, or requests for a trace without
    /// timestamps (each request then weighs the same).
    public var memorySpan: Double = 0

    /// Time-weighted mean resident memory of a cache (bytes) over `span`; the current value
    /// when the span is empty.
    public static func meanMemory(_ s: CacheStats, span: Double) -> Double {
        span > 0 ? s.memoryByteSeconds / span : Double(s.memoryBytes)
    }
}

/// Replays a trace through a simulated qcow2 chain.
public enum Simulation {
    /// QEMU's per-request limit (`BDRV_REQUEST_MAX_BYTES`); longer requests are split.
    public static let maxRequestBytes: UInt64 = 2_147_483_136
    /// Piece size of `--populate-mode data` writes.
    public static let populateDataPiece: UInt64 = 64 << 20

    /// Runs `reader` against the images `config` describes; events go to `log` if given.
    ///
    /// - Complexity: O(metadata touched) memory; never proportional to the virtual size.
    public static func run<R: TraceReader>(
        config: SimulationConfig, reader: inout R, log: EventLog? = nil,
        debugMisEvictAtLookup: Int? = nil, memoryTimeline: MemoryTimeline? = nil
    ) throws -> SimulationReport {
        // The reader is type-erased here, once, so the whole replay below is specialized for the
        // policy inside this module (a generic reader type from another module would leave it
        // unspecialized: `qcow2sim-bench` measured 20× slower).
        if config.policy == OptimalPolicy.name || !config.whatIf.isEmpty {
            // Belady's MIN and the what-ifs run through a recording (`WhatIf`, `OptimalPolicy`).
            return try runViaRecording(config: config, reader: &reader, log: log, memoryTimeline: memoryTimeline)
        }
        let source = BoxedSource(reader)
        defer { reader = source.reader }
        let visitor = Runner(
            config: config, log: log, misEvict: debugMisEvictAtLookup, timeline: memoryTimeline, source: source, record: nil)
        guard let report = try PolicyRegistry.open(config.policy, visitor) else {
            throw SimulationError.usage(
                "unknown policy '\(config.policy)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
        }
        return report
    }

    /// Runs `reader` with an eviction policy type of the caller's own (`config.policy` is
    /// ignored; the report names `P.name`): how a program in another package tries a policy.
    public static func run<R: TraceReader, P: EvictionPolicy>(
        config: SimulationConfig, reader: inout R, policy: P.Type, log: EventLog? = nil,
        memoryTimeline: MemoryTimeline? = nil
    ) throws -> SimulationReport {
        var config = config
        config.policy = P.name
        if P.self == OptimalPolicy.self {
            // Belady's MIN needs the future: through a recording.
            return try runViaRecording(config: config, reader: &reader, log: log, memoryTimeline: memoryTimeline)
        }
        let source = BoxedSource(reader)
        defer { reader = source.reader }
        let runner = Runner(config: config, log: log, misEvict: nil, timeline: memoryTimeline, source: source, record: nil)
        return try runner.visit(P.self)
    }

    struct Runner: PolicyVisitor {
        let config: SimulationConfig
        let log: EventLog?
        let misEvict: Int?
        let timeline: MemoryTimeline?
        let source: RecordSource
        let record: RecordingSink?

        func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> SimulationReport {
            let t0 = monotonicSeconds()
            let chain = try ChainBuilder.build(config, policy: P.self)
            let t1 = monotonicSeconds()
            var replay = Replay(chain: chain, config: config, log: log, misEvict: misEvict, timeline: timeline)
            replay.record = record
            var report = try replay.run(source, policy: P.self)
            report.setupSeconds = t1 - t0
            report.replaySeconds = monotonicSeconds() - t1
            return report
        }
    }
}

/// A type-erased record stream: one virtual call per record (a class, not closures, so a call
/// retains nothing; `qcow2sim-bench` showed closure-context retains on every record).
class RecordSource {
    /// The next record, or nil at the end.
    func next() throws -> TraceRecord? { nil }
    /// The location of the record last returned.
    func location() -> TraceLocation { .file }
    /// The file name for messages.
    var fileName: String { "" }
    /// Fills `buffer` with the next records as long as each is a plain read (`PlainReads`:
    /// what passes every check of the engine's request loop) and returns how many; the first
    /// record that is not one is kept for `next()`, which returns it with `location()` still at
    /// it. 0: the next record, if any, is not a plain read. A source may always answer 0 (one
    /// record at a time).
    ///
    /// The engine takes batches only where nothing reads the location of a batched record (no
    /// event log): the reader runs up to a batch ahead of the request being replayed.
    /// `writes`: writes are taken too (where nothing reads their location either: an image that
    /// is not read-only, whose writes raise no located error).
    func nextPlainReads(into buffer: UnsafeMutableBufferPointer<TraceRecord>, within size: UInt64, writes: Bool) throws
        -> Int
    { 0 }
}

/// A `RecordSource` over a concrete reader.
final class BoxedSource<Reader: TraceReader>: RecordSource {
    @exclusivity(unchecked) var reader: Reader
    /// The record that ended the last batch (not a plain read), for `next()`.
    @exclusivity(unchecked) private var held: TraceRecord?
    /// The reader's error that ended the last batch, for the next call.
    @exclusivity(unchecked) private var heldError: (any Error)?
    /// The reader returned nil: it is not asked again.
    @exclusivity(unchecked) private var ended = false
    init(_ reader: Reader) { self.reader = reader }
    override func next() throws -> TraceRecord? {
        if let r = held {
            held = nil
            return r
        }
        if let e = heldError {
            heldError = nil
            throw e
        }
        if ended { return nil }
        guard let r = try reader.next() else {
            ended = true
            return nil
        }
        return r
    }
    override func location() -> TraceLocation { reader.location }
    override var fileName: String { reader.fileName }
    override func nextPlainReads(into buffer: UnsafeMutableBufferPointer<TraceRecord>, within size: UInt64, writes: Bool)
        throws -> Int
    {
        if held != nil || heldError != nil || ended { return 0 }
        let (n, end) = reader.next(
            into: buffer, admitting: PlainReads(size: size, maxLength: Simulation.maxRequestBytes, writes: writes))
        switch end {
        case .full: break
        case .ended: ended = true
        case .refused(let r): held = r
        case .failed(let error):
            // The records before the error are replayed first, as one at a time would.
            if n == 0 { throw error }
            heldError = error
        }
        return n
    }
}

/// Builds the images of a chain in their initial state (§12, populate modes).
enum ChainBuilder {
    static func build<P: EvictionPolicy>(_ config: SimulationConfig, policy: P.Type) throws -> [Qcow2Image] {
        if let path = config.imageFile { return try fromFile(path) }
        guard config.chainLength >= 1 else { throw SimulationError.usage("--chain must be at least 1") }
        if let bad = config.layers.keys.sorted().first(where: { $0 < 0 || $0 >= config.chainLength }) {
            throw SimulationError.usage("--layer \(bad): the chain has images 0 to \(config.chainLength - 1) (0 = base)")
        }
        var images: [Qcow2Image] = []
        for k in 0..<config.chainLength {
            let create: CreateOptions
            let geometry: Geometry
            let which = config.layers[k]?.createOptions != nil ? "--layer \(k): -o" : "-o"
            do {
                create = config.createOptions(layer: k)
                geometry = try create.geometry(virtualSize: config.virtualSize)
            } catch {
                throw SimulationError.usage("\(which): \(error.message)")
            }
            let image = Qcow2Image(geometry: geometry, chainIndex: k, backing: images.last)
            image.version = create.version
            let plan = config.populatePlan(layer: k)
            let preallocate = plan.populate == .full && plan.mode == .metadata
            if preallocate && k > 0 {
                // qcow2_co_create's message (qemu-img 7.2); with extended_l2=on QEMU allows it,
                // but preallocating over a backing file is not simulated.
                throw SimulationError.usage(
                    create.extendedL2
                        ? "--layer \(k): preallocation=metadata over a backing file is not simulated"
                        : "--layer \(k): Backing file and preallocation can only be used at the same time if extended_l2 is on")
            }
            try createImage(image, preallocate: preallocate, chain: images + [image], policy: P.self)
            try populate(
                image, plan.populate, plan.mode, size: config.virtualSize, layer: k, chain: images + [image], policy: P.self)
            images.append(image)
        }
        for session in config.preparation {
            guard session.image >= 0 && session.image < images.count else {
                throw SimulationError.usage("preparation session names image \(session.image), but the chain has \(images.count)")
            }
            let image = images[session.image]
            try unobservedSession(image, chain: images, policy: P.self) {
                for r in session.records { image.apply(r) }
            }
        }
        return images
    }

    /// `qemu-img create` (+ `preallocation=metadata`): clusters 0–2 through the allocator, the
    /// L1 table, then the preallocation, in one session with default caches.
    static func createImage<P: EvictionPolicy>(
        _ image: Qcow2Image, preallocate: Bool, chain: [Qcow2Image], policy: P.Type
    ) throws {
        try unobservedSession(image, chain: chain, policy: P.self, checkFailure: false) {
            allocateCreated(image, preallocate: preallocate)
        }
    }

    /// What `qemu-img create` allocates, in its order.
    private static func allocateCreated(_ image: Qcow2Image, preallocate: Bool) {
        let g = image.geometry
        _ = image.allocate(bytes: 3 * g.clusterSize)
        if g.l1Size > 0 {
            let bytes = 8 * UInt64(g.l1Size)
            image.l1Offset = image.allocate(bytes: bytes)
            image.writeCache(.refcount)
            image.syncHost()
            image.writeDirect(image.l1Offset, bytes)
        }
        if preallocate && g.virtualSize > 0 {
            var g0: UInt64 = 0
            var lastEnd: UInt64 = 0
            while g0 < g.virtualSize {
                let (n, host, metas) = image.allocateHost(g0, g.virtualSize - g0)
                for var m in metas {
                    m.prealloc = true
                    image.link(&m)
                }
                lastEnd = host + n
                g0 += n
            }
            image.syncHost()
            image.host.extend(to: lastEnd)
        }
    }

    /// A session on `image` that no report measures (creation, populate, preparation), with
    /// QEMU's default caches: its operations still go through a cache layer, whose write-backs
    /// shape the host file the trace session starts from.
    static func unobservedSession<P: EvictionPolicy>(
        _ image: Qcow2Image, chain: [Qcow2Image], policy: P.Type, checkFailure: Bool = true, _ body: () throws -> Void
    ) throws {
        let sizings = try chain.map { try openSizing($0.geometry, CacheOptions()) }
        let system = CacheSystem<P>(sizings: sizings)
        system.hosts = chain.map { $0.host }
        image.ops.drain = { system.consume($0) }
        defer { image.ops.drain = nil }
        image.open(
            l2EntrySize: sizings[image.chainIndex].l2EntrySize, readOnly: false, writethrough: false, observed: false)
        try body()
        image.close()
        if checkFailure { try Qcow2Image.throwFailure(of: [image], caches: system) }
    }

    /// The zero / data populate modes: a separate session, cache mode unsafe (§ issue 2), on
    /// chain image `layer` (an overlay's data writes copy from its backing file, as QEMU's do).
    static func populate<P: EvictionPolicy>(
        _ image: Qcow2Image, _ what: Populate, _ mode: PopulateMode, size: UInt64, layer: Int, chain: [Qcow2Image],
        policy: P.Type
    ) throws {
        let ranges: [ByteRange]
        let option = layer == 0 ? "--populate" : "--layer \(layer): populate"
        switch what {
        case .none: return
        case .full: ranges = [ByteRange(start: 0, length: size)]
        case .ranges(let r): ranges = r
        }
        if mode == .metadata {
            guard what == .full else {
                throw SimulationError.usage(
                    "--populate-mode metadata takes only --populate full (qemu-img preallocation=metadata is whole-disk); use --populate-mode zero or data for ranges"
                )
            }
            return
        }
        for r in ranges where !r.endsWithin(size) {
            throw SimulationError.usage(
                "\(option): range \(r.start):\(r.length) lies beyond the virtual size \(size)")
        }
        try unobservedSession(image, chain: chain, policy: P.self) {
            for r in ranges {
                var off = r.start
                let end = r.start + r.length
                let piece = mode == .zero ? Simulation.maxRequestBytes : Simulation.populateDataPiece
                while off < end {
                    let n = min(piece, end - off)
                    if mode == .zero {
                        image.writeZeroes(off, n, unmap: false)
                    } else {
                        image.write(off, n)
                    }
                    off += n
                }
            }
        }
    }

    static func openSizing(_ g: Geometry, _ o: CacheOptions) throws -> CacheSizing {
        do {
            return try CacheSizing(geometry: g, options: o)
        } catch {
            throw SimulationError.usage("can't open: \(error.message)")
        }
    }

    /// A chain read from a real file and its backing files (relative names resolve against the
    /// directory of the file that names them).
    static func fromFile(_ path: String) throws -> [Qcow2Image] {
        try Qcow2Image.loadChain(path, open: { try Qcow2File(path: $0) })
    }
}

/// The trace session: open every image, replay each record on the top image, close. The model
/// emits its operations into the chain's buffer; a `CacheSystem` of the run's policy consumes
/// them (and a recorder, if given, stores them).
struct Replay {
    let chain: [Qcow2Image]
    let config: SimulationConfig
    let log: EventLog?
    let misEvict: Int?
    let timeline: MemoryTimeline?
    /// Where to record the trace session's operations (nil: not recorded).
    var record: RecordingSink? = nil
    /// Told about every operation the cache layer applies (`explain`; nil: nobody).
    var observer: (any CacheObserver)? = nil

    /// The effective cache sizing of every image (base first), from the drive options.
    func sizings() throws -> [CacheSizing] {
        let driveOptions: [CacheOptions]
        do {
            driveOptions = try config.driveOptions.images(depth: chain.count)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
        var sizings: [CacheSizing] = []
        // Options are given top first; the chain is base first.
        for (k, image) in chain.enumerated() {
            let opts = driveOptions[chain.count - 1 - k]
            // Which image's options a message is about: `--drive (image 0, backing.options)`.
            let which =
                chain.count == 1 ? "" : " (image \(k), \(String(repeating: "backing.", count: chain.count - 1 - k))options)"
            do {
                sizings.append(try CacheSizing(geometry: image.geometry, options: opts))
            } catch {
                throw SimulationError.usage("--drive\(which): \(error.message)")
            }
            // qcow2_update_options_prepare checks it after sizing the caches.
            if opts.discardNoUnref && image.version < 3 {
                throw SimulationError.usage("--drive\(which): discard-no-unref is only supported since qcow2 version 3")
            }
            image.discardNoUnref = opts.discardNoUnref
        }
        return sizings
    }

    func run<P: EvictionPolicy>(_ reader: RecordSource, policy: P.Type) throws -> SimulationReport {
        let sizings = try sizings()
        guard let top = chain.last else { throw SimulationError.usage("empty chain") }
        let system = CacheSystem<P>(sizings: sizings, log: log, timeline: timeline)
        system.hosts = chain.map { $0.host }
        system.debugMisEvictAtLookup = misEvict
        system.observer = observer
        system.locate { reader.location() }
        let ops = top.ops
        var recorder: OpRecorder?
        var streamKey = ""
        if let record, let path = record.path {
            let geometries = chain.map { $0.geometry }
            streamKey = try Simulation.streamKey(config, geometries: geometries).1
            recorder = try OpRecorder(
                path: path, geometries: geometries, l2EntrySizes: sizings.map { $0.l2EntrySize },
                refcountEntrySizes: sizings.map { $0.refcountEntrySize }, streamKey: streamKey)
        }
        // Closures made here, where `P` is static, so every batch runs specialized cache code.
        if let recorder, let tap = record?.tap {
            ops.drain = { batch in
                system.consume(batch)
                recorder.consume(batch)
                tap(batch)
            }
        } else if let recorder {
            ops.drain = { batch in
                system.consume(batch)
                recorder.consume(batch)
            }
        } else if let tap = record?.tap {
            // A tap without a file (`mrc` when every point comes from the stack pass).
            ops.drain = { batch in
                system.consume(batch)
                tap(batch)
            }
        } else {
            ops.drain = { system.consume($0) }
        }
        defer { ops.drain = nil }
        // Without a recorder the request boundary hands the batch over directly (an observer,
        // `explain`, sees the boundaries as operations).
        let direct = record == nil && observer == nil
        let single = chain.count == 1
        // Reads that one MAP covers skip the operation buffer (`quickMap`).
        let quickReads = direct && single && top.takesQuickReads
        // One-segment writes without a writethrough flush: those `quickWrite` takes run their
        // operations in the cache layer as the model makes them (`DirectOps`).
        let quickWrites = quickReads && !config.cacheMode.writethrough
        let directOps = DirectOps(system: system, buffer: ops)
        for (k, image) in chain.enumerated() {
            let isTop = k == chain.count - 1
            image.open(
                l2EntrySize: sizings[k].l2EntrySize, readOnly: !isTop || config.readOnly,
                writethrough: config.cacheMode.writethrough)
        }
        for image in chain {
            image.debugReverseTaskResumption = config.debugReverseTaskResumption
            image.debugGeneralWrites = config.debugGeneralWrites
        }
        let size = top.geometry.virtualSize
        var report = SimulationReport(images: [], requests: 0, requestsByOp: [:], duration: 0, policy: config.policy)
        var firstTime: Double?
        var lastTime: Double = 0
        var index = 0
        // A raw buffer: an array's increment per request pays a uniqueness check.
        let opCounts = UnsafeMutableBufferPointer<Int>.allocate(capacity: TraceRecord.Op.allCases.count)
        opCounts.initialize(repeating: 0)
        defer { opCounts.deallocate() }
        // One flag object shared by the chain: any image's READ/WRITE raises it (§6.4, §13).
        let requestState = RequestState()
        for image in chain { image.requestState = requestState }
        // Plain reads (and writes, on an image that is not read-only) come in batches where
        // nothing reads a batched record's location (no event log; the memory timeline samples
        // per request too): one virtual call per batch instead of per record, and the batch's
        // quick reads below run without the checks every record passed in `nextPlainReads`; a
        // write ends a run of quick reads, not the batch.
        let batching = quickReads && log == nil && timeline == nil
        let batch = UnsafeMutableBufferPointer<TraceRecord>.allocate(capacity: batching ? Self.batchSize : 1)
        batch.initialize(repeating: TraceRecord(op: .read, offset: 0, length: 0))
        defer { batch.deallocate() }
        var batchCount = 0
        var batchNext = 0
        while true {
            let rec: TraceRecord
            if batching {
                // A write takes the general path below without entering the quick-read loop.
                if batchNext < batchCount && batch[batchNext].op == .read {
                    let done = try runQuickReads(
                        batch[batchNext..<batchCount], index: &index, firstTime: &firstTime, lastTime: &lastTime, top: top,
                        system: system)
                    batchNext &+= done
                    opCounts[Int(TraceRecord.Op.read.rawValue)] &+= done
                }
                if batchNext < batchCount {
                    rec = batch[batchNext]
                    batchNext &+= 1
                } else {
                    batchNext = 0
                    batchCount = try traceErrors {
                        try reader.nextPlainReads(into: batch, within: size, writes: !config.readOnly)
                    }
                    if batchCount > 0 { continue }
                    guard let r = try nextRecord(reader) else { break }
                    rec = r
                }
            } else {
                guard let r = try nextRecord(reader) else { break }
                rec = r
            }
            if rec.op != .flush && (rec.offset > size || rec.length > size - rec.offset) {
                // The end in 128 bits: a library reader's record may end past 2^64.
                let end = UInt128(rec.offset) + UInt128(rec.length)
                throw SimulationError.trace(
                    TraceError(
                        file: reader.fileName, location: reader.location(),
                        message: "request [\(rec.offset), \(end)) lies beyond the virtual size \(size)"))
            }
            if let t = rec.time {
                // Readers from files check this already (RecordMapper); library readers may not,
                // and an infinite time would run the clean timer forever.
                if let problem = TraceRecord.timeProblem(t) {
                    throw SimulationError.trace(TraceError(file: reader.fileName, location: reader.location(), message: problem))
                }
                if firstTime == nil { firstTime = t }
                if t > lastTime { lastTime = t }
            }
            if config.readOnly && rec.op != .read && rec.op != .flush {
                throw SimulationError.trace(
                    TraceError(
                        file: reader.fileName, location: reader.location(),
                        message: "\(rec.op) request on an image opened read-only"))
            }
            if quickReads && rec.op == .read && rec.length <= Simulation.maxRequestBytes,
                let q = top.quickMap(rec.offset, rec.length)
            {
                try quickRead(q, rec, index: index, top: top, system: system, getPut: TopL2GetPut(system: system))
                opCounts[Int(rec.op.rawValue)] += 1
                index += 1
                continue
            }
            // The request's boundaries: operations for a recording; direct calls otherwise (two
            // fewer operations per request: ~8 % of read-1e6's instructions).
            if direct {
                system.beginRequest(index: UInt64(index), time: rec.time)
            } else {
                ops.append(
                    MetadataOp(
                        .beginRequest, offset: UInt64(index), flag: rec.time == nil ? 0 : 1, extra: (rec.time ?? 0).bitPattern))
            }
            requestState.taskPool = false
            if quickWrites && rec.op == .write && rec.length > 0 && rec.length <= Simulation.maxRequestBytes
                && top.probeDone
            {
                // What `apply` does for it: one `write`, no flush.
                top.write(rec.offset, rec.length, quickInto: directOps)
            } else if !(rec.op == .discard && !config.discardUnmap) {
                _ = top.apply(rec)
            }
            let multi = requestState.taskPool
            let endFlag: UInt8 = (multi ? 1 : 0) | (rec.op != .read ? 2 : 0)
            if direct {
                ops.sync(into: system)
                system.endRequest(flag: endFlag)
            } else {
                ops.append(MetadataOp(.endRequest, flag: endFlag))
                ops.sync()
            }
            if !single || top.failure != nil || system.failure != nil { try Qcow2Image.throwFailure(of: chain, caches: system) }
            if multi {
                if rec.op == .read { report.multiSegmentReads += 1 } else { report.multiSegmentWrites += 1 }
            }
            opCounts[Int(rec.op.rawValue)] += 1
            index += 1
        }
        report.requests = index
        for op in TraceRecord.Op.allCases where opCounts[Int(op.rawValue)] > 0 {
            report.requestsByOp[op] = opCounts[Int(op.rawValue)]
        }
        report.duration = firstTime.map { lastTime - $0 } ?? 0
        let untimed = firstTime == nil && index > 0
        report.memorySpan = untimed ? Double(index) : lastTime
        ops.append(MetadataOp(.beginClose, offset: UInt64(index), flag: untimed ? 1 : 0))
        for image in chain.reversed() { image.close() }
        // The host files as the write-backs left them: a replay must end in the same state.
        for image in chain { image.guardHost() }
        try Qcow2Image.throwFailure(of: chain, caches: system)
        if let recorder, let record {
            let bytes = try recorder.finish()
            record.recording = (chain.map { $0.geometry }, sizings.map { $0.l2EntrySize }, recorder.count, bytes, streamKey)
        }
        // QEMU's asserts at close (no entry still pinned), in every build.
        let problems = system.finish()
        precondition(problems.isEmpty, "simulator invariant violated: \(problems.joined(separator: "; "))")
        #if DEBUG
            for image in chain {
                let problems = image.checkInvariants()
                precondition(problems.isEmpty, "simulator invariant violated: \(problems.joined(separator: "; "))")
            }
        #endif
        report.images = chain.map { image in
            let c = system.caches(image: image.chainIndex)
            var stats = image.stats
            stats.cleanTicks = c.cleanTicks
            stats.cleanTicksEvaluated = c.cleanTicksEvaluated
            return ImageReport(
                index: image.chainIndex, geometry: image.geometry, sizing: c.sizing,
                l2: c.l2.stats, refcount: c.refcount.stats, image: stats,
                hostLengthBytes: image.host.length, hostAllocatedBytes: image.host.allocatedBytes)
        }
        return report
    }

    /// The batch's reads from its start for as long as `quickMap` covers them (the first it does
    /// not leaves for the general path); returns how many ran. Out of line: in `run`'s body the
    /// per-request state lives on the stack and `quickMap` is not inlined.
    @inline(never)
    private func runQuickReads<P: EvictionPolicy>(
        _ records: Slice<UnsafeMutableBufferPointer<TraceRecord>>, index: inout Int, firstTime: inout Double?,
        lastTime: inout Double, top: Qcow2Image, system: CacheSystem<P>
    ) throws -> Int {
        // Asked once per batch: the GET and PUT of every read below skips the test for a log,
        // and runs on image 0's caches borrowed once for the batch.
        if system.takesQuietGetPut {
            return try system.withTopL2 { im, c in
                try quickReadLoop(
                    records, index: &index, firstTime: &firstTime, lastTime: &lastTime, top: top, system: system,
                    getPut: QuietTopL2GetPut(system: system, im: im, cache: c))
            }
        }
        return try quickReadLoop(
            records, index: &index, firstTime: &firstTime, lastTime: &lastTime, top: top, system: system,
            getPut: TopL2GetPut(system: system))
    }

    /// `runQuickReads`' loop, the slice's GET and PUT made by `getPut`.
    @inline(__always)
    private func quickReadLoop<P: EvictionPolicy, G: SliceGetPut>(
        _ records: Slice<UnsafeMutableBufferPointer<TraceRecord>>, index: inout Int, firstTime: inout Double?,
        lastTime: inout Double, top: Qcow2Image, system: CacheSystem<P>, getPut: G
    ) throws -> Int {
        var k = records.startIndex
        while k < records.endIndex {
            let r = records[k]
            // A write, or a read one MAP does not cover, leaves the loop for the general path.
            guard r.op == .read, let q = top.quickMap(r.offset, r.length) else { break }
            k &+= 1
            if let t = r.time {
                if firstTime == nil { firstTime = t }
                if t > lastTime { lastTime = t }
            }
            try quickRead(q, r, index: index, top: top, system: system, getPut: getPut)
            index &+= 1
        }
        return k &- records.startIndex
    }

    /// A read `quickMap` covers (`q`): the calls the general path makes for it, in order (the
    /// request's boundaries, the slice's GET and PUT, the host read), without the operation buffer.
    /// `getPut`: the slice's GET and PUT (a batch's borrowed quiet one, or `getPutTopL2`).
    @inline(__always)
    private func quickRead<P: EvictionPolicy, G: SliceGetPut>(
        _ q: (slice: UInt64, host: UInt64, normal: Bool), _ rec: TraceRecord, index: Int, top: Qcow2Image,
        system: CacheSystem<P>, getPut: G
    ) throws {
        system.beginRequest(index: UInt64(index), time: rec.time)
        // Operations still buffered (the images' opening, before the first request).
        top.ops.sync(into: system)
        if q.slice != 0 {
            getPut.getPut(q.slice)
        }
        if q.normal { top.quickReadData(q.host, rec.length) }
        system.endRequest(flag: 0)
        if top.failure != nil || system.failure != nil { try Qcow2Image.throwFailure(of: chain, caches: system) }
    }

    /// Records per batch of plain reads (`RecordSource.nextPlainReads`).
    static let batchSize = 256

    private func nextRecord(_ reader: RecordSource) throws -> TraceRecord? {
        try traceErrors { try reader.next() }
    }

    /// `body`, its trace errors as the simulation's.
    @inline(__always)
    private func traceErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as TraceError {
            throw SimulationError.trace(e)
        }
    }
}

extension Qcow2Image {
    /// Replays one request on this image (QEMU splits requests above `maxRequestBytes`).
    /// Returns whether QEMU would run it as concurrent segments.
    @discardableResult
    func apply(_ rec: TraceRecord) -> Bool {
        // Most requests: one read of at most QEMU's request limit (a zero-length read reads
        // nothing, as the loop below would).
        if rec.op == .read && rec.length <= Simulation.maxRequestBytes { return read(rec.offset, rec.length) }
        var multi = false
        switch rec.op {
        case .read, .write:
            var off = rec.offset, left = rec.length
            while left > 0 {
                let n = min(left, Simulation.maxRequestBytes)
                if rec.op == .read ? read(off, n) : write(off, n) { multi = true }
                // Writethrough: one flush per write request (FUA emulation, §7.1).
                if rec.op == .write && writethrough { flushRequest() }
                off += n
                left -= n
            }
        case .writeZeroes:
            multi = writeZeroes(rec.offset, rec.length, unmap: rec.flags.contains(.unmap))
            if writethrough { flushRequest() }
        case .discard:
            discard(rec.offset, rec.length)
        case .flush:
            flushRequest()
        }
        return multi
    }
}

/// Seconds on a monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Per-request state shared by every image of a chain.
final class RequestState {
    /// QEMU would run part of the current request through a task pool (§6.4, §13).
    @exclusivity(unchecked) var taskPool = false
}

/// How quick reads make a slice's GET and PUT (`Replay.quickRead`): a type rather than a closure,
/// so that each loop is specialized with the call inlined (a closure cost a call, its prologue
/// and the argument moves per read: ~25 instructions, callgrind, peer-1e6).
protocol SliceGetPut {
    /// An L2 GET then PUT of image 0's table (slice) at `offset`.
    func getPut(_ offset: UInt64)
}

/// `CacheSystem.getPutTopL2`: the general GET and PUT when events are logged.
struct TopL2GetPut<P: EvictionPolicy>: SliceGetPut {
    let system: CacheSystem<P>
    @inline(__always) func getPut(_ offset: UInt64) { system.getPutTopL2(offset) }
}

/// `CacheSystem.quietGetPut` on image 0's caches, borrowed for a batch (`CacheSystem.withTopL2`).
struct QuietTopL2GetPut<P: EvictionPolicy>: SliceGetPut {
    let system: CacheSystem<P>
    let im: CacheSystem<P>.ImageCaches
    let cache: MetadataCache<P>
    @inline(__always) func getPut(_ offset: UInt64) { system.quietGetPut(im, cache, offset) }
}

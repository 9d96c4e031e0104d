/// Which of an image's two metadata caches an operation addresses (QEMU's `is_l2_cache`).
public enum CacheKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The refcount-block cache (`is_l2_cache 0`).
    case refcount = 0
    /// The L2-table cache (`is_l2_cache 1`).
    case l2 = 1

    /// The other cache of the same image (the one a dependency names).
    @inline(__always) public var other: CacheKind { self == .l2 ? .refcount : .l2 }

    /// `l2` or `refcount`, as the reports spell it.
    public var description: String { self == .l2 ? "l2" : "refcount" }
}

/// One metadata operation of the image model, addressed by image, cache kind and table offset:
/// the arrow between the model (which decides *which* metadata is touched, in QEMU's order) and
/// the cache layer (which decides *whether* it is resident).
///
/// The stream of operations for a trace is a function of the trace, the image options and the
/// L2 entry size only; every cache size, policy and topology consumes the same stream
/// (`OpRecording` stores it). Cache-dependent effects are the cache layer's: events, write-backs,
/// the clean timer, and the one residency-dependent step of `update_refcount` (`freeCluster`).
///
/// The model never reads cache state. Where it reads host-file state that a table write-back may
/// have changed (the preallocation probe, SEEK_DATA, the file length), it emits `hostGuard`: a
/// replay whose write-backs differ there is reported as diverged instead of being trusted.
public struct MetadataOp: Equatable, Sendable {
    /// What the operation does.
    public enum Code: UInt8, Sendable, CaseIterable {
        /// `qcow2_cache_get` (`flag` 1) or `qcow2_cache_get_empty` (`flag` 0) of `offset`; pins.
        case get = 0
        /// `count` more GET/PUT pairs of the table at `offset`, which is resident (refcount reads
        /// of one block, §4.1–§4.2).
        case repeatGet
        /// `qcow2_cache_put` of the table at `offset`.
        case put
        /// `qcow2_cache_entry_mark_dirty` of the pinned table at `offset`.
        case markDirty
        /// `qcow2_cache_write` of one cache (QEMU's flush and write print the same event).
        case writeCache
        /// `qcow2_cache_set_dependency(kind, kind.other)`.
        case setDependency
        /// `qcow2_cache_depends_on_flush(kind)`.
        case dependsOnFlush
        /// A host cluster at `offset` reached refcount 0 in `update_refcount`, which holds the
        /// refcount block at `extra` (0: none): if the refcount cache holds the freed cluster,
        /// the held block is released and the cached table discarded; an L2 table there is
        /// discarded too (§4.4).
        case freeCluster
        /// `update_refcount` goes on with the refcount block at `offset`: GET it again if a
        /// `freeCluster` released it.
        case regetIfDropped
        /// `update_refcount` releases its held block at `offset` (skipped if `freeCluster`
        /// released it already).
        case putHeld
        /// The model is about to read host-file state that table write-backs change. `extra`
        /// receives the cache layer's digest of the new tables written back so far.
        case hostGuard
        /// A trace request begins: `offset` = record index, `extra` = time bits (`flag` 1) or
        /// none (`flag` 0).
        case beginRequest
        /// The request ended; `flag` bit 0: it ran as concurrent segments, bit 1: a write.
        case endRequest
        /// A session opens on image `image` (`flag` 1: read-only) at time bits `extra`.
        case open
        /// The trace session's close begins (event log marker).
        case beginClose
        /// Events from here on belong to coroutine `count` (0: the request's own).
        case task
        /// A read task pool starts holding back backing tasks' events (§13).
        case deferBegin
        /// A backing task starts; its events are captured.
        case captureBegin
        /// The backing task ended: its events up to its first I/O are kept, the rest held back.
        case captureEnd
        /// The pool is waited for: held-back events are emitted in submission order.
        case deferEnd
    }

    /// What the operation does.
    public var code: Code
    /// Which cache (where meaningful).
    public var kind: CacheKind
    /// Code-specific flag (see `Code`).
    public var flag: UInt8
    /// Chain position of the image (0 = base).
    public var image: UInt16
    /// Code-specific count.
    public var count: UInt32
    /// Table offset (or record index).
    public var offset: UInt64
    /// Code-specific second operand.
    public var extra: UInt64

    /// An operation.
    @inline(__always)
    public init(
        _ code: Code, _ kind: CacheKind = .l2, image: Int = 0, offset: UInt64 = 0, flag: UInt8 = 0, count: UInt32 = 0,
        extra: UInt64 = 0
    ) {
        self.code = code
        self.kind = kind
        self.flag = flag
        self.image = UInt16(truncatingIfNeeded: image)
        self.count = count
        self.offset = offset
        self.extra = extra
    }
}

/// Receives the model's operations in batches, in order. The live cache layer, a recorder and a
/// replay of a recording are consumers.
public protocol MetadataOpConsumer: AnyObject {
    /// Processes `ops` in order. A consumer may fill in `hostGuard` operations' `extra`.
    func consume(_ ops: UnsafeMutableBufferPointer<MetadataOp>)
}

/// Where the model's quick write sends its operations (`Qcow2Image.quickWrite(_:_:into:)`): the
/// chain's `OpBuffer`, or, in a live run of one image without a recorder or an observer, the
/// cache layer itself (`DirectOps`), so that each operation runs where it is made, without being
/// stored and dispatched again.
protocol OpSink {
    /// Processes or queues one operation, after every earlier one.
    func append(_ op: MetadataOp)
    /// `get`, then (`dirty`) a MARK_DIRTY of its table, then its PUT: a GET released right away
    /// (MAP's slice, a refcount read or update, a LINK).
    func appendReleased(_ get: MetadataOp, dirty: Bool)
    /// What `Qcow2Image.syncHost` does: the cache layer is then up to date with every operation
    /// so far (a buffer hands itself over; a direct sink is up to date already).
    func sync()
    /// The model called a helper that wrote to the chain's buffer (the general allocation or
    /// link, the first block-status probe): a direct sink hands that buffer to the cache layer
    /// before it processes anything more; a buffer does nothing (the operations are in order).
    func catchUp()
}

extension OpBuffer: OpSink {
    @inline(__always) func catchUp() {}

    /// The three (or two) operations, which the cache layer's batch loop fuses again.
    @inline(__always) func appendReleased(_ get: MetadataOp, dirty: Bool) {
        append(get)
        if dirty { append(MetadataOp(.markDirty, get.kind, image: Int(get.image), offset: get.offset)) }
        append(MetadataOp(.put, get.kind, image: Int(get.image), offset: get.offset))
    }
}

/// Where a chain's model writes its operations: a growable buffer, handed to the consumer at
/// request boundaries and before the model reads host-file state (`sync`). Batching keeps the
/// model free of any cache type (no generic parameter, one dynamic call per batch).
public final class OpBuffer {
    @exclusivity(unchecked) private var ops: UnsafeMutablePointer<MetadataOp>
    @exclusivity(unchecked) private var capacity: Int
    @exclusivity(unchecked) private(set) var count = 0
    /// The consumer (nil: operations are dropped). Consumers do not hold the buffer back.
    public var consumer: (any MetadataOpConsumer)? {
        didSet { drain = consumer.map { c in { c.consume($0) } } }
    }
    /// What `sync` calls. The engine sets it to a closure made where the cache layer's policy is
    /// a static type, so the hand-over runs specialized code (a call through the existential
    /// `consumer` would run the cache layer's unspecialized generic body).
    @exclusivity(unchecked) var drain: ((UnsafeMutableBufferPointer<MetadataOp>) -> Void)?

    /// An empty buffer.
    public init(capacity: Int = 4096) {
        self.capacity = max(capacity, 16)
        ops = UnsafeMutablePointer<MetadataOp>.allocate(capacity: self.capacity)
    }

    deinit { ops.deallocate() }

    /// Appends one operation; a full buffer is handed over first.
    @inline(__always)
    func append(_ op: MetadataOp) {
        if count == capacity { sync() }
        (ops + count).initialize(to: op)
        count += 1
    }

    /// Hands every buffered operation to the consumer.
    @inline(__always)
    func sync() {
        guard count > 0 else { return }
        let n = count
        count = 0
        drain?(UnsafeMutableBufferPointer(start: ops, count: n))
    }

    /// Hands every buffered operation to `consumer` directly: the engine's per-request hand-over,
    /// where the consumer's type is static (`drain` is a closure load, a retain/release pair).
    @inline(__always)
    func sync<C: MetadataOpConsumer>(into consumer: C) {
        guard count > 0 else { return }
        let n = count
        count = 0
        consumer.consume(UnsafeMutableBufferPointer(start: ops, count: n))
    }

    /// Appends a `hostGuard` and hands the buffer over: the host file is then as the cache
    /// layer's write-backs so far left it.
    func guardHost(image: Int) {
        append(MetadataOp(.hostGuard, image: image))
        sync()
    }
}

/// QEMU 7.2's policy (`qcow2_cache_get`): the victim is the unpinned entry with the smallest LRU
/// stamp, and the stamp is taken when the last user releases the entry (PUT), not at lookup.
/// Hits do not reorder. Stamps are unique, so this is "least recently released".
public struct QemuPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "qemu"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "QEMU 7.2: least recently released (stamp at PUT), start-index scan"
    private var order: RecencyList
    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int) { order = RecencyList(capacity: capacity) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ i: Int) { order.moveToBack(i) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ i: Int) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ i: Int) { order.moveToBack(i) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ i: Int) { order.remove(i) }
    /// A repeated hit (and release) of one slot moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ i: Int, count: Int, released: Bool) {
        guard count > 0 else { return }
        hit(i)
        if released { self.released(i) }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public func victim(pins: UnsafeBufferPointer<Int32>) -> Int? { order.firstUnpinned(pins) }
}

/// Textbook LRU: recency is updated at every lookup (hit or fill), as a naive simulator would.
public struct LRUPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "lru"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "plain LRU: recency updated on every lookup"
    private var order: RecencyList
    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int) { order = RecencyList(capacity: capacity) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ i: Int) { order.moveToBack(i) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ i: Int) { order.moveToBack(i) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ i: Int) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ i: Int) { order.remove(i) }
    /// A repeated hit (and release) of one slot moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ i: Int, count: Int, released: Bool) {
        guard count > 0 else { return }
        hit(i)
        if released { self.released(i) }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public func victim(pins: UnsafeBufferPointer<Int32>) -> Int? { order.firstUnpinned(pins) }
}

/// First in, first out: the oldest fill is replaced; hits and releases change nothing.
public struct FIFOPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "fifo"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "FIFO: replace the entry filled longest ago"
    private var order: RecencyList
    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int) { order = RecencyList(capacity: capacity) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ i: Int) { order.moveToBack(i) }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ i: Int) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ i: Int) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ i: Int) { order.remove(i) }
    /// A repeated hit (and release) of one slot moves nothing further: one is enough.
    @inline(__always) public mutating func repeatedHits(_ i: Int, count: Int, released: Bool) {
        guard count > 0 else { return }
        hit(i)
        if released { self.released(i) }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public func victim(pins: UnsafeBufferPointer<Int32>) -> Int? { order.firstUnpinned(pins) }
}

/// Runs generic code for a policy chosen by name at run time, so the per-request loop is
/// specialized and holds no existential.
public protocol PolicyVisitor {
    /// What the visit produces.
    associatedtype Output
    /// Called with the policy type.
    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> Output
}

/// The policies qcow2sim ships: one line each.
public enum PolicyRegistry {
    /// Every policy type, in `--help` order.
    public static var all: [any EvictionPolicy.Type] { [QemuPolicy.self, LRUPolicy.self, FIFOPolicy.self] }

    /// The names accepted by `--policy`.
    public static var names: [String] { all.map { $0.name } }

    /// Calls `visitor` with the policy named `name`, or returns nil for an unknown name.
    public static func open<V: PolicyVisitor>(_ name: String, _ visitor: V) throws -> V.Output? {
        switch name {
        case QemuPolicy.name: return try visitor.visit(QemuPolicy.self)
        case LRUPolicy.name: return try visitor.visit(LRUPolicy.self)
        case FIFOPolicy.name: return try visitor.visit(FIFOPolicy.self)
        default: return nil
        }
    }
}

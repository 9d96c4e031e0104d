/// Runs generic code for a policy chosen by name at run time, so the per-request loop is
/// specialized and holds no existential.
public protocol PolicyVisitor {
    /// What the visit produces.
    associatedtype Output
    /// Called with the policy type.
    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> Output
}

/// The policies qcow2sim ships. A new policy is one file under `Cache/Policies` and one row here
/// (plus, for speed, one case in `open`).
public enum PolicyRegistry {
    /// Every policy type, in `--help` order.
    public static let all: [any EvictionPolicy.Type] = [
        QemuPolicy.self,
        LRUPolicy.self,
        FIFOPolicy.self,
        ClockPolicy.self,
        TwoQueuePolicy.self,
        ARCPolicy.self,
        S3FIFOPolicy.self,
        SievePolicy.self,
        // Needs the future: `Simulation.run` / `replay` give it a recording's next uses.
        OptimalPolicy.self,
    ]

    /// The names accepted by `--policy`.
    public static var names: [String] { all.map { $0.name } }

    /// The policy type named `name`, or nil.
    public static func policy(named name: String) -> (any EvictionPolicy.Type)? { all.first { $0.name == name } }

    /// Calls `visitor` with the policy named `name`, or returns nil for an unknown name.
    public static func open<V: PolicyVisitor>(_ name: String, _ visitor: V) throws -> V.Output? {
        guard let p = policy(named: name) else { return nil }
        // Concrete calls, so the compiler specializes the replay for each shipped policy: a call
        // through the opened existential runs unspecialized generic code (with 9 policies the
        // optimizer stopped specializing `all` on its own; write50-1e6 ran about 20 % slower).
        // A policy missing here still runs, unspecialized.
        switch ObjectIdentifier(p) {
        case ObjectIdentifier(QemuPolicy.self): return try visitor.visit(QemuPolicy.self)
        case ObjectIdentifier(LRUPolicy.self): return try visitor.visit(LRUPolicy.self)
        case ObjectIdentifier(FIFOPolicy.self): return try visitor.visit(FIFOPolicy.self)
        case ObjectIdentifier(ClockPolicy.self): return try visitor.visit(ClockPolicy.self)
        case ObjectIdentifier(TwoQueuePolicy.self): return try visitor.visit(TwoQueuePolicy.self)
        case ObjectIdentifier(ARCPolicy.self): return try visitor.visit(ARCPolicy.self)
        case ObjectIdentifier(S3FIFOPolicy.self): return try visitor.visit(S3FIFOPolicy.self)
        case ObjectIdentifier(SievePolicy.self): return try visitor.visit(SievePolicy.self)
        case ObjectIdentifier(OptimalPolicy.self): return try visitor.visit(OptimalPolicy.self)
        default: return try visitor.visit(p)
        }
    }
}

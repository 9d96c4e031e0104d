/// Runs generic code for a policy chosen by name at run time, so the per-request loop is
/// specialized and holds no existential.
public protocol PolicyVisitor {
    /// What the visit produces.
    associatedtype Output
    /// Called with the policy type.
    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> Output
}

/// The policies qcow2sim ships. A new policy is one file under `Cache/Policies` and one row here.
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
        return try visitor.visit(p)
    }
}

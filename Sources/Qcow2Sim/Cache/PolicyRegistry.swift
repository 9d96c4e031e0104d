/// Runs generic code for a policy chosen by name at run time, so the per-request loop is
/// specialized and holds no existential.
public protocol PolicyVisitor {
    /// What the visit produces.
    associatedtype Output
    /// Called with the policy type.
    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> Output
}

/// Visits the rows of the registry's table.
protocol PolicyRowVisitor {
    /// One row: a policy type. Return false to stop.
    mutating func row<P: EvictionPolicy>(_ policy: P.Type) throws -> Bool
}

/// The policies qcow2sim ships. A new policy is one file under `Cache/Policies` and one row in
/// `table`.
public enum PolicyRegistry {
    /// The table, in `--help` order. Each row names its type statically, so a visit through the
    /// registry runs code specialized for the policy (an existential metatype would not be).
    static func table<V: PolicyRowVisitor>(_ v: inout V) throws {
        guard try v.row(QemuPolicy.self) else { return }
        guard try v.row(LRUPolicy.self) else { return }
        guard try v.row(FIFOPolicy.self) else { return }
        guard try v.row(ClockPolicy.self) else { return }
        guard try v.row(TwoQueuePolicy.self) else { return }
        guard try v.row(ARCPolicy.self) else { return }
        guard try v.row(S3FIFOPolicy.self) else { return }
        guard try v.row(SievePolicy.self) else { return }
        // Needs the future: `Simulation.run` / `replay` give it a recording's next uses.
        guard try v.row(OptimalPolicy.self) else { return }
    }

    /// Every policy type, in `--help` order.
    public static var all: [any EvictionPolicy.Type] {
        struct Collect: PolicyRowVisitor {
            var types: [any EvictionPolicy.Type] = []
            mutating func row<P: EvictionPolicy>(_ policy: P.Type) -> Bool {
                types.append(policy)
                return true
            }
        }
        var c = Collect()
        try? table(&c)
        return c.types
    }

    /// The names accepted by `--policy`.
    public static var names: [String] { all.map { $0.name } }

    /// The policy type named `name`, or nil.
    public static func policy(named name: String) -> (any EvictionPolicy.Type)? { all.first { $0.name == name } }

    /// Calls `visitor` with the policy named `name`, or returns nil for an unknown name.
    public static func open<V: PolicyVisitor>(_ name: String, _ visitor: V) throws -> V.Output? {
        var o = PolicyOpener(name: name, visitor: visitor)
        try table(&o)
        return o.output
    }
}

/// Visits the row named `name` with `visitor`.
struct PolicyOpener<V: PolicyVisitor>: PolicyRowVisitor {
    let name: String
    let visitor: V
    var output: V.Output? = nil
    mutating func row<P: EvictionPolicy>(_ policy: P.Type) throws -> Bool {
        guard P.name == name else { return true }
        output = try visitor.visit(P.self)
        return false
    }
}

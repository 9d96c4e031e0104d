import Qcow2Sim
import TraceKit
import Validation

/// The one seam between `validate` and the simulator: the expected event log and the effective
/// cache sizes of a run.
///
/// `Simulation.run(config:reader:log:)` has not landed in Qcow2Sim yet; when it does, this body
/// becomes: create `EventLog(retainEvents: true)`, run the simulation over an
/// `ArrayTraceReader(input.records)`, and map the report's per-image entry sizes and counts to
/// `ImageCacheSizes`.
enum ValidateSimulation {
    /// The simulated log and cache sizes, or nil when this build has no simulator.
    static func expected(config: SimulationConfig, input: ValidationInput) throws -> (log: EventLog, sizes: [ImageCacheSizes]?)? {
        nil
    }
}

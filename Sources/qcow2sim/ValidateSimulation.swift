import Qcow2Sim
import TraceKit
import Validation

/// The one seam between `validate` and the simulator: the expected event log and the effective
/// cache sizes of a run.
enum ValidateSimulation {
    /// Runs `Simulation.run` over the records `validate` replays and returns its event log
    /// (requests marked, multi-segment requests flagged) and each image's effective cache sizes.
    /// `misEvictAtLookup` is the simulator's test-only switch that changes one eviction.
    static func expected(config: SimulationConfig, input: ValidationInput, misEvictAtLookup: Int? = nil) throws
        -> (log: EventLog, sizes: [ImageCacheSizes]?)?
    {
        let log = EventLog(retainEvents: true)
        var reader = ArrayTraceReader(input.records, fileName: input.fileName)
        let report = try Simulation.run(config: config, reader: &reader, log: log, debugMisEvictAtLookup: misEvictAtLookup)
        let sizes = report.images.map {
            ImageCacheSizes(
                l2EntryBytes: $0.sizing.l2EntrySize, l2Entries: $0.sizing.l2Entries, refcountEntryBytes: $0.sizing.refcountEntrySize,
                refcountEntries: $0.sizing.refcountEntries)
        }
        return (log, sizes)
    }
}

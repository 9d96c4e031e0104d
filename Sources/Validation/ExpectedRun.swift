import Qcow2Sim
import TraceKit

/// The simulator's side of a validation: the expected event log and each image's effective
/// cache sizes, for the records `validate` replays.
public enum ExpectedRun {
    /// Runs `Simulation.run` over `input` and returns its event log (requests marked,
    /// multi-segment requests flagged) and the cache sizes per image. `misEvictAtLookup` is the
    /// simulator's test-only switch that changes one eviction.
    public static func simulate(config: SimulationConfig, input: ValidationInput, misEvictAtLookup: Int? = nil) throws
        -> (log: EventLog, sizes: [ImageCacheSizes])
    {
        let log = EventLog(retainEvents: true)
        var reader = ArrayTraceReader(input.records, fileName: input.fileName)
        let report = try Simulation.run(config: config, reader: &reader, log: log, debugMisEvictAtLookup: misEvictAtLookup)
        let sizes = report.images.map {
            ImageCacheSizes(
                l2EntryBytes: $0.sizing.l2EntrySize, l2Entries: $0.sizing.l2Entries,
                refcountEntryBytes: $0.sizing.refcountEntrySize, refcountEntries: $0.sizing.refcountEntries)
        }
        return (log, sizes)
    }
}

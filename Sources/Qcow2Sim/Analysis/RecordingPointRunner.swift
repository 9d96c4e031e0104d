import Foundation
import TraceKit

/// Computes a ``PointGroup`` from one recording of its operation stream: the group's first point
/// runs live and is recorded (`Simulation.record`); every other point replays the recording
/// (`Simulation.replay`), all in one pass over it. The points of a group share the trace, the
/// image options and the L2 entry sizes, so the stream is theirs too; a point whose replay
/// reports a divergence (its write-backs left the host file otherwise where the model read it)
/// or whose options the replay refuses runs live instead. Every report equals
/// `Simulation.run`'s for its point.
public struct RecordingPointRunner: PointRunner {
    /// Where recordings go while a group runs (removed after).
    public var directory: String

    /// A runner recording into `directory` (default: the temporary directory).
    public init(directory: String = NSTemporaryDirectory()) { self.directory = directory }

    /// Witness of the `PointRunner` requirement: one batch per group (one recording each).
    public func batches(_ group: PointGroup) -> [PointGroup] { [group] }

    /// Witness of the `PointRunner` requirement.
    public func run<R: TraceReader>(_ batch: PointGroup, open: () throws -> R) throws -> [SimulationReport] {
        guard let first = batch.points.first else { return [] }
        if batch.points.count == 1 || first.invalid != nil { return try LivePointRunner().run(batch, open: open) }
        let path = (directory as NSString).appendingPathComponent(
            "qcow2sim-\(getpid())-\(UUID().uuidString)-t\(batch.trace)-p\(first.index).ops")
        defer { unlink(path) }
        let recorded: (report: SimulationReport, recording: OpRecording)
        do {
            var reader = try open()
            recorded = try Simulation.record(config: first.config, reader: &reader, to: path)
        } catch {
            throw SweepFailure(point: first.index, error: error)
        }
        let rest = Array(batch.points.dropFirst())
        var outcomes: [ReplayOutcome?]
        do {
            outcomes = try Simulation.replay(recorded.recording, configs: rest.map(\.config)).map { Optional($0) }
        } catch {
            // A point the replay refuses (its options, its stream key): each runs by itself, so
            // an error is reported for its own point, as `simulate` would report it.
            outcomes = rest.map { _ in nil }
        }
        var reports = [recorded.report]
        for (p, outcome) in zip(rest, outcomes) {
            if let report = outcome?.report {
                reports.append(report)
            } else {
                reports += try LivePointRunner().run(PointGroup(trace: batch.trace, points: [p]), open: open)
            }
        }
        return reports
    }
}

import Foundation
import Qcow2Sim
import QcowTestSupport
import TraceKit

/// Helpers shared by the spec test-vector tests.
enum Vector {
    /// Runs `ops` (qemu-io style: "write 0 4k") through a simulated chain and returns the event
    /// lines in QEMU's format without `co`/`image` (or with `image N` when asked).
    static func events(
        size: UInt64 = 1 << 30, create: String = "", chain: Int = 1, populate: Populate = .none,
        drive: String = "", mode: CacheMode = .writeback, readOnly: Bool = false, ops: [String],
        withImage: Bool = false, preparing: [(Int, [String])] = []
    ) throws -> [String] {
        var config = SimulationConfig(
            virtualSize: size, createOptions: try CreateOptions(parsing: create), chainLength: chain, populate: populate,
            driveOptions: try DriveOptions(parsing: drive),
            cacheMode: mode)
        config.readOnly = readOnly
        config.preparation = preparing.map { PreparationSession(image: $0.0, records: $0.1.map(TraceText.record)) }
        let log = EventLog()
        var reader = ArrayTraceReader(ops.map(TraceText.record))
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        return log.events.map { $0.line(includeImage: withImage) }
    }
}

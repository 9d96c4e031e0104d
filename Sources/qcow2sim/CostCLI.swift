import Foundation
import Qcow2Sim

/// `--cost FILE` for simulate, sweep, compare and advise.
enum CostCLI {
    /// The cost model `--cost` names, or nil; a bad file is a ``CostFileError`` (65, 66).
    static func load(_ a: Arguments) throws -> CostModel? {
        try a.value("--cost").map { try CostModel.load(path: $0) }
    }

    /// The text report's line for a prediction.
    static func textLine(_ p: Prediction, cost: CostModel) -> String {
        String(
            format: "\npredicted at queue depth 1 (cost model %@): %.0f IOPS, %.1f µs per request\n", cost.source ?? "given",
            p.iops, p.latencyUs)
    }
}

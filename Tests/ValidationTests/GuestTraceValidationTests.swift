import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// Issue 5: the recorded guest trace in Traces/ runs through the simulator and real qemu-io with
/// identical events, with QEMU's default caches (the recorded VM's) and with a 64 KiB L2 cache
/// that evicts. About 1 s per configuration.
@Suite("guest-ext4 recording vs qemu-io", .requires(QemuTools.io))
struct GuestTraceValidationTests {
    static let csv = Repository.path("Traces/guest-ext4.trace.csv")

    static func input() throws -> ValidationInput {
        var options = TraceOptions()
        options.diskSize = 8 << 30
        var reader = try TraceFile.open(path: csv, options: options)
        return try ValidationInput(reading: &reader)
    }

    @Test("identical events", arguments: ["", "l2-cache-size=64K"])
    func identical(drive: String) throws {
        // As recorded: 8 GiB, 64 KiB clusters, discard=unmap, cache=writeback (the defaults).
        let config = SimulationConfig(
            virtualSize: 8 << 30, createOptions: try CreateOptions(parsing: "cluster_size=64K"),
            driveOptions: try DriveOptions(parsing: drive))
        let input = try Self.input()
        #expect(input.records.count == 2883)
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        let report = try Validator(runner: QemuTools.runner).validate(config: config, input: input, expected: log, sizes: sizes)
        // The guest's multi-cluster writes run as task pools: where their tasks' I/O completed in
        // another order the run is `equivalent` (§13); nothing may diverge.
        #expect(report.outcome != .divergent, "\(drive.isEmpty ? "default caches" : drive): \(report.text())")
        #expect(report.images.allSatisfy { $0.simulated == $0.qemu })
        #expect(report.qemuEvents == (drive.isEmpty ? 13335 : 15986))
        if drive.isEmpty {
            // Default caches hold all 16 L2 tables: misses are first uses only, as in the VM.
            #expect(report.images[0].qemu.l2.misses == 16 && report.images[0].qemu.l2.evictions == 0)
        } else {
            #expect(report.images[0].qemu.l2.evictions > 0)
        }
    }
}

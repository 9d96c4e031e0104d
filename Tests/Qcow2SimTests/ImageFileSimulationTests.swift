import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// `--image FILE`: the simulation starts from a real image and predicts what qemu-io prints.
@Suite(.requires(QemuTools.img))
struct ImageFileSimulationTests {
    static func makeImage(_ extra: [String] = []) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-img-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("t.qcow2").path
        try QemuTools.create(path, size: "1G", options: "", extra: extra)
        return path
    }

    @Test func freshImageFileBehavesLikeTV1() throws {
        // TV1 on an image read from disk instead of created by the simulator.
        let path = try Self.makeImage()
        var config = SimulationConfig(virtualSize: 1 << 30)
        config.imageFile = path
        let log = EventLog()
        var reader = ArrayTraceReader([
            TraceRecord(op: .write, offset: 0, length: 4096), TraceRecord(op: .read, offset: 0, length: 4096),
        ])
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        #expect(log.count == 53)
        #expect(log.events.map { $0.line(includeImage: false) } == SpecVectorTests.tv1)
    }

    @Test func l2TableBeyondTheFileIsRefusedAtOpen() throws {
        let path = try Self.makeImage()
        // L1 entry 0 (at 0x30000 in a fresh 1 GiB / 64 KiB image) -> a table far past the end.
        let h = try #require(FileHandle(forUpdatingAtPath: path))
        try h.seek(toOffset: 0x30000)
        h.write(Data([0x80, 0, 0, 0, 0x10, 0, 0, 0]))
        try h.close()
        var config = SimulationConfig(virtualSize: 1 << 30)
        config.imageFile = path
        var reader = ArrayTraceReader([TraceRecord(op: .read, offset: 0, length: 4096)])
        #expect(
            throws: SimulationError.image(
                "\(path): byte 196608: error: L1 entry 0 points to an L2 table at 0x10000000 that is not a whole cluster inside the file (length 0x30010)",
                65)
        ) {
            try Simulation.run(config: config, reader: &reader)
        }
    }
}

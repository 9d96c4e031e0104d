import Foundation
import Qcow2Sim
import Testing
import TraceKit
import Validation

/// Issue 15 items 3–7 against real QEMU: the native `ZU` op, cache modes, the clean timer in
/// validate, per-layer images and qcow2 v2, QEMU versions.
@Suite("fidelity modes vs QEMU", .enabled(if: Qemu.hasQemuIO, Qemu.skipIO))
struct FidelityModesTests {
    let validator = Validator(runner: Qemu.runner)

    /// Records of a native CSV text (the reader the CLI uses).
    static func native(_ text: String) throws -> ValidationInput {
        var reader = NativeTraceReader(bytes: Array(text.utf8), fileName: "t.csv")
        return try ValidationInput(reading: &reader)
    }

    static func run(_ v: Validator, _ config: SimulationConfig, _ input: ValidationInput) throws -> ValidationReport {
        let (log, sizes) = try ExpectedRun.simulate(config: config, input: input, misEvictAtLookup: nil)
        return try v.validate(config: config, input: input, expected: log, sizes: sizes)
    }

    @Test("native ZU reaches qemu-io as write -z -u: identical, and different from Z on allocated clusters")
    func writeZeroesUnmap() throws {
        let config = SimulationConfig(
            virtualSize: 64 << 20, populate: .ranges([ByteRange(start: 0, length: 1 << 20)]), populateMode: .data)
        // Whole allocated clusters: with unmap they are freed (refcount traffic), without they
        // only get the zero flag (qcow2_subcluster_zeroize, QCOW_OFLAG_ZERO).
        let unmap = try Self.native("ZU,0,256K\nR,0,64K\nzu,512K,64K\nW,4M,4K\nZU,4M,64K\nF,0,0\n")
        #expect(unmap.records[0].flags == .unmap && unmap.records[2].flags == .unmap)
        let plain = try Self.native("Z,0,256K\nR,0,64K\nz,512K,64K\nW,4M,4K\nZ,4M,64K\nF,0,0\n")
        let a = try Self.run(validator, config, unmap)
        #expect(a.identical, "\(a.text())")
        let b = try Self.run(validator, config, plain)
        #expect(b.identical, "\(b.text())")
        // qemu-io 7.2's own refcount-block lookups differ, so the flag reaches QEMU: 34 with
        // unmap, 44 without.
        #expect(a.images[0].qemu.refcount.lookups == 34)
        #expect(b.images[0].qemu.refcount.lookups == 44)
    }
}

/// Cache modes against qemu-io (`-t MODE`).
@Suite("cache modes vs qemu-io", .enabled(if: Qemu.hasQemuIO, Qemu.skipIO))
struct CacheModeTests {
    @Test(
        "every cache mode is identical to qemu-io -t MODE; none and unsafe write back like writeback, directsync like writethrough",
        arguments: [("", ""), ("cluster_size=4096", "l2-cache-size=16K"), ("cluster_size=32K,extended_l2=on", "l2-cache-size=16K")])
    func modes(create: String, drive: String) throws {
        let v = Validator(runner: Qemu.runner)
        let size: UInt64 = 256 << 20
        let cluster: UInt64 = create.contains("4096") ? 4096 : create.contains("32K") ? 32768 : 65536
        let recs = SimulatorValidationTests.randomTrace(seed: 15, count: 200, size: size, cluster: cluster)
        let input = ValidationInput(records: recs, fileName: "modes")
        var qemuEvents: [CacheMode: [CacheEvent]] = [:]
        for mode in CacheMode.allCases {
            let config = SimulationConfig(virtualSize: size, createOptions: create, driveOptions: drive, cacheMode: mode)
            let report = try FidelityModesTests.run(v, config, input)
            #expect(report.identical, "\(mode):\n\(report.text())")
            #expect(report.argv.contains(mode.rawValue))
            let replay = try v.replay(config: config, input: input)
            qemuEvents[mode] = replay.log.events
        }
        // QEMU's own streams: the O_DIRECT and no-flush variants change nothing in the caches.
        #expect(qemuEvents[.none] == qemuEvents[.writeback])
        #expect(qemuEvents[.unsafe] == qemuEvents[.writeback])
        #expect(qemuEvents[.directsync] == qemuEvents[.writethrough])
        #expect(qemuEvents[.writethrough] != qemuEvents[.writeback])
    }
}

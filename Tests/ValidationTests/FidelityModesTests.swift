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
        // qemu-io 7.2's own refcount-block lookups differ: the flag reaches QEMU (34 with unmap,
        // 44 without, where the zero-flagged clusters stay allocated and the later write at 4M
        // searches past them).
        #expect(a.images[0].qemu.refcount.lookups == 34)
        #expect(b.images[0].qemu.refcount.lookups == 44)
    }
}

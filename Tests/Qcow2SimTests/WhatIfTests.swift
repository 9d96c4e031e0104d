import Foundation
import Qcow2Sim
import Testing
import TraceKit

/// Issue 11 item 2: what-ifs (proposals QEMU never merged), apart from QEMU's own options.
@Suite struct WhatIfTests {
    static let traces = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Traces")

    @Test func fullCoverageIsQemusMaxL2() throws {
        // 20 GiB of 64 KiB clusters: 327 680 clusters × 8-byte L2 entries = 2 621 440 bytes
        // (`max_l2_cache` in qcow2_update_options_prepare), a whole number of clusters.
        let g = Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 20 << 30)
        #expect(WhatIf.fullCoverage(.l2, g) == 2_621_440)
        // 16-bit refcounts: 32 768 per 64 KiB block, so 10 blocks cover 327 680 clusters.
        #expect(WhatIf.fullCoverage(.refcount, g) == 10 * 65536)
        var w = WhatIf()
        try w.set("l2-cache-size=50%")
        // Half of 2 621 440 is 1 310 720 = 320 slices of 4 KiB: 1280K.
        #expect(try w.resolvedDriveOptions("", geometries: [g]) == "l2-cache-size=1310720")
        // 33 % is 865 075.2 bytes, rounded up to 212 slices (868 352 bytes).
        var w33 = WhatIf()
        try w33.set("l2-cache-size=33%")
        try w33.set("refcount-cache-size=25%")
        #expect(
            try w33.resolvedDriveOptions("cache-clean-interval=0", geometries: [g])
                == "cache-clean-interval=0,l2-cache-size=868352,refcount-cache-size=196608")
        // A chain, top first: the backing image gets its own share of its own size.
        let small = Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30)
        #expect(try w.resolvedDriveOptions("", geometries: [small, g]) == "l2-cache-size=1310720,backing.l2-cache-size=65536")
    }

    @Test func badSettingsAreUsageErrors() throws {
        var w = WhatIf()
        #expect(throws: SimulationError.usage("--what-if l2-cache-size=50: expected a percentage above 0, such as 50%")) {
            try w.set("l2-cache-size=50")
        }
        #expect(
            throws: SimulationError.usage(
                "--what-if cache-size=1: unknown key 'cache-size' (expected one of: l2-cache-size, refcount-cache-size, cache-scope, chain-l2-cache-size, chain-refcount-cache-size)"
            )
        ) { try w.set("cache-size=1") }
        #expect(throws: SimulationError.usage("--what-if cache-scope=disk: expected cache-scope=image or cache-scope=chain")) {
            try w.set("cache-scope=disk")
        }
        try w.set("l2-cache-size=50%")
        let g = Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30)
        #expect(throws: SimulationError.usage("--what-if l2-cache-size=50%: --drive sets l2-cache-size too")) {
            _ = try w.resolvedDriveOptions("l2-cache-size=1M", geometries: [g])
        }
    }

    /// Issue 11: `--what-if l2-cache-size=50%` on a 20 GiB image with 64 KiB clusters gives the
    /// same counts as `--drive l2-cache-size=1280K`.
    @Test func halfCoverageEqualsTheByteOption() throws {
        let trace = Self.traces.appendingPathComponent("seed-uniform-20G-20000.csv").path
        var byPercent = SimulationConfig(virtualSize: 20 << 30, createOptions: "cluster_size=64K", populate: .full)
        try byPercent.whatIf.set("l2-cache-size=50%")
        var r1 = try TraceFile.open(path: trace)
        let a = try Simulation.run(config: byPercent, reader: &r1)
        let byBytes = SimulationConfig(
            virtualSize: 20 << 30, createOptions: "cluster_size=64K", populate: .full, driveOptions: "l2-cache-size=1280K")
        var r2 = try TraceFile.open(path: trace)
        let b = try Simulation.run(config: byBytes, reader: &r2)
        #expect(a.images[0].sizing == b.images[0].sizing)
        #expect(a.images[0].sizing.l2Entries == 320)
        #expect(a.images[0].l2 == b.images[0].l2)
        #expect(a.images[0].refcount == b.images[0].refcount)
        #expect(a.images[0].l2.misses > 0)
        #expect(a.whatIf == ["l2-cache-size=50%"])
        #expect(b.whatIf == [])
    }

    // MARK: - One cache for the chain

    static func sizing(l2: String) throws -> CacheSizing {
        var o = CacheOptions()
        o.l2CacheSize = try QemuSize.parse(Substring(l2)).get()
        return try CacheSizing(
            geometry: Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30), options: o)
    }

    static func feed<P: EvictionPolicy>(_ system: CacheSystem<P>, _ ops: [MetadataOp]) {
        var o = ops
        o.withUnsafeMutableBufferPointer { system.consume($0) }
    }

    static func getPut(_ image: Int, _ kind: CacheKind, _ offset: UInt64) -> [MetadataOp] {
        [MetadataOp(.get, kind, image: image, offset: offset, flag: 1), MetadataOp(.put, kind, image: image, offset: offset)]
    }

    @Test func sharedCacheCountsByHand() throws {
        // Two images, each sized for 2 L2 slices of 4 KiB (8K of a 1 GiB image).
        let s = try Self.sizing(l2: "8K")
        #expect(s.l2Entries == 2 && s.l2EntrySize == 4096)
        let a: UInt64 = 0x10000, b: UInt64 = 0x20000
        let ops =
            Self.getPut(0, .l2, a) + Self.getPut(1, .l2, a) + Self.getPut(0, .l2, a) + Self.getPut(1, .l2, b)
            + Self.getPut(1, .l2, a)
        // Shared, 2 entries (QEMU's policy: least recently released):
        //   image 0 A: miss (empty slot), released 1st; image 1 A: a different entry, miss,
        //   released 2nd; image 0 A: hit, released 3rd; image 1 B: miss, evicts image 1's A
        //   (released 2nd, the oldest); image 1 A: miss, evicts image 0's A (3rd, older than B).
        let shared = CacheSystem<QemuPolicy>(sizings: [s, s], topology: .chain(l2Entries: 2, refcountEntries: 4))
        Self.feed(shared, ops)
        let top = shared.counters(image: 1).l2
        #expect((top.lookups, top.hits, top.misses, top.evictions) == (5, 1, 4, 2))
        // Every counter of the shared caches is reported on the top image.
        #expect(shared.counters(image: 0).l2 == CacheStats())
        #expect(shared.counters(image: 0).sizing.l2Entries == 2)
        // Per image (QEMU), 2 entries each: image 0 A miss, A hit; image 1 A miss, B miss, A hit.
        let perImage = CacheSystem<QemuPolicy>(sizings: [s, s])
        Self.feed(perImage, ops)
        let (i0, i1) = (perImage.counters(image: 0).l2, perImage.counters(image: 1).l2)
        #expect((i0.misses, i0.hits, i1.misses, i1.hits) == (1, 1, 2, 1))
        // The same 4 entries shared: the 3 distinct tables all fit, 3 misses and 2 hits.
        let big = CacheSystem<QemuPolicy>(sizings: [s, s], topology: .chain(l2Entries: 4, refcountEntries: 8))
        Self.feed(big, ops)
        #expect((big.counters(image: 1).l2.misses, big.counters(image: 1).l2.hits) == (3, 2))
    }

    @Test func sharedCacheFlushesOnlyTheDependentImagesEntries() throws {
        let s = try Self.sizing(l2: "8K")
        let system = CacheSystem<QemuPolicy>(sizings: [s, s], topology: .chain(l2Entries: 2, refcountEntries: 4))
        let r0: UInt64 = 0x40000, r1: UInt64 = 0x50000
        let a: UInt64 = 0x10000, b: UInt64 = 0x20000, c: UInt64 = 0x30000
        var ops: [MetadataOp] = []
        // Both images dirty a refcount block of their own.
        for (image, r) in [(0, r0), (1, r1)] {
            ops += [
                MetadataOp(.get, .refcount, image: image, offset: r, flag: 1),
                MetadataOp(.markDirty, .refcount, image: image, offset: r),
                MetadataOp(.put, .refcount, image: image, offset: r),
            ]
        }
        // Image 0 dirties L2 slice A, which depends on image 0's refcount cache.
        ops += [
            MetadataOp(.get, .l2, image: 0, offset: a, flag: 1), MetadataOp(.markDirty, .l2, image: 0, offset: a),
            MetadataOp(.setDependency, .l2, image: 0), MetadataOp(.put, .l2, image: 0, offset: a),
        ]
        // Image 1 fills the other slot with B, then C evicts A (released first): A is dirty and
        // depends on image 0's refcount cache, so its write-back first flushes that cache —
        // image 0's block R0 only; image 1's R1 stays dirty — then writes A.
        ops += Self.getPut(1, .l2, b) + Self.getPut(1, .l2, c)
        Self.feed(system, ops)
        let rc = system.counters(image: 1).refcount
        let l2 = system.counters(image: 1).l2
        #expect((rc.writebacks, rc.flushes) == (1, 1))
        #expect((l2.writebacks, l2.dirtyEvictions, l2.evictions) == (1, 1, 1))
        let held0 = system.slot(image: 0, kind: .refcount, offset: r0)
        let held1 = system.slot(image: 1, kind: .refcount, offset: r1)
        #expect(held0.map { $0.cache.needsWriteback($0.slot) } == false)
        #expect(held1.map { $0.cache.needsWriteback($0.slot) } == true)
        #expect(system.slot(image: 0, kind: .l2, offset: a) == nil)
        #expect(system.finish() == [])
    }

    static func chainConfig(_ whatIf: [String]) throws -> SimulationConfig {
        var c = SimulationConfig(
            virtualSize: 4 << 30, chainLength: 3,
            driveOptions: "l2-cache-size=32K,backing.l2-cache-size=16K,backing.backing.l2-cache-size=16K")
        c.layers[0] = LayerPlan(populate: .ranges([ByteRange(start: 0, length: 512 << 20)]), populateMode: .data)
        c.layers[1] = LayerPlan(populate: .ranges([ByteRange(start: 256 << 20, length: 256 << 20)]), populateMode: .data)
        for w in whatIf { try c.whatIf.set(w) }
        return c
    }

    static func chainRecords() -> [TraceRecord] {
        var x: UInt64 = 0x1234_5678_9ABC_DEF1
        var records: [TraceRecord] = []
        for i in 0..<3000 {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            let offset = (x % ((1 << 30) / 4096)) * 4096
            records.append(TraceRecord(time: Double(i) / 10, op: i % 3 == 0 ? .write : .read, offset: offset, length: 4096))
        }
        return records
    }

    /// Issue 11: `cache-scope=chain` on a 3-image chain with a budget equal to the sum of the
    /// per-image caches runs and is labelled a what-if.
    @Test func chainScopeOnThreeImages() throws {
        var r1 = ArrayTraceReader(Self.chainRecords())
        let perImage = try Simulation.run(config: try Self.chainConfig([]), reader: &r1)
        var r2 = ArrayTraceReader(Self.chainRecords())
        let chain = try Simulation.run(config: try Self.chainConfig(["cache-scope=chain"]), reader: &r2)
        #expect(chain.whatIf == ["cache-scope=chain"])
        #expect(perImage.whatIf == [])
        // 32K + 16K + 16K of 4 KiB slices: 8 + 4 + 4 entries; refcount 4 + 4 + 4.
        for im in chain.images {
            #expect(im.sizing.l2Entries == 16)
            #expect(im.sizing.refcountEntries == 12)
        }
        // The stream is the same, so the shared cache sees every image's lookups.
        let lookups = perImage.images.reduce(0) { $0 + $1.l2.lookups }
        #expect(chain.images[2].l2.lookups == lookups)
        #expect(chain.images[0].l2.lookups == 0 && chain.images[1].l2.lookups == 0)
        #expect(perImage.images[0].l2.lookups > 0 && perImage.images[1].l2.lookups > 0)
        #expect(chain.images[2].l2.misses > 0)
        print(
            "chainScopeOnThreeImages: L2 misses per image \(perImage.images.map { $0.l2.misses }) (sum \(perImage.images.reduce(0) { $0 + $1.l2.misses })), shared \(chain.images[2].l2.misses)"
        )
        // An explicit budget: 8 shared slices.
        var r3 = ArrayTraceReader(Self.chainRecords())
        let small = try Simulation.run(
            config: try Self.chainConfig(["cache-scope=chain", "chain-l2-cache-size=32K"]), reader: &r3)
        #expect(small.images[2].sizing.l2Entries == 8)
        #expect(small.images[2].l2.misses >= chain.images[2].l2.misses)
        #expect(small.whatIf == ["cache-scope=chain", "chain-l2-cache-size=32K"])
    }

    @Test func simulateReportsWhatIf() throws {
        let dir = try CLIRun.directory()
        let trace = (dir as NSString).appendingPathComponent("t.csv")
        try "op,offset,length\nW,0,65536\nR,1048576,4096\nW,2147483648,4096\n".write(
            toFile: trace, atomically: true, encoding: .utf8)
        let (code, out, err) = try CLIRun.run([
            "simulate", trace, "--size", "4G", "--chain", "3", "--what-if", "cache-scope=chain", "--what-if", "l2-cache-size=10%",
            "--format", "json",
        ])
        #expect(code == 0, "\(err)")
        let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        #expect(object?["what_if"] as? [String: String] == ["cache-scope": "chain", "l2-cache-size": "10%"])
        let (tcode, text, _) = try CLIRun.run(["simulate", trace, "--size", "4G", "--what-if", "l2-cache-size=100%"])
        #expect(tcode == 0)
        #expect(text.contains("what-if (not QEMU behaviour): l2-cache-size=100%"))
        let (bad, _, berr) = try CLIRun.run(["simulate", trace, "--size", "4G", "--what-if", "nonsense"])
        #expect(bad == 64)
        #expect(berr.contains("--what-if nonsense: expected KEY=VALUE"))
        let (opt, optOut, optErr) = try CLIRun.run(["simulate", trace, "--size", "4G", "--policy", "opt", "--format", "csv"])
        #expect(opt == 0, "\(optErr)")
        #expect(optOut.hasPrefix("image,cache,"))
    }
}

import Qcow2Sim
import Testing
import TraceKit

/// The typed configuration: QEMU's spellings parsed into `CreateOptions` / `DriveOptions` and
/// rendered back (what `validate` gives qemu-img, qemu-io and qemu-system).
@Suite struct ConfigTests {
    /// `-o` text and its rendering: defaults left out, sizes in bytes, qemu-img's own names for
    /// the values (`compat=0.10`, `extended_l2=on`), a fixed order.
    static let createRenderings: [(String, String)] = [
        ("", ""),
        ("cluster_size=64K", ""),
        ("cluster_size=4K,extended_l2=off", "cluster_size=4096"),
        ("extended_l2=yes,cluster_size=16K,refcount_bits=64", "cluster_size=16384,extended_l2=on,refcount_bits=64"),
        ("compat=v2,cluster_size=512", "cluster_size=512,compat=0.10"),
        ("compat=0.10,compat=1.1", ""),
        ("refcount_bits=1,compression_type=zstd", "refcount_bits=1,compression_type=zstd"),
        ("cluster_size=2M,lazy_refcounts=off,compression_type=zlib,compat=v3", "cluster_size=2097152"),
        ("cluster_size=0x800,,extended_l2=false", "cluster_size=2048"),
    ]

    @Test(arguments: createRenderings)
    func createRendering(_ text: String, _ rendered: String) throws {
        let o = try CreateOptions.parse(text)
        #expect(o.rendered == rendered)
        #expect(try CreateOptions.parse(o.rendered) == o)
    }

    /// Every valid combination at the edges qemu-img allows: 512 B to 2 MiB clusters,
    /// 1- to 64-bit refcounts, both versions, both compression types, extended L2 from 16 KiB.
    @Test func createRoundTrip() throws {
        var checked = 0
        for bits in 9...21 {
            for ext in [false, true] where !ext || bits >= 14 {
                for refcount in [1, 2, 4, 8, 16, 32, 64] {
                    for version in [2, 3] {
                        for compression in CreateOptions.CompressionType.allCases {
                            // qcow2_co_create: version 2 has 16-bit refcounts, no extended L2, zlib only.
                            if version == 2 && (refcount != 16 || ext || compression != .zlib) { continue }
                            let o = CreateOptions(
                                clusterSize: 1 << UInt64(bits), extendedL2: ext, refcountBits: refcount, version: version,
                                compressionType: compression)
                            #expect(try CreateOptions.parse(o.rendered) == o, "\(o.rendered)")
                            checked += 1
                        }
                    }
                }
            }
        }
        // 13 sizes × 7 widths × 2 types (v3), 8 sizes × 7 × 2 with extended L2, 13 v2 images.
        #expect(checked == 13 * 7 * 2 + 8 * 7 * 2 + 13)
    }

    /// `--drive` text and its rendering, top first with `backing.` prefixes.
    static let driveRenderings: [(String, QemuVersion, String)] = [
        ("", .v7_2, ""),
        ("l2-cache-size=1M,backing.l2-cache-size=256K", .v7_2, "l2-cache-size=1048576,backing.l2-cache-size=262144"),
        (
            "backing.backing.cache-clean-interval=0,cache-size=0x10000", .v7_2,
            "cache-size=65536,backing.backing.cache-clean-interval=0"
        ),
        ("cache-clean-interval=-1", .v7_2, "cache-clean-interval=18446744073709551615"),
        ("l2-cache-size=1.5K,l2-cache-size=2M", .v7_2, "l2-cache-size=2097152"),
        (
            "cache-clean-interval=30,l2-cache-entry-size=4K,refcount-cache-size=1,l2-cache-size=1,cache-size=18446744073709551615",
            .v7_2,
            "cache-size=18446744073709551615,l2-cache-size=1,refcount-cache-size=1,l2-cache-entry-size=4096,cache-clean-interval=30"
        ),
        (
            "discard-no-unref=on,backing.discard-no-unref=off,backing.l2-cache-size=0", .v8_2,
            "discard-no-unref=on,backing.l2-cache-size=0"
        ),
        ("discard-no-unref=off", .v10_0, ""),
    ]

    @Test(arguments: driveRenderings)
    func driveRendering(_ text: String, _ version: QemuVersion, _ rendered: String) throws {
        let o = try DriveOptions(parsing: text, version: version)
        #expect(o.rendered == rendered)
        #expect(try DriveOptions(parsing: o.rendered, version: version) == o)
    }

    @Test("16E is 2^64: out of range, as QEMU says", arguments: ["l2-cache-size=16E", "cache-size=18446744073709551616"])
    func driveOutOfRange(_ text: String) throws {
        let value = text.split(separator: "=")[1]
        let key = text.split(separator: "=")[0]
        #expect(throws: OpenError("Value '\(value)' is out of range for parameter '\(key)'")) {
            try DriveOptions(parsing: text)
        }
    }

    /// Hand-picked values: every field at 0, 1 and its largest value, at the top, one level down
    /// and with an image without options between two with options.
    @Test func driveRoundTrip() throws {
        let edges: [CacheOptions] = [
            CacheOptions(),
            CacheOptions(cacheSize: 0, l2CacheSize: 0, refcountCacheSize: 0, l2CacheEntrySize: 0, cacheCleanInterval: 0),
            CacheOptions(cacheSize: 1, l2CacheSize: 1, refcountCacheSize: 1, l2CacheEntrySize: 1, cacheCleanInterval: 1),
            CacheOptions(
                cacheSize: .max, l2CacheSize: .max, refcountCacheSize: .max, l2CacheEntrySize: .max, cacheCleanInterval: .max,
                discardNoUnref: true),
            CacheOptions(l2CacheSize: 1 << 20, l2CacheEntrySize: 4096),
            CacheOptions(discardNoUnref: true),
        ]
        for top in edges {
            for below in edges {
                for layout in [[top], [top, below], [top, CacheOptions(), below]] {
                    let o = DriveOptions(layout)
                    #expect(try DriveOptions(parsing: o.rendered, version: .v8_2) == o, "\(o.rendered)")
                }
            }
        }
    }

    @Test("images without options at the bottom are not stored, so depth does not change equality")
    func trailingDefaults() throws {
        #expect(DriveOptions([CacheOptions(l2CacheSize: 512), CacheOptions()]) == DriveOptions([CacheOptions(l2CacheSize: 512)]))
        #expect(try DriveOptions(parsing: "l2-cache-size=512", depth: 3) == DriveOptions(parsing: "l2-cache-size=512"))
        var o = DriveOptions()
        o[2].cacheCleanInterval = 7
        #expect(o.rendered == "backing.backing.cache-clean-interval=7")
        #expect(o.images.count == 3 && o[1] == CacheOptions() && o[5] == CacheOptions())
        o[2].cacheCleanInterval = nil
        #expect(o == DriveOptions() && o.images.isEmpty)
    }

    @Test("options below the chain's base: refused at parse time for a known depth, by images(depth:) otherwise")
    func depth() throws {
        let text = "l2-cache-size=1M,backing.backing.l2-cache-size=4K,backing.backing.backing.cache-size=1M"
        let message = "Block format 'qcow2' does not support the option 'backing.backing.l2-cache-size'"
        #expect(throws: OpenError(message)) { try DriveOptions(parsing: text, depth: 2) }
        let o = try DriveOptions(parsing: text)
        #expect(throws: OpenError(message)) { try o.images(depth: 2) }
        #expect(try o.images(depth: 4).map(\.l2CacheSize) == [1 << 20, nil, 4096, nil])
        #expect(try DriveOptions().images(depth: 0) == [CacheOptions()])
        // A level deeper than any chain qcow2sim opens.
        let deep = String(repeating: "backing.", count: DriveOptions.maxDepth) + "l2-cache-size=1"
        #expect(throws: OpenError("Block format 'qcow2' does not support the option '\(deep.prefix { $0 != "=" })'")) {
            try DriveOptions(parsing: deep)
        }
    }

    @Test("-o for the chain and per layer: each layer's options are complete, messages name the option")
    func layers() throws {
        var config = SimulationConfig(virtualSize: 1 << 30, chainLength: 3)
        try config.parseCreateOptions("cluster_size=4K", layers: [1: "compat=0.10", 2: ""])
        #expect(config.createOptions.rendered == "cluster_size=4096")
        #expect(config.createOptions(layer: 0) == config.createOptions)
        #expect(config.createOptions(layer: 1).rendered == "cluster_size=4096,compat=0.10")
        #expect(config.createOptions(layer: 2) == config.createOptions)
        #expect(config.layers[2]?.createOptions == nil)

        var bad = SimulationConfig(virtualSize: 1 << 30, chainLength: 2)
        #expect(throws: SimulationError.usage("-o: Invalid parameter 'bogus'")) {
            try bad.parseCreateOptions("bogus=1", layers: [1: "cluster_size=4K"])
        }
        #expect(
            throws: SimulationError.usage(
                "--layer 1: -o: Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        ) {
            try bad.parseCreateOptions("extended_l2=on", layers: [1: "cluster_size=4K"])
        }
        // The chain-wide options are those of every image without its own: checked even when
        // only the base uses them, and first when the base does.
        #expect(throws: SimulationError.usage("-o: Parameter 'version' does not accept value '3'")) {
            try bad.parseCreateOptions("compat=3", layers: [1: "compat=1.1"])
        }
    }

    @Test("--drive for a chain: the depth is the chain's, unknown (checked at open) for --image")
    func driveForChain() throws {
        var config = SimulationConfig(virtualSize: 1 << 30, chainLength: 2)
        try config.parseDriveOptions("backing.l2-cache-size=8K,l2-cache-size=16K")
        #expect(config.driveOptions.images == [CacheOptions(l2CacheSize: 16 << 10), CacheOptions(l2CacheSize: 8 << 10)])
        // Base first: image 0 is the backing file.
        #expect(config.cacheOptions(layer: 0, chainLength: 2).l2CacheSize == 8 << 10)
        #expect(config.cacheOptions(layer: 1, chainLength: 2).l2CacheSize == 16 << 10)
        #expect(
            throws: SimulationError.usage(
                "--drive: Block format 'qcow2' does not support the option 'backing.backing.cache-size'")
        ) {
            try config.parseDriveOptions("backing.backing.cache-size=1M")
        }
        #expect(throws: SimulationError.usage("--drive: Block format 'qcow2' does not support the option 'discard-no-unref'")) {
            try config.parseDriveOptions("discard-no-unref=on")
        }
        config.qemuVersion = .v8_2
        try config.parseDriveOptions("discard-no-unref=on")
        #expect(config.driveOptions[0].discardNoUnref)
        config.imageFile = "/some/image.qcow2"
        try config.parseDriveOptions("backing.backing.cache-size=1M")
        #expect(config.driveOptions[2].cacheSize == 1 << 20)
    }

    @Test("a --drive level below the base fails the run with QEMU's message, as a parse would")
    func driveBelowBaseFailsTheRun() throws {
        let config = SimulationConfig(
            virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "backing.refcount-cache-size=1"))
        var reader = ArrayTraceReader([])
        #expect(
            throws: SimulationError.usage(
                "--drive: Block format 'qcow2' does not support the option 'backing.refcount-cache-size'")
        ) {
            _ = try Simulation.run(config: config, reader: &reader)
        }
    }
}

import Foundation
import QcowTestSupport
import Testing

@testable import Qcow2Sim

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Helpers

/// A scratch directory removed when the value goes away.
final class ScratchDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2file-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// An image configuration made with the real qemu-img and written to with qemu-io.
struct ImageConfig: CustomTestStringConvertible, Sendable {
    var name: String
    var size: String
    var options: String
    var writes: [String]
    var testDescription: String { name }
}

let realImageConfigs: [ImageConfig] = [
    ImageConfig(
        name: "default 64K", size: "1G", options: "",
        writes: ["write -P 0xaa 0 64k", "write 1M 4k", "write 512M 128k", "write -z 700M 64k"]),
    // 10 MiB of data needs more host clusters than refcount block 0 covers (8 MiB).
    ImageConfig(
        name: "cluster_size=4K", size: "1G", options: "cluster_size=4K",
        writes: ["write 0 4k", "write 1M 8k", "write 600M 4k", "write 100M 10M"]),
    ImageConfig(
        name: "cluster_size=512", size: "64M", options: "cluster_size=512",
        writes: ["write 0 4k", "write 10M 1k", "write 30M 300k"]),
    ImageConfig(
        name: "extended_l2=on", size: "1G", options: "extended_l2=on",
        writes: ["write 0 4k", "write 1M 64k", "write 5250k 6k", "write 900M 2k"]),
    ImageConfig(
        name: "refcount_bits=1", size: "1G", options: "refcount_bits=1",
        writes: ["write 0 64k", "write 3M 4k", "write 700M 1M"]),
    ImageConfig(
        name: "refcount_bits=8", size: "1G", options: "refcount_bits=8",
        writes: ["write 0 64k", "write 3M 4k"]),
    ImageConfig(
        name: "refcount_bits=64", size: "1G", options: "refcount_bits=64",
        writes: ["write 0 64k", "write 3M 4k", "write 1000M 8k"]),
    ImageConfig(
        name: "refcount_bits=2, 4K clusters", size: "256M", options: "refcount_bits=2,cluster_size=4K",
        writes: ["write 0 64k", "write 30M 40k"]),
    ImageConfig(
        name: "preallocation=metadata", size: "16M", options: "preallocation=metadata",
        writes: ["write 0 4k", "write 8M 64k"]),
    ImageConfig(
        name: "compat=0.10 (version 2)", size: "1G", options: "compat=0.10",
        writes: ["write 0 64k", "write 2M 4k"]),
    ImageConfig(
        name: "lazy_refcounts=on", size: "1G", options: "lazy_refcounts=on",
        writes: ["write 0 64k", "write 2M 4k"]),
]

/// Checks a parsed image against what qemu-img itself reports: `info` fields, `map` host offsets
/// of the data ranges, and `check` cluster counts against the sum of our refcounts.
func crossCheck(_ image: Qcow2File) throws {
    let h = image.header
    let g = h.geometry

    // qemu-img info
    let info = try #require(try QemuTools.json("info", image.path) as? [String: Any])
    #expect(info["virtual-size"] as? UInt64 == h.virtualSize)
    #expect(info["cluster-size"] as? UInt64 == g.clusterSize)
    let specific = try #require((info["format-specific"] as? [String: Any])?["data"] as? [String: Any])
    #expect(specific["compat"] as? String == (h.version == 2 ? "0.10" : "1.1"))
    #expect(specific["refcount-bits"] as? Int == g.refcountBits)
    if h.version == 3 {
        #expect(specific["extended-l2"] as? Bool == h.extendedL2)
        #expect(specific["lazy-refcounts"] as? Bool == h.lazyRefcounts)
    }
    #expect(info["backing-filename"] as? String == h.backingFileName)
    #expect(info["backing-filename-format"] as? String == h.backingFormat)

    // All L2 tables, through our L1.
    let l1 = try image.l1Table()
    #expect(l1.count == h.l1Size)
    var l2Tables: [Int: (entries: [UInt64], bitmaps: [UInt64]?)] = [:]
    for (i, e) in l1.enumerated() where e & EntryBits.offsetMask != 0 {
        // No snapshots, so every table is referenced once and must carry COPIED.
        #expect(e & EntryBits.copied != 0, "L1[\(i)] = \(e) lacks COPIED")
        l2Tables[i] = try image.l2Table(at: e & EntryBits.offsetMask)
    }

    // qemu-img map: every data range of this layer must be mapped by our L2 entries.
    let map = try #require(try QemuTools.json("map", image.path) as? [[String: Any]])
    var checkedClusters = 0
    for m in map {
        guard let start = m["start"] as? UInt64, let length = m["length"] as? UInt64,
            m["depth"] as? Int == 0, m["data"] as? Bool == true, let host = m["offset"] as? UInt64
        else { continue }
        var guest = start
        while guest < start + length {
            let clusterEnd = g.clusterStart(guest) + g.clusterSize
            let runEnd = min(clusterEnd, start + length)
            let expectedCluster = host + (guest - start) - g.offsetInCluster(guest)
            let table = try #require(l2Tables[g.l1Index(guest)], "no L2 table for guest \(guest)")
            let entry = table.entries[g.l2Index(guest)]
            #expect(
                entry & EntryBits.offsetMask == expectedCluster,
                "guest \(guest): entry \(entry), map says host \(expectedCluster)")
            #expect(entry & EntryBits.copied != 0)
            if let bitmaps = table.bitmaps {
                let bitmap = bitmaps[g.l2Index(guest)]
                var sub = guest
                while sub < runEnd {
                    #expect(
                        bitmap >> UInt64(g.subclusterIndex(sub)) & 1 == 1, "guest \(sub): subcluster not allocated in \(bitmap)")
                    sub += g.subclusterSize - (sub & (g.subclusterSize - 1))
                }
            }
            checkedClusters += 1
            guest = runEnd
        }
    }

    // Clusters our L2 tables map (NORMAL and ZERO_ALLOC: the offset field is set).
    var dataClusters = 0
    for table in l2Tables.values {
        dataClusters += table.entries.filter { $0 & EntryBits.offsetMask != 0 && $0 & EntryBits.compressed == 0 }.count
    }
    #expect(checkedClusters > 0 || dataClusters == 0)

    // Refcounts: every refcounted cluster is referenced exactly once.
    let reftable = try image.refcountTable()
    var refblocks = 0
    var refcountSum: UInt64 = 0
    var lastUsedCluster: UInt64?
    for (i, e) in reftable.enumerated() where e & EntryBits.reftableOffsetMask != 0 {
        refblocks += 1
        let counts = try image.refcountBlock(at: e & EntryBits.reftableOffsetMask)
        #expect(counts.count == Int(g.refblockEntries))
        for (j, c) in counts.enumerated() where c != 0 {
            #expect(c == 1, "cluster \(UInt64(i) * g.refblockEntries + UInt64(j)) has refcount \(c)")
            refcountSum += c
            lastUsedCluster = UInt64(i) * g.refblockEntries + UInt64(j)
        }
    }
    let check = try #require(try QemuTools.json("check", image.path) as? [String: Any])
    #expect(check["check-errors"] as? Int == 0)
    #expect(check["leaks"] == nil && check["corruptions"] == nil)
    // qemu-img omits "allocated-clusters" when it is 0.
    let allocated = check["allocated-clusters"] as? Int ?? 0
    #expect(allocated == dataClusters)
    let l1Clusters = g.clusters(covering: UInt64(h.l1Size) * 8)
    let metadataClusters = 1 + UInt64(h.refcountTableClusters) + UInt64(refblocks) + l1Clusters + UInt64(l2Tables.count)
    #expect(refcountSum == UInt64(allocated) + metadataClusters)
    let end = try #require(check["image-end-offset"] as? UInt64)
    #expect(end == ((lastUsedCluster ?? 0) + 1) * g.clusterSize)
}

/// Big-endian stores for crafted headers.
func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
    for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> UInt32(24 - 8 * i)) }
}
func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
    for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * i)) }
}

/// A valid fresh 1 GiB / 64 KiB version-3 image laid out as in qcow2-model.md §12, built by
/// hand so that the error tests need no QEMU: reftable at 0x10000 -> refblock at 0x20000,
/// L1 at 0x30000 with 2 entries, file length 0x30010.
func craftedImage(_ mutate: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x30010)
    b[0..<4] = [0x51, 0x46, 0x49, 0xfb]
    put32(&b, 4, 3)
    put32(&b, 20, 16)
    put64(&b, 24, 1 << 30)
    put32(&b, 36, 2)
    put64(&b, 40, 0x30000)
    put64(&b, 48, 0x10000)
    put32(&b, 56, 1)
    put32(&b, 96, 4)
    put32(&b, 100, 104)
    put64(&b, 0x10000, 0x20000)
    for k in 0..<4 { b[0x20000 + 2 * k + 1] = 1 }  // 16-bit big-endian refcounts 1, 1, 1, 1
    mutate(&b)
    return b
}

/// One bad file and the exact error it must produce.
struct BadImage: CustomTestStringConvertible, Sendable {
    var name: String
    var bytes: @Sendable () -> [UInt8]
    var offset: UInt64?
    var message: String
    var testDescription: String { name }
}

let badImages: [BadImage] = [
    BadImage(
        name: "empty file", bytes: { [] }, offset: 0,
        message: "truncated header: file is 0 bytes, a qcow2 header needs at least 72"),
    BadImage(
        name: "2 bytes", bytes: { [0x51, 0x46] }, offset: 2,
        message: "truncated header: file is 2 bytes, a qcow2 header needs at least 72"),
    BadImage(
        name: "bad magic", bytes: { craftedImage { $0[0..<4] = [0x7f, 0x45, 0x4c, 0x46] } }, offset: 0,
        message: "not a qcow2 file: magic bytes are 7f 45 4c 46, expected 51 46 49 fb ('QFI\\xfb')"),
    BadImage(
        name: "version 4", bytes: { craftedImage { put32(&$0, 4, 4) } }, offset: 4,
        message: "unsupported qcow2 version 4 (expected 2 or 3)"),
    BadImage(
        name: "version 1", bytes: { craftedImage { put32(&$0, 4, 1) } }, offset: 4,
        message: "unsupported qcow2 version 1 (expected 2 or 3)"),
    BadImage(
        name: "short v3 header", bytes: { Array(craftedImage().prefix(90)) }, offset: 90,
        message: "truncated header: file is 90 bytes, a version 3 header needs 104"),
    BadImage(
        name: "cluster_bits 8", bytes: { craftedImage { put32(&$0, 20, 8) } }, offset: 20,
        message: "cluster_bits 8 out of range (expected 9 to 21)"),
    BadImage(
        name: "cluster_bits 22", bytes: { craftedImage { put32(&$0, 20, 22) } }, offset: 20,
        message: "cluster_bits 22 out of range (expected 9 to 21)"),
    BadImage(
        name: "header_length 96", bytes: { craftedImage { put32(&$0, 100, 96) } }, offset: 100,
        message: "header_length 96 too small (expected at least 104 for version 3)"),
    BadImage(
        name: "header_length > cluster",
        bytes: {
            craftedImage {
                put32(&$0, 20, 9); put32(&$0, 100, 1024)
            }
        },
        offset: 100, message: "header_length 1024 exceeds the cluster size 512"),
    BadImage(
        name: "backing name too long",
        bytes: {
            craftedImage {
                put64(&$0, 8, 0x200); put32(&$0, 16, 2000)
            }
        },
        offset: 16, message: "backing file name is 2000 bytes long (at most 1023)"),
    BadImage(
        name: "backing name outside cluster 0",
        bytes: {
            craftedImage {
                put64(&$0, 8, 0x10000); put32(&$0, 16, 4)
            }
        },
        offset: 8, message: "backing file name offset 0x10000 is outside the first cluster (cluster size 65536)"),
    BadImage(
        name: "oversized header extension",
        bytes: {
            craftedImage {
                put32(&$0, 104, 0xe279_2aca); put32(&$0, 108, 0x20000)
            }
        },
        offset: 104, message: "header extension 0xe2792aca has length 131072, which runs past byte 65536"),
    BadImage(
        name: "dirty", bytes: { craftedImage { put64(&$0, 72, 1) } }, offset: 72,
        message: "image is marked dirty; run 'qemu-img check -r all' first"),
    BadImage(
        name: "corrupt", bytes: { craftedImage { put64(&$0, 72, 2) } }, offset: 72,
        message: "image is marked corrupt; run 'qemu-img check -r all' first"),
    BadImage(
        name: "dirty and corrupt", bytes: { craftedImage { put64(&$0, 72, 3) } }, offset: 72,
        message: "image is marked corrupt; run 'qemu-img check -r all' first"),
    BadImage(
        name: "external data file", bytes: { craftedImage { put64(&$0, 72, 4) } }, offset: 72,
        message: "external data files are not supported (incompatible feature bit 2 is set)"),
    BadImage(
        name: "unknown incompatible bit", bytes: { craftedImage { put64(&$0, 72, 0x20) } }, offset: 72,
        message: "unknown incompatible feature bits 0x20 (bit 5)"),
    BadImage(
        name: "unknown incompatible bit with a feature name",
        bytes: {
            craftedImage {
                put64(&$0, 72, 1 << 40 | 1 << 5)
                put32(&$0, 104, 0x6803_f857)
                put32(&$0, 108, 48)
                $0[112] = 0
                $0[113] = 40
                $0[114..<121] = ArraySlice("future!".utf8)
            }
        },
        offset: 72, message: "unknown incompatible feature bits 0x10000000020 (bit 5, bit 40 'future!')"),
    BadImage(
        name: "extended L2 with 8K clusters",
        bytes: {
            craftedImage {
                put64(&$0, 72, 0x10); put32(&$0, 20, 13)
            }
        },
        offset: 20, message: "extended L2 entries need a cluster size of at least 16384 bytes, found 8192 (cluster_bits 13)"),
    BadImage(
        name: "refcount_order 7", bytes: { craftedImage { put32(&$0, 96, 7) } }, offset: 96,
        message: "refcount_order 7 out of range (expected 0 to 6)"),
    BadImage(
        name: "encrypted", bytes: { craftedImage { put32(&$0, 32, 2) } }, offset: 32,
        message: "encrypted images are not supported (crypt_method 2, expected 0)"),
    BadImage(
        name: "one snapshot", bytes: { craftedImage { put32(&$0, 60, 1) } }, offset: 60,
        message: "internal snapshots are not supported (image has 1 snapshot, expected 0)"),
    BadImage(
        name: "three snapshots", bytes: { craftedImage { put32(&$0, 60, 3) } }, offset: 60,
        message: "internal snapshots are not supported (image has 3 snapshots, expected 0)"),
    BadImage(
        name: "huge virtual size", bytes: { craftedImage { put64(&$0, 24, 1 << 62) } }, offset: 24,
        message:
            "virtual size 4611686018427387904 is too large for cluster size 65536 (an L1 table holds at most 4194304 entries)"),
    BadImage(
        name: "l1 too small", bytes: { craftedImage { put32(&$0, 36, 1) } }, offset: 36,
        message: "l1 table has 1 entry, virtual size 1073741824 needs 2"),
    BadImage(
        name: "l1 too large", bytes: { craftedImage { put32(&$0, 36, 5_000_000) } }, offset: 36,
        message: "l1 table has 5000000 entries (at most 4194304)"),
    BadImage(
        name: "l1 unaligned", bytes: { craftedImage { put64(&$0, 40, 0x30008) } }, offset: 40,
        message: "l1 table offset 0x30008 is not cluster-aligned (cluster size 0x10000)"),
    BadImage(
        name: "l1 truncated", bytes: { Array(craftedImage().prefix(0x30008)) }, offset: 0x30000,
        message: "truncated l1 table: 16 bytes at 0x30000, file ends at 0x30008"),
    BadImage(
        name: "refcount table empty", bytes: { craftedImage { put32(&$0, 56, 0) } }, offset: 56,
        message: "refcount table is empty (refcount_table_clusters 0, expected at least 1)"),
    BadImage(
        name: "refcount table too large", bytes: { craftedImage { put32(&$0, 56, 200) } }, offset: 56,
        message: "refcount table has 200 clusters (at most 128 with cluster size 65536)"),
    BadImage(
        name: "refcount table unaligned", bytes: { craftedImage { put64(&$0, 48, 0x10200) } }, offset: 48,
        message: "refcount table offset 0x10200 is not cluster-aligned (cluster size 0x10000)"),
    BadImage(
        name: "refcount table truncated", bytes: { craftedImage { put64(&$0, 48, 0x30000) } }, offset: 0x30000,
        message: "truncated refcount table: 65536 bytes at 0x30000, file ends at 0x30010"),
]

// MARK: - Tests

@Suite("Qcow2File")
struct Qcow2FileTests {
    /// Writes `bytes` to a fresh file and opens it.
    func open(_ bytes: [UInt8], in dir: ScratchDir, name: String = "crafted.qcow2") throws -> (String, Result<Qcow2File, Error>) {
        let path = dir.path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, Result { try Qcow2File(path: path) })
    }

    @Test("a hand-made §12 layout parses")
    func craftedValidImage() throws {
        let dir = try ScratchDir()
        let (_, result) = try open(craftedImage(), in: dir)
        let image = try result.get()
        #expect(
            image.header
                == Qcow2Header(
                    version: 3, clusterBits: 16, virtualSize: 1 << 30, l1TableOffset: 0x30000, l1Size: 2,
                    refcountTableOffset: 0x10000, refcountTableClusters: 1, snapshotCount: 0,
                    incompatibleFeatures: 0, compatibleFeatures: 0, autoclearFeatures: 0, refcountOrder: 4,
                    headerLength: 104, backingFileName: nil, backingFormat: nil, extendedL2: false))
        #expect(image.fileLength == 0x30010)
        #expect(try image.l1Table() == [0, 0])
        #expect(try image.refcountTable().prefix(2) == [0x20000, 0])
        #expect(try image.refcountTable().count == 8192)
        #expect(try image.refcountBlock(at: 0x20000).prefix(5) == [1, 1, 1, 1, 0])
    }

    @Test("bad images are rejected with an exact message", arguments: badImages)
    func rejects(_ bad: BadImage) throws {
        let dir = try ScratchDir()
        let (path, result) = try open(bad.bytes(), in: dir)
        let error = try #require(throws: Qcow2FileError.self) { try result.get() }
        #expect(error.message == bad.message)
        #expect(error.byteOffset == bad.offset)
        #expect(error.exitCode == 65)
        #expect(error.description == "\(path): byte \(bad.offset.map(String.init) ?? "?"): error: \(bad.message)")
    }

    @Test("a missing file exits 66")
    func missingFile() throws {
        let error = try #require(throws: Qcow2FileError.self) { try Qcow2File(path: "/nonexistent/x.qcow2") }
        #expect(error.exitCode == 66)
        #expect(error.byteOffset == nil)
        #expect(error.description == "/nonexistent/x.qcow2: error: cannot open: no such file or directory")
    }

    @Test("a directory exits 66")
    func directory() throws {
        let dir = try ScratchDir()
        let error = try #require(throws: Qcow2FileError.self) { try Qcow2File(path: dir.url.path) }
        #expect(error.exitCode == 66)
        #expect(error.message == "not a regular file (a directory)")
    }

    @Test("bad L2 and refcount-block offsets are reported where they point")
    func badTableOffsets() throws {
        let dir = try ScratchDir()
        let image = try open(craftedImage(), in: dir).1.get()
        let unaligned = try #require(throws: Qcow2FileError.self) { try image.l2Table(at: 0x20200) }
        #expect(unaligned.byteOffset == 0x20200)
        #expect(unaligned.message == "l2 table offset 0x20200 is not a non-zero multiple of the cluster size 0x10000")
        let zero = try #require(throws: Qcow2FileError.self) { try image.refcountBlock(at: 0) }
        #expect(zero.message == "refcount block offset 0x0 is not a non-zero multiple of the cluster size 0x10000")
        let past = try #require(throws: Qcow2FileError.self) { try image.l2Table(at: 0x30000) }
        #expect(past.byteOffset == 0x30000)
        #expect(past.message == "truncated l2 table: 65536 bytes at 0x30000, file ends at 0x30010")
        let far = try #require(throws: Qcow2FileError.self) { try image.refcountBlock(at: 0x7fff_0000_0000) }
        #expect(far.message == "truncated refcount block: 65536 bytes at 0x7fff00000000, file ends at 0x30010")
    }

    @Test("narrow refcounts are packed from the least-significant bit, wide ones are big-endian")
    func refcountPacking() throws {
        let dir = try ScratchDir()
        // refcount_order 0, 1, 2: bytes 0b1000_0101 etc. at the start of the refcount block.
        let cases: [(order: UInt32, bytes: [UInt8], values: [UInt64])] = [
            (0, [0b1000_0101], [1, 0, 1, 0, 0, 0, 0, 1]),
            (1, [0b1110_0100], [0, 1, 2, 3]),
            (2, [0x21, 0xf3], [1, 2, 3, 15]),
            (3, [7, 0, 255], [7, 0, 255]),
            (5, [0, 0, 1, 2, 0xff, 0, 0, 0], [258, 0xff00_0000]),
            (6, [0, 0, 0, 1, 0, 0, 0, 2], [0x1_0000_0002]),
        ]
        for c in cases {
            let bytes = craftedImage {
                put32(&$0, 96, c.order)
                for i in 0..<8 { $0[0x20000 + i] = 0 }
                for (i, v) in c.bytes.enumerated() { $0[0x20000 + i] = v }
            }
            let image = try open(bytes, in: dir, name: "order\(c.order).qcow2").1.get()
            let counts = try image.refcountBlock(at: 0x20000)
            #expect(counts.count == (65536 * 8) >> c.order)
            #expect(Array(counts.prefix(c.values.count)) == c.values, "refcount_order \(c.order)")
        }
    }

    @Test("allocated ranges are rounded out to 4 KiB and merged")
    func roundAndMerge() {
        #expect(Qcow2File.roundAndMerge([]) == [])
        #expect(Qcow2File.roundAndMerge([8192..<8193, 0..<100, 4096..<5000]) == [0..<12288])
        #expect(Qcow2File.roundAndMerge([0..<4096, 12288..<12289, 20000..<20000]) == [0..<4096, 12288..<16384])
    }

    // MARK: Real images

    @Test(
        "fresh images have the §12 layout", .requires(QemuTools.io),
        arguments: [
            (options: "", l1Size: 2, refblock: UInt64(0x20000), l1: UInt64(0x30000), reftable: UInt64(0x10000)),
            (options: "extended_l2=on", l1Size: 4, refblock: 0x20000, l1: 0x30000, reftable: 0x10000),
            (options: "cluster_size=4K", l1Size: 512, refblock: 0x2000, l1: 0x3000, reftable: 0x1000),
        ])
    func freshLayout(options: String, l1Size: Int, refblock: UInt64, l1: UInt64, reftable: UInt64) throws {
        let dir = try ScratchDir()
        let path = dir.path("fresh.qcow2")
        try QemuTools.create(path, size: "1G", options: options)
        let image = try Qcow2File(path: path)
        let h = image.header
        #expect(h.virtualSize == 1 << 30)
        #expect(h.refcountTableOffset == reftable)
        #expect(h.refcountTableClusters == 1)
        #expect(h.l1TableOffset == l1)
        #expect(h.l1Size == l1Size)
        #expect(h.geometry.l1Size == l1Size)
        #expect(h.extendedL2 == options.contains("extended_l2"))
        #expect(image.fileLength == l1 + 8 * UInt64(l1Size))
        #expect(try image.l1Table() == [UInt64](repeating: 0, count: l1Size))
        let rt = try image.refcountTable()
        #expect(rt[0] == refblock)
        #expect(rt.dropFirst().allSatisfy { $0 == 0 })
        let counts = try image.refcountBlock(at: refblock)
        let l1Clusters = Int(h.geometry.clusters(covering: 8 * UInt64(l1Size)))
        #expect(Array(counts.prefix(3 + l1Clusters)) == [UInt64](repeating: 1, count: 3 + l1Clusters))
        #expect(counts.dropFirst(3 + l1Clusters).allSatisfy { $0 == 0 })
        if options.isEmpty { #expect(image.fileLength == 0x30010) }
        try crossCheck(image)
    }

    @Test(
        "parsed images agree with qemu-img info, map and check", .requires(QemuTools.io),
        arguments: realImageConfigs)
    func realImage(_ config: ImageConfig) throws {
        let dir = try ScratchDir()
        let path = dir.path("image.qcow2")
        try QemuTools.create(path, size: config.size, options: config.options)
        try QemuTools.io(path, config.writes)
        let image = try Qcow2File(path: path)
        #expect(image.header.snapshotCount == 0)
        #expect(image.header.backingFileName == nil)
        if config.options.contains("compat=0.10") {
            #expect(image.header.version == 2)
            #expect(image.header.headerLength == 72)
            #expect(image.header.refcountOrder == 4)
        }
        #expect(image.header.lazyRefcounts == config.options.contains("lazy_refcounts=on"))
        try crossCheck(image)
    }

    @Test("a backing overlay records its backing file and format", .requires(QemuTools.io))
    func backingOverlay() throws {
        let dir = try ScratchDir()
        let base = dir.path("base.qcow2"), overlay = dir.path("overlay.qcow2")
        try QemuTools.create(base, size: "1G", options: "")
        try QemuTools.io(base, ["write -P 1 0 1M"])
        try QemuTools.create(overlay, size: "", options: "", extra: ["-b", base, "-F", "qcow2"])
        try QemuTools.io(overlay, ["write -P 2 512k 64k", "write 5M 4k"])
        let image = try Qcow2File(path: overlay)
        #expect(image.header.backingFileName == base)
        #expect(image.header.backingFormat == "qcow2")
        #expect(image.header.virtualSize == 1 << 30)
        try crossCheck(image)
        // Guest clusters only in the base are unallocated in the overlay's L2 table.
        let l1 = try image.l1Table()
        let l2 = try image.l2Table(at: l1[0] & EntryBits.offsetMask).entries
        #expect(l2[0] == 0)
        #expect(l2[8] & EntryBits.offsetMask != 0)
        let baseImage = try Qcow2File(path: base)
        #expect(baseImage.header.backingFileName == nil)
        try crossCheck(baseImage)
    }

    @Test("the allocation map covers the written host clusters", .requires(QemuTools.io))
    func allocationMap() throws {
        let dir = try ScratchDir()
        let path = dir.path("alloc.qcow2")
        try QemuTools.create(path, size: "1G", options: "")
        // A 4 KiB write into a fresh cluster makes QEMU zero the rest of the cluster (COW
        // without a backing file), typically with fallocate(ZERO_RANGE): allocated but unwritten.
        try QemuTools.io(path, ["write 0 64k", "write 1M 4k"])
        let image = try Qcow2File(path: path)
        let ranges = try image.allocatedRanges()
        #expect(!ranges.isEmpty)
        for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.upperBound < b.lowerBound) }
        #expect(ranges.allSatisfy { $0.lowerBound % 4096 == 0 && $0.upperBound % 4096 == 0 })
        let covered = { (offset: UInt64) in ranges.contains { $0.contains(offset) } }
        // Header, reftable, refblock, L1 at 0..0x30010; L2 table at 0x40000; data at 0x50000 and 0x60000.
        for offset: UInt64 in [0, 0x10000, 0x20000, 0x30000, 0x40000, 0x50000, 0x5f000, 0x60000] {
            #expect(covered(offset), "host offset \(offset) not in \(ranges)")
        }
        let total = ranges.reduce(0) { $0 + $1.count }
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(total <= (image.fileLength + 4095) / 4096 * 4096)
        // GNU stat prints the file-system magic; ef53 is ext2/3/4.
        let fsType = (try? QemuTools.run("stat", ["-f", "-c", "%t", path])).map { String(decoding: $0, as: UTF8.self) }
        if fsType?.trimmingCharacters(in: .whitespacesAndNewlines) == "ef53" {
            // On ext4 the extent map is exactly what st_blocks counts (unwritten extents included).
            #expect(UInt64(total) == UInt64(st.st_blocks) * 512)
        }
    }

    @Test("reading never modifies the file", .requires(QemuTools.io))
    func readOnly() throws {
        let dir = try ScratchDir()
        let path = dir.path("ro.qcow2")
        try QemuTools.create(path, size: "1G", options: "extended_l2=on")
        try QemuTools.io(path, ["write 0 4k", "write 300M 64k"])
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let attributesBefore = try FileManager.default.attributesOfItem(atPath: path)
        do {
            let image = try Qcow2File(path: path)
            for e in try image.l1Table() where e & EntryBits.offsetMask != 0 {
                _ = try image.l2Table(at: e & EntryBits.offsetMask)
            }
            for e in try image.refcountTable() where e != 0 {
                _ = try image.refcountBlock(at: e & EntryBits.reftableOffsetMask)
            }
            _ = try image.allocatedRanges()
        }
        let after = try Data(contentsOf: URL(fileURLWithPath: path))
        let attributesAfter = try FileManager.default.attributesOfItem(atPath: path)
        #expect(before == after)
        #expect(attributesBefore[.modificationDate] as? Date == attributesAfter[.modificationDate] as? Date)
        #expect(attributesBefore[.size] as? UInt64 == attributesAfter[.size] as? UInt64)
    }
}

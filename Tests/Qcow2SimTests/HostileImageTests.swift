import Foundation
import QcowTestSupport
import Testing
import TraceKit

@testable import Qcow2Sim

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 14, the image part: crafted images (built here with qemu-img and byte patches) must end
/// in a located message and exit 65 where QEMU fails or marks the image corrupt, never in a trap,
/// a hang or a huge allocation. The expected QEMU texts were read from qemu-io 7.2 on the same
/// images (quoted in each test).
@Suite(.requires(QemuTools.io))
struct HostileImageTests {
    /// A fresh 1 GiB image (64 KiB clusters) with one 4 KiB write at 0, so that cluster 3 holds
    /// the L1 table (0x30000), cluster 4 the L2 table (0x40000) and cluster 5 the data.
    static func image(_ dir: ScratchDir, _ name: String, options: String = "", write: Bool = true) throws -> String {
        let path = dir.path(name)
        try QemuTools.create(path, size: "1G", options: options)
        if write { try QemuTools.io(path, ["write 0 4k"]) }
        return path
    }

    /// Writes the big-endian `value` at `offset` of `path`.
    static func patch(_ path: String, at offset: UInt64, _ value: UInt64) throws {
        let h = try #require(FileHandle(forWritingAtPath: path))
        defer { try? h.close() }
        try h.seek(toOffset: offset)
        h.write(Data((0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * $0)) }))
    }

    /// Simulates `records` on `path` (`--image`); returns nil on success, else (message, code).
    static func simulate(_ path: String, _ records: [TraceRecord]) -> (String, Int32)? {
        var reader = ArrayTraceReader(records, fileName: "t.csv")
        do {
            _ = try Simulation.run(config: SimulationConfig(virtualSize: 0, imageFile: path), reader: &reader)
            return nil
        } catch let e as SimulationError {
            return (e.description, e.exitCode)
        } catch {
            return ("\(error)", -1)
        }
    }

    static let w = [TraceRecord(op: .write, offset: 0, length: 4096)]
    static let r = [TraceRecord(op: .read, offset: 0, length: 4096)]
    static let d = [TraceRecord(op: .discard, offset: 0, length: 65536)]

    // MARK: - Item 1: heap corruption

    @Test("item 1: an L1 entry with COPIED and offset 0 stops the first write (QEMU asserts); reads see zeroes")
    func copiedL1WithoutOffset() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "l1.qcow2", write: false)
        try Self.patch(p, at: 0x30000, 0x8000_0000_0000_0000)
        let message =
            "\(p): byte 196608: error: L1 entry 0 (0x8000000000000000) has the COPIED flag but no L2 table offset: QEMU 7.2: qcow2_cache_do_get: Assertion `offset != 0' failed (the process aborts on the first write)"
        #expect(Self.simulate(p, Self.w)?.0 == message)
        #expect(Self.simulate(p, Self.w)?.1 == 65)
        #expect(Self.simulate(p, Self.d)?.0 == message)
        // qemu-io reads 4096 bytes of zeroes from this image.
        #expect(Self.simulate(p, Self.r) == nil)
    }

    // MARK: - Item 2: multi-terabyte allocations

    @Test("item 2: an L2 entry of all ones: the read fails (EIO), the discard hits QEMU's refcount-table cap (EFBIG)")
    func allOnesL2Entry() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "ones.qcow2")
        try Self.patch(p, at: 0x40000, .max)
        // qemu-io: "read failed: Input/output error".
        let read = try #require(Self.simulate(p, Self.r))
        #expect(
            read.0
                == "\(p): byte 262144: error: L2 entry 0 of the table at 0x40000 (0xffffffffffffffff): compressed data of 130561 bytes at 0x3fffffffffffff lies past the end of the file (0x60000): QEMU 7.2: the read fails with EIO (zeroes past the end of the file do not decompress)"
        )
        #expect(read.1 == 65)
        // qemu-io: "qcow2_free_clusters failed: File too large".
        let discard = try #require(Self.simulate(p, Self.d))
        #expect(
            discard.0
                == "\(p): error: refcounts up to host offset 0x40000000000000 need a refcount table of 12591104 entries, above QEMU's limit of 8388608 (QCOW_MAX_REFTABLE_SIZE): QEMU 7.2: qcow2_refcount_area fails with EFBIG (\"File too large\"): a write fails; a discard or COW prints \"qcow2_free_clusters failed: File too large\" and leaks the cluster"
        )
        #expect(discard.1 == 65)
    }

    // MARK: - Item 3: overflow traps

    @Test("item 3: entries near 2^64 end in located errors (L2 entry, refcount-table entry at open, --populate range)")
    func entriesNearTwoToThe64() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "near.qcow2")
        try Self.patch(p, at: 0x40000, 0x3fff_ffff_ffff_ffff)
        let unaligned =
            "\(p): byte 262144: error: L2 entry 0 of the table at 0x40000 (0x3fffffffffffffff): QEMU 7.2: qcow2: Marking image as corrupt: Cluster allocation offset 0xfffffffffffe00 unaligned (L2 offset: 0x40000, L2 index: 0); further corruption events will be suppressed"
        #expect(Self.simulate(p, Self.r)?.0 == unaligned)
        #expect(Self.simulate(p, Self.w)?.0 == unaligned)
        #expect(Self.simulate(p, Self.d)?.1 == 65)

        let q = try Self.image(dir, "reftable.qcow2")
        try Self.patch(q, at: 0x10000, 0xffff_ffff_ffff_fe00)
        let open = try #require(Self.simulate(q, Self.r))
        #expect(
            open.0
                == "\(q): byte 65536: error: refcount table entry 0 points to a refcount block at 0xfffffffffffffe00 that is not a whole cluster inside the file (length 0x60000)"
        )
        #expect(open.1 == 65)

        var config = SimulationConfig(
            virtualSize: 1 << 30, populate: .ranges([ByteRange(start: .max, length: 2)]), populateMode: .data)
        config.createOptions = CreateOptions()
        var reader = ArrayTraceReader(Self.w)
        #expect(throws: SimulationError.usage("--populate: range 18446744073709551615:2 lies beyond the virtual size 1073741824"))
        {
            _ = try Simulation.run(config: config, reader: &reader)
        }
    }

    // MARK: - Item 4: an infinite loop

    @Test("item 4: a subcluster both allocated and zero: EIO with QEMU's corruption message, no loop")
    func invalidSubclusterBitmap() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "ext.qcow2", options: "extended_l2=on")
        try Self.patch(p, at: 0x40008, 0x0000_0001_0000_0001)
        // qemu-io read: "qcow2: Marking image as corrupt: Invalid cluster entry found  (L2 offset: 0x40000, L2 index: 0); further corruption events will be suppressed"
        #expect(
            Self.simulate(p, Self.r)?.0
                == "\(p): byte 262152: error: L2 entry 0 of the table at 0x40000: subcluster bitmap 0x100000001 (entry 0x8000000000050000): QEMU 7.2: qcow2: Marking image as corrupt: Invalid cluster entry found  (L2 offset: 0x40000, L2 index: 0); further corruption events will be suppressed"
        )
        // qemu-io write (one space after "found"): the message of calculate_l2_meta.
        let write = try #require(Self.simulate(p, Self.w))
        #expect(
            write.0
                == "\(p): byte 262152: error: L2 entry 0 of the table at 0x40000: subcluster bitmap 0x100000001: QEMU 7.2: qcow2: Marking image as corrupt: Invalid cluster entry found (L2 offset: 0x40000, L2 index: 0); further corruption events will be suppressed"
        )
        #expect(write.1 == 65)
        // qemu-io discards the cluster without looking at the bitmap.
        #expect(Self.simulate(p, Self.d) == nil)
    }

    // MARK: - Corruption QEMU finds at use

    @Test("a data cluster inside the L1 table: the write stops with QEMU's overlap-check message")
    func dataWriteIntoL1() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "overlap.qcow2")
        try Self.patch(p, at: 0x40000, 0x8000_0000_0003_0000)
        // qemu-io: the same corruption line, then "write failed: Input/output error".
        let e = try #require(Self.simulate(p, Self.w))
        #expect(
            e.0
                == "\(p): byte 196608: error: guest data write of 4096 bytes at host offset 0x30000: QEMU 7.2: qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with active L1 table); further corruption events will be suppressed"
        )
        #expect(e.1 == 65)
        #expect(Self.simulate(p, Self.r) == nil)
    }

    @Test("a used cluster with refcount 0: freeing it stops the run (QEMU: EINVAL, the cluster leaks)")
    func zeroRefcountForUsedCluster() throws {
        let dir = try ScratchDir()
        let p = try Self.image(dir, "refcount0.qcow2")
        // Refcount block 0 at 0x20000, 16-bit entries: cluster 5 (the data) at byte 10.
        let h = try #require(FileHandle(forWritingAtPath: p))
        try h.seek(toOffset: 0x2000a)
        h.write(Data([0, 0]))
        try h.close()
        // qemu-io: "qcow2_free_clusters failed: Invalid argument", then the discard succeeds.
        let e = try #require(Self.simulate(p, Self.d))
        #expect(
            e.0
                == "\(p): byte 131082: error: refcount of host cluster 0x5 (offset 0x50000) is 0 and the cluster is freed again: QEMU 7.2: update_refcount fails with EINVAL: \"qcow2_free_clusters failed: Invalid argument\" and the cluster leaks"
        )
        #expect(e.1 == 65)
    }

    // MARK: - Item 10 (image points)

    @Test("item 10: a backing loop is reported as a loop with the chain")
    func backingLoop() throws {
        let dir = try ScratchDir()
        let a = dir.path("a.qcow2"), b = dir.path("b.qcow2")
        try QemuTools.create(a, size: "1M", options: "")
        try QemuTools.create(b, size: "1M", options: "", extra: ["-F", "qcow2", "-b", a])
        try QemuTools.run("qemu-img", ["rebase", "-u", "-F", "qcow2", "-b", b, a])
        let e = try #require(Self.simulate(b, Self.r))
        #expect(e.0 == "\(b): error: backing file '\(b)' creates an infinite loop: \(b) -> \(a) -> \(b)")
        #expect(e.1 == 65)
    }

    @Test("item 10: a FIFO as --image is refused at once, without waiting for a writer")
    func fifoImage() throws {
        let dir = try ScratchDir()
        let f = dir.path("fifo.qcow2")
        #expect(mkfifo(f, 0o600) == 0)
        let e = try #require(Self.simulate(f, Self.r))
        #expect(e.0 == "\(f): error: not a regular file (a FIFO)")
        #expect(e.1 == 66)
    }

    @Test("item 10: an image of virtual size 0 is named as the cause, not --size")
    func zeroSizeImage() throws {
        let dir = try ScratchDir()
        let p = dir.path("empty.qcow2")
        try QemuTools.create(p, size: "0", options: "")
        #expect(Self.simulate(p, []) == nil)
        let e = try #require(Self.simulate(p, Self.r))
        #expect(e.0 == "t.csv:1: error: request [0, 4096) lies beyond the virtual size 0")
        #expect(e.1 == 65)
        // The CLI takes the size from the image without blaming --size.
        let trace = try CLITests.trace("R,0,4096\n")
        let (status, _, stderr) = try CLITests.run(["simulate", trace, "--image", p])
        #expect(status == 65)
        #expect(stderr == "\(trace):1: error: request [0, 4096) lies beyond the virtual size 0\n")
    }

    // MARK: - Seeded mutation test

    /// Real images in cluster-prefix form: plain, chained, extended L2, 512 B, 2 MiB clusters,
    /// version 2, 1-bit refcounts.
    static func seedCorpus(_ dir: ScratchDir) throws -> [[UInt8]] {
        // Small clusters keep 10^4 debug-build runs short; the libFuzzer target also starts from
        // 64 KiB and 2 MiB clusters.
        let specs: [(String, String, [String])] = [
            ("plain", "", ["write 0 64k", "write 1M 4k"]),
            ("ext", "extended_l2=on,cluster_size=16K", ["write 0 4k", "write 1M 64k", "write 2M 6k"]),
            ("c512", "cluster_size=512", ["write 0 4k", "write 1M 1k"]),
            ("v2", "compat=0.10,cluster_size=512", ["write 0 4k", "write -z 2M 4k"]),
            ("rc1", "refcount_bits=1,cluster_size=512", ["write 0 4k"]),
        ]
        var out: [[UInt8]] = []
        for (name, options, writes) in specs {
            let p = dir.path("\(name).qcow2")
            try QemuTools.create(p, size: "16M", options: options)
            try QemuTools.io(p, writes)
            out.append(ImageFuzz.encode(image: Array(try Data(contentsOf: URL(fileURLWithPath: p)))))
        }
        // An overlay naming a backing file (in the fuzz run it opens the same input).
        let top = dir.path("top.qcow2")
        try QemuTools.create(top, size: "16M", options: "cluster_size=512", extra: ["-F", "qcow2", "-b", "c512.qcow2"])
        try QemuTools.io(top, ["write 64k 4k"])
        out.append(ImageFuzz.encode(image: Array(try Data(contentsOf: URL(fileURLWithPath: top)))))
        return out
    }

    @Test("seeded mutation test: 10 000 mutated images end in a finished run or a located error")
    func mutatedImages() throws {
        let dir = try ScratchDir()
        let corpus = try Self.seedCorpus(dir)
        // Every unmutated seed runs the whole trace.
        for seed in corpus { #expect(ImageFuzz.run(seed) == .accepted) }
        let seed: UInt64 = 0x14_1414
        let stats = ImageFuzz.campaign(seed: seed, count: 10_000, corpus: corpus) { s, outcome in
            if case .rejected(let message, let code) = outcome {
                #expect(code == 65 || code == 66, "input seed \(s) (campaign seed \(seed)): exit \(code): \(message)")
                #expect(message.contains(": error: "), "input seed \(s): \(message)")
            }
        }
        print(
            "mutation test: \(stats.inputs) images, \(stats.accepted) ran to the end, rejected by exit code \(stats.rejectedByCode)"
        )
        #expect(stats.inputs == 10_000)
        // The mutations reach both outcomes (a mutator that only ever broke the header would not).
        #expect(stats.accepted > 1000)
        #expect((stats.rejectedByCode[65] ?? 0) > 1000)
    }
}

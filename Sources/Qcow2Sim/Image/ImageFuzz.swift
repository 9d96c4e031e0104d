import TraceKit

/// Mutation fuzzing over qcow2 image bytes, shared by the seeded test (`HostileImageTests`) and
/// the libFuzzer target (`image-fuzz`): open a hostile image and replay a short
/// read/write/discard trace; the only acceptable outcomes are a finished run or a
/// `SimulationError` (a located message and exit code), never a trap, a hang or a huge
/// allocation.
///
/// An input is an image in *cluster-prefix form*: chunk `i` of `min(cluster size, 4 KiB)` bytes
/// is the start of host cluster `i`, the rest of every cluster is zeroes (the cluster size comes
/// from the input's own `cluster_bits` field, clamped to 9...21). An image with 2 MiB clusters
/// thus fits in a few KiB, and mutations land on metadata rather than on zero padding.
public enum ImageFuzz {
    /// What one input did.
    public enum Outcome: Equatable, Sendable {
        /// The trace ran to the end.
        case accepted
        /// The simulator refused the image or stopped at a request: its message and exit code.
        case rejected(String, Int32)
    }

    /// Counts of a fuzz run.
    public struct Stats: Sendable {
        /// Inputs tried.
        public var inputs = 0
        /// Inputs whose trace ran to the end.
        public var accepted = 0
        /// Inputs refused with a located error, by exit code.
        public var rejectedByCode: [Int32: Int] = [:]
        /// A run with nothing counted yet.
        public init() {}
    }

    /// The name the fuzzed top image has in messages; backing files keep the name they are given.
    public static let imageName = "fuzz.qcow2"

    /// Bytes per chunk of the cluster-prefix form.
    static let chunkBytes = 4096

    /// The cluster size an input's header names, clamped to what qcow2 allows.
    static func clusterBits(of input: [UInt8]) -> Int {
        guard input.count >= 24 else { return 16 }
        let v = Int(input[20]) << 24 | Int(input[21]) << 16 | Int(input[22]) << 8 | Int(input[23])
        return min(max(v, Geometry.clusterBitsRange.lowerBound), Geometry.clusterBitsRange.upperBound)
    }

    /// The cluster-prefix form of a whole image file (`seed` inputs from `qemu-img` images).
    public static func encode(image bytes: [UInt8]) -> [UInt8] {
        let cs = 1 << clusterBits(of: bytes)
        let chunk = min(cs, chunkBytes)
        var out: [UInt8] = []
        var at = 0
        while at < bytes.count {
            var piece = Array(bytes[at..<min(bytes.count, at + chunk)])
            if piece.count < chunk { piece += [UInt8](repeating: 0, count: chunk - piece.count) }
            out += piece
            at += cs
        }
        return out
    }

    /// The sparse in-memory file an input describes.
    static func file(_ input: [UInt8], name: String) throws -> Qcow2File {
        let cs = 1 << clusterBits(of: input)
        let chunk = min(cs, chunkBytes)
        var extents: [(UInt64, [UInt8])] = []
        var at = 0, cluster: UInt64 = 0
        while at < input.count {
            extents.append((cluster * UInt64(cs), Array(input[at..<min(input.count, at + chunk)])))
            at += chunk
            cluster += 1
        }
        return try Qcow2File(extents: extents, length: cluster * UInt64(cs), name: name)
    }

    /// The short trace run on every image: reads, writes (in place, allocating, unaligned),
    /// write-zeroes, discards and a flush, placed inside the virtual size `size`.
    static func trace(size: UInt64) -> [TraceRecord] {
        var out: [TraceRecord] = []
        func add(_ op: TraceRecord.Op, _ offset: UInt64, _ length: UInt64, _ flags: TraceRecord.Flags = []) {
            guard offset <= size, length <= size - offset else { return }
            out.append(TraceRecord(op: op, offset: offset, length: length, flags: flags))
        }
        let mid = size / 2 & ~511
        add(.read, 0, min(size, 64 << 10))
        add(.write, 0, 4096)
        add(.write, mid + 512, 20_000)
        add(.writeZeroes, 65_536, 65_536)
        add(.writeZeroes, 4096, 4096, .unmap)
        add(.discard, 0, 131_072)
        add(.read, mid, 32_768)
        add(.read, size >= 4096 ? size - 4096 : 0, min(size, 4096))
        add(.flush, 0, 0)
        return out
    }

    /// Opens `input` and replays `trace(size:)` on it with QEMU's policy. A backing file the
    /// input names opens the input again with its backing-name offset (header bytes 8–15)
    /// cleared: a chain of two images with the same (mutated) metadata.
    public static func run(_ input: [UInt8]) -> Outcome {
        do {
            var depth = 0
            var base = input
            for i in 8..<16 where i < base.count { base[i] = 0 }
            let chain = try Qcow2Image.loadChain(imageName) { name in
                depth += 1
                return try file(depth == 1 ? input : base, name: name)
            }
            guard let top = chain.last else { return .accepted }
            let size = top.geometry.virtualSize
            let config = SimulationConfig(virtualSize: size, imageFile: imageName)
            let source = BoxedSource(ArrayTraceReader(trace(size: size), fileName: "fuzz.csv"))
            _ = try Replay(chain: chain, config: config, log: nil, misEvict: nil, timeline: nil).run(source, policy: QemuPolicy.self)
            return .accepted
        } catch let e as SimulationError {
            return .rejected(e.description, e.exitCode)
        } catch {
            return .rejected("\(error)", 70)
        }
    }

    /// The mutated input for `seed` (deterministic: replay a failure with the printed seed).
    /// Edits favour the places a hostile image changes: header fields, and 64-bit words of the
    /// metadata clusters (L1, L2 and refcount-table entries, bitmaps, refcounts), with values
    /// near the limits QEMU checks.
    public static func input(seed: UInt64, corpus: [[UInt8]]) -> [UInt8] {
        var rng = Xoshiro256StarStar(seed: seed)
        var b = corpus[Int(rng.nextBelow(UInt64(corpus.count)))]
        guard !b.isEmpty else { return b }
        let headerFields = [4, 8, 16, 20, 24, 32, 36, 40, 48, 56, 60, 72, 80, 88, 96, 100]
        let edits = 1 + Int(rng.nextBelow(3))
        for _ in 0..<edits {
            let n = UInt64(b.count)
            // A word position: a header field, or any aligned word (the metadata clusters of a
            // small image are most of its chunks).
            let word =
                rng.nextBelow(4) == 0
                ? headerFields[Int(rng.nextBelow(UInt64(headerFields.count)))] : Int(rng.nextBelow(n / 8 + 1)) * 8
            switch rng.nextBelow(6) {
            case 0: b[Int(rng.nextBelow(n))] ^= UInt8(1) << UInt8(rng.nextBelow(8))
            case 1: b[Int(rng.nextBelow(n))] = UInt8(truncatingIfNeeded: rng.next())
            case 2 where rng.nextBelow(8) == 0: b = Array(b.prefix(Int(rng.nextBelow(n + 1))))
            default:
                let interesting: [UInt64] = [
                    0, 1, 0x8000_0000_0000_0000, .max, .max - 511, 0x00ff_ffff_ffff_fe00, 0x80ff_ffff_ffff_0000,
                    0x4000_0000_0000_0000, 0x0000_0001_0000_0001, 0xffff_ffff_0000_0000, 0x0000_0000_ffff_ffff,
                    0x8000_0000_0000_0000 | (rng.nextBelow(64) << 9), 0x8000_0000_0000_0000 | (rng.nextBelow(64) << 16),
                    rng.nextBelow(64) << 16, UInt64(1) << rng.nextBelow(64), rng.next(),
                ]
                let v = interesting[Int(rng.nextBelow(UInt64(interesting.count)))]
                let width = rng.nextBelow(3) == 0 ? 4 : 8
                for i in 0..<width where word + i < b.count {
                    b[word + i] = UInt8(truncatingIfNeeded: v >> UInt64(8 * (width - 1 - i)))
                }
            }
        }
        return b
    }

    /// Runs `count` mutated inputs from `seed` on; `check` sees each outcome (and its seed).
    public static func campaign(
        seed: UInt64, count: Int, corpus: [[UInt8]], check: (UInt64, Outcome) -> Void = { _, _ in }
    ) -> Stats {
        var stats = Stats()
        for i in 0..<count {
            let s = seed &+ UInt64(i)
            let outcome = run(input(seed: s, corpus: corpus))
            stats.inputs += 1
            switch outcome {
            case .accepted: stats.accepted += 1
            case .rejected(_, let code): stats.rejectedByCode[code, default: 0] += 1
            }
            check(s, outcome)
        }
        return stats
    }
}

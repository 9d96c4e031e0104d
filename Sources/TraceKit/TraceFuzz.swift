import Foundation

/// Mutation fuzzing over every reader, shared by the seeded test and the libFuzzer target.
public enum TraceFuzz {
    /// Counts of a fuzz run.
    public struct Stats: Sendable {
        /// Inputs tried.
        public var inputs = 0
        /// Inputs read to the end without error.
        public var accepted = 0
        /// Inputs rejected with a `TraceError`.
        public var rejected = 0
        /// A run with nothing counted yet.
        public init() {}
    }

    /// Valid small inputs for every format, plus the first 2 KiB of each file in
    /// `extraDirectory` (uncompressed files only).
    public static func seedCorpus(extraDirectory: String? = nil) -> [[UInt8]] {
        var seeds: [[UInt8]] = [
            "time,op,offset,length\n0.5,W,1M,64K\nR,0,4096\n1,D,1G,2G\n2,z,8,8\n3,F,0,0\n",
            "259,0    1        1     0.000000000 21279  A  RA 2348060440 + 8 <- (259,3) 2345510680\n259,0    1        6     0.000001676 21279  D  RA 2348060440 + 8 [(null)]\n259,0    1        7     0.000056992     0  C  RA 2348060440 + 8 [0]\n8,0 0 3 0.1 1 R W 8 + 8 [x]\n8,0 0 4 0.2 1 D FWS [k]\nCPU1 (259,0):\n",
            "fio version 2 iolog\n/dev/sda add\n/dev/sda open\n/dev/sda write 0 4096\n/dev/sda wait 100\n/dev/sda read 4096 512\n/dev/sda trim 0 8192\n/dev/sda sync 0 0\n",
            "fio version 3 iolog\n30 /dev/null add\n10736 /dev/null trim 0 2147483648\n10752 /dev/null write 0 4096\n",
            "version,time,op,size,lbn\n1,5633898,2a,512,42932745\n1,5633899,28,4096,8\n",
            "128166385295514663,hm,0,Write,9056014336,2048,2833\n128166385295514878,hm,1,Read,11855351808,512,2617\n",
            "Timestamp,Response,IOType,LUN,Offset,Size\n1456095145.133076000,0.000806000,R,0,899056122368,131072\n1456095145.126285000,0.008044000,W,1,4096,512\n",
            "1538323200,4247200,128,1,1058\n1538323199,13896880,128,0,1063\n",
            "1,R,126703644672,4096,1577808000000100\n2,W,0,512,1577808000000000\n",
            "0,20941264,8192,W,0.551706\n1,20939840,8192,r,0.554041,extra\n",
            "4242@1700000000.500000:blk_co_pwritev blk 0x55 bs 0x56 offset 0 bytes 512 flags 0x16\nblk_co_preadv blk 0x55 bs 0x56 offset 512 bytes 512 flags 0x0\nblk_co_flush blk 0x55\n",
        ].map { Array($0.utf8) }
        var blk: [UInt8] = []
        let actions: [UInt32] = [
            15 | 0x0811 << 16, 1 | 0x11 << 16, 6 | 0x21 << 16, 7 | 0x8041 << 16, 7 | 0x2042 << 16, 7 | 0x46 << 16, 0x400 << 16,
        ]
        for (i, act) in actions.enumerated() {
            func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { blk += $0 } }
            func put64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { blk += $0 } }
            put32(0x6561_7407); put32(UInt32(i)); put64(UInt64(1000 * i)); put64(2048); put32(i == 5 ? 0 : 4096); put32(act)
            put32(1); put32(259 << 20); put32(1); blk += [0, 0]
            let pdu: [UInt8] = act & 0xFFFF == 15 ? [0x10, 0x30, 0, 3, 0x10, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0] : []
            withUnsafeBytes(of: UInt16(pdu.count).littleEndian) { blk += $0 }
            blk += pdu
        }
        seeds.append(blk)
        var vs: [UInt8] = []
        let commands: [(UInt16, UInt16)] = [(0x28, 0x0100), (0x2a, 0x0100), (0x12, 0x0100), (0x88, 0x0100)]
        for (cmd, ver) in commands {
            func put(_ v: some FixedWidthInteger) { withUnsafeBytes(of: v.littleEndian) { vs += $0 } }
            put(UInt32(1)); put(UInt32(4096)); put(UInt32(1)); put(cmd); put(ver); put(UInt64(8)); put(UInt64(1_000_000))
        }
        seeds.append(vs)
        if let dir = extraDirectory, let names = try? FileManager.default.contentsOfDirectory(atPath: dir) {
            for n in names.sorted() where !n.hasSuffix(".gz") && !n.hasSuffix(".bz2") && !n.hasSuffix(".md") {
                if let d = FileManager.default.contents(atPath: (dir as NSString).appendingPathComponent(n)) {
                    seeds.append(Array(d.prefix(2048)))
                }
            }
        }
        return seeds
    }

    /// The mutated input for `seed` (deterministic; replay a failure with the printed seed).
    public static func input(seed: UInt64, corpus: [[UInt8]]) -> [UInt8] {
        var rng = Xoshiro256StarStar(seed: seed)
        var b = corpus[Int(rng.nextBelow(UInt64(corpus.count)))]
        let edits = 1 + Int(rng.nextBelow(4))
        for _ in 0..<edits {
            let n = UInt64(Swift.max(b.count, 1))
            switch rng.nextBelow(8) {
            case 0 where !b.isEmpty: b[Int(rng.nextBelow(n))] ^= UInt8(1) << UInt8(rng.nextBelow(8))
            case 1 where !b.isEmpty: b[Int(rng.nextBelow(n))] = UInt8(truncatingIfNeeded: rng.next())
            case 2: b = Array(b.prefix(Int(rng.nextBelow(n + 1))))
            case 3:
                b.insert(
                    contentsOf: [
                        UInt8(ascii: ","), UInt8(ascii: "-"), UInt8(ascii: "9"), 0x0A, 0, 0xFF, UInt8(ascii: "."),
                        UInt8(ascii: " "),
                    ].shuffled(using: &rng).prefix(Int(1 + rng.nextBelow(4))), at: Int(rng.nextBelow(n)))
            case 4 where !b.isEmpty:
                let a = Int(rng.nextBelow(n)); let len = Swift.min(b.count - a, Int(rng.nextBelow(64)))
                b.insert(contentsOf: b[a..<(a + len)], at: Int(rng.nextBelow(n)))
            case 5 where !b.isEmpty:
                let a = Int(rng.nextBelow(n)); let len = Swift.min(b.count - a, Int(rng.nextBelow(16)))
                b.removeSubrange(a..<(a + len))
            case 6 where !b.isEmpty: b[Int(rng.nextBelow(n))] = [0x30, 0x39, 0x2C, 0x0A, 0xFF, 0x00, 0x7F][Int(rng.nextBelow(7))]
            default:
                if !b.isEmpty {
                    let i = Int(rng.nextBelow(n));
                    b.replaceSubrange(i..<Swift.min(b.count, i + 8), with: repeatElement(0xFF, count: 8))
                }
            }
        }
        return b
    }

    /// The reader (`nil`: detection) and options input `seed` is read with: even seeds are
    /// detected, odd ones forced to one format in turn; some get a disk bound or a reorder window.
    public static func configuration(seed: UInt64) -> (format: TraceFormat?, options: TraceOptions) {
        let forced = TraceFormat.allCases[Int(seed % UInt64(TraceFormat.allCases.count))]
        var options = TraceOptions()
        if seed % 7 == 0 { options.diskSize = 1 << 30; options.beyondDisk = [.reject, .wrap, .clip][Int(seed / 7 % 3)] }
        if seed % 5 == 0 { options.reorderWindow = 4 }
        return (seed % 2 == 0 ? nil : forced, options)
    }

    /// Runs one seeded input through detection and through one explicitly chosen reader.
    public static func run(seed: UInt64, corpus: [[UInt8]], stats: inout Stats) {
        let b = input(seed: seed, corpus: corpus)
        let (format, options) = configuration(seed: seed)
        stats.inputs += 1
        if parse(b, format: format, options: options) { stats.accepted += 1 } else { stats.rejected += 1 }
    }

    /// Reads `bytes` as `format` (nil = detect) to the end or the first error; true when the
    /// whole input was accepted. Never traps on any input.
    @discardableResult
    public static func parse(_ bytes: [UInt8], format: TraceFormat?, options: TraceOptions = TraceOptions()) -> Bool {
        do {
            var r = try TraceFile.open(bytes: bytes, fileName: "fuzz", format: format, options: options)
            var n = 0
            while try r.next() != nil, n < 100_000 { n += 1 }
            return true
        } catch {
            return false
        }
    }
}

import Foundation

/// Parse-throughput benchmarks for the bench target (`qcow2sim-bench`): synthesizes a large
/// blktrace binary and its blkparse text in memory and times the readers over them.
public enum TraceBenchmarks {
    /// One measurement.
    public struct Result: Sendable, CustomStringConvertible {
        /// What was parsed.
        public var name: String
        /// Input bytes.
        public var bytes: Int
        /// Records produced.
        public var records: Int
        /// Events (binary records or text lines) in the input.
        public var events: Int
        /// CPU seconds of the best run.
        public var seconds: Double
        /// Megabytes (10⁶ bytes) per second.
        public var megabytesPerSecond: Double { Double(bytes) / seconds / 1e6 }
        /// Events per second.
        public var eventsPerSecond: Double { Double(events) / seconds }
        /// `name: N MB/s, M events/s (R records)`.
        public var description: String {
            String(
                format: "%@: %.0f MB/s, %.2fM events/s (%d bytes, %d events, %d records, %.3f s)",
                name, megabytesPerSecond, eventsPerSecond / 1e6, bytes, events, records, seconds)
        }
    }

    /// A synthetic blktrace recording of `ios` I/Os, each as Q, G, D, C events (48 bytes each),
    /// reads and writes of 4–64 KiB, seeded.
    public static func syntheticBlktrace(ios: Int, seed: UInt64 = 1) -> [UInt8] {
        var rng = Xoshiro256StarStar(seed: seed)
        var b: [UInt8] = []
        b.reserveCapacity(ios * 4 * 48)
        var t: UInt64 = 1_000_000
        var seq: UInt32 = 0
        for _ in 0..<ios {
            let sector = rng.nextBelow(1 << 30) & ~7
            let bytes = UInt32(4096 << rng.nextBelow(5))
            let dir: UInt32 = rng.nextBelow(2) == 0 ? 1 : 2
            for (act, cat) in [(UInt32(1), UInt32(0x10)), (4, 0x10), (7, 0x40), (8, 0x80)] {
                seq += 1
                t += 1 + rng.nextBelow(2000)
                func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
                func put64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
                put32(0x6561_7407); put32(seq); put64(t); put64(sector); put32(bytes)
                put32(act | (cat | dir) << 16); put32(4242); put32(8 << 20); put32(0)
                b += [0, 0, 0, 0]
            }
        }
        return b
    }

    /// blkparse-style text for the same kind of events (one line per event).
    public static func syntheticBlkparse(ios: Int, seed: UInt64 = 1) -> [UInt8] {
        var rng = Xoshiro256StarStar(seed: seed)
        var s = ""
        s.reserveCapacity(ios * 4 * 70)
        var t: UInt64 = 0
        var seq = 0
        for _ in 0..<ios {
            let sector = rng.nextBelow(1 << 30) & ~7
            let sectors = 8 << rng.nextBelow(5)
            let rw = rng.nextBelow(2) == 0 ? "R" : "W"
            for act in ["Q", "G", "D", "C"] {
                seq += 1
                t += 1 + rng.nextBelow(2000)
                let frac = String(t % 1_000_000_000)
                let padded = String(repeating: "0", count: 9 - frac.count) + frac
                s +=
                    "  8,0    0 \(String(seq).leftPad(8)) \(String(t / 1_000_000_000).leftPad(5)).\(padded)  4242  \(act)   \(rw) \(sector) + \(sectors) [fio]\n"
            }
        }
        return Array(s.utf8)
    }

    /// CPU seconds (user + system) this process has used: on a shared machine, wall time
    /// measures the neighbours.
    public static func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Times `body` `repeats` times in CPU seconds and keeps the best.
    static func time(_ repeats: Int, _ body: () throws -> Int) rethrows -> (Double, Int) {
        var best = Double.infinity
        var n = 0
        for _ in 0..<repeats {
            let start = cpuSeconds()
            n = try body()
            best = Swift.min(best, cpuSeconds() - start)
        }
        return (best, n)
    }

    /// Measures blktrace binary and blkparse text parsing over `ios` synthetic I/Os (4 events
    /// each), and native CSV and binary over `4 ios` requests; run it from a release build.
    public static func parseThroughput(ios: Int = 1_000_000, repeats: Int = 3) throws -> [Result] {
        let bin = syntheticBlktrace(ios: ios)
        let text = syntheticBlkparse(ios: ios)
        let (tb, nb) = try time(repeats) {
            var r = try TraceFile.open(bytes: bin, fileName: "bench.blktrace.0", format: .blktrace)
            var n = 0
            while try r.next() != nil { n += 1 }
            return n
        }
        let (tt, nt) = try time(repeats) {
            var r = try TraceFile.open(bytes: text, fileName: "bench.blkparse.txt", format: .blkparse)
            var n = 0
            while try r.next() != nil { n += 1 }
            return n
        }
        // The native CSV and the binary native format of the same 4 ios requests (uniform 4 KiB
        // reads and writes over 1 TiB, no time column), read through TraceFile like any trace.
        let spec = WorkloadSpec(pattern: .uniform, count: ios * 4, diskSize: 1 << 40, requestSize: 4096, readRatio: 0.5, seed: 1)
        var csvWriter = NativeTraceWriter(withTime: false)
        var binWriter = NativeBinaryTraceWriter(count: UInt64(spec.count))
        for r in try WorkloadGenerator(spec) {
            csvWriter.append(r)
            binWriter.append(r)
        }
        let csv = csvWriter.take()
        let native = binWriter.take()
        let (tc, nc) = try time(repeats) {
            var r = try TraceFile.open(bytes: csv, fileName: "bench.csv", format: .native)
            var n = 0
            while try r.next() != nil { n += 1 }
            return n
        }
        let (tn, nn) = try time(repeats) {
            var r = try TraceFile.open(bytes: native, fileName: "bench.bin")
            var n = 0
            while try r.next() != nil { n += 1 }
            return n
        }
        return [
            Result(name: "blktrace binary", bytes: bin.count, records: nb, events: ios * 4, seconds: tb),
            Result(name: "blkparse text", bytes: text.count, records: nt, events: ios * 4, seconds: tt),
            Result(name: "native CSV", bytes: csv.count, records: nc, events: spec.count, seconds: tc),
            Result(name: "native binary", bytes: native.count, records: nn, events: spec.count, seconds: tn),
        ]
    }
}

extension String {
    fileprivate func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

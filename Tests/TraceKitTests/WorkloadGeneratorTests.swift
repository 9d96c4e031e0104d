import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

@Suite struct WorkloadGeneratorTests {
    /// SplitMix64's published first output for seed 0 (Vigna's splitmix64.c) is
    /// 0xe220a8397b1dcdaf; xoshiro256**'s first output from state {1,2,3,4} is 11520
    /// (rotl(2*5, 7) * 9). Our seeding uses SplitMix64's first four outputs as the state.
    @Test func prngMatchesReferenceVectors() {
        var x = Xoshiro256StarStar(state: (1, 2, 3, 4))
        #expect(x.next() == 11520)
        #expect(x.next() == 0)
        let s = Xoshiro256StarStar.splitMix64Outputs(seed: 0, count: 1)
        #expect(s == [0xE220_A839_7B1D_CDAF])
    }

    /// The tests' seeded generator (QcowTestSupport's SplitMix64) is the same SplitMix64: the
    /// published first output for seed 0, and the library's sequence for the seeds the tests use.
    @Test func testSupportSplitMix64IsSplitMix64() {
        var zero = SplitMix64(seed: 0)
        #expect(zero.next() == 0xE220_A839_7B1D_CDAF)
        for seed: UInt64 in [1, 5, 42, 1000, 0x14_1414] {
            var g = SplitMix64(seed: seed)
            #expect((0..<64).map { _ in g.next() } == Xoshiro256StarStar.splitMix64Outputs(seed: seed, count: 64), "seed \(seed)")
        }
    }

    @Test func sameSeedSameTrace() throws {
        for pattern: WorkloadSpec.Pattern in [
            .uniform, .sequential, .zipf(theta: 0.99), .hotset(hotFraction: 0.1, hotAccess: 0.9),
        ] {
            let spec = WorkloadSpec(pattern: pattern, count: 1000, diskSize: 1 << 30, readRatio: 0.7, seed: 42)
            let a = Array(try WorkloadGenerator(spec))
            let b = Array(try WorkloadGenerator(spec))
            #expect(a == b)
            #expect(a.count == 1000)
            var other = spec
            other.seed = 43
            if pattern != .sequential { #expect(a != Array(try WorkloadGenerator(other))) }
            for r in a {
                #expect(r.offset % 4096 == 0 && r.offset + r.length <= 1 << 30 && r.length == 4096)
            }
        }
    }

    /// Batches (`next(into:admitting:)`, a loop of its own for untimed uniform workloads) hold
    /// the records `next()` returns, in order; a refused record ends a batch, consumed and
    /// located, and the next batch goes on after it.
    @Test(arguments: [WorkloadSpec.Pattern.uniform, .zipf(theta: 0.9)])
    func batchesHoldTheRecordsNextReturns(pattern: WorkloadSpec.Pattern) throws {
        let spec = WorkloadSpec(pattern: pattern, count: 10_000, diskSize: 1 << 30, readRatio: 0.7, seed: 4)
        let expected = Array(try WorkloadGenerator(spec))
        let buffer = UnsafeMutableBufferPointer<TraceRecord>.allocate(capacity: 4096)
        buffer.initialize(repeating: TraceRecord(op: .read, offset: 0, length: 0))
        defer { buffer.deallocate() }
        for writes in [true, false] {
            var g = try WorkloadGenerator(spec)
            var got: [TraceRecord] = []
            var refusals = 0
            loop: while true {
                let (n, end) = g.next(into: buffer, admitting: PlainReads(size: 1 << 30, maxLength: 1 << 20, writes: writes))
                got += buffer[0..<n]
                switch end {
                case .full: continue
                case .ended: break loop
                case .refused(let r):
                    #expect(r.op == .write)
                    #expect(g.location == .line(got.count + 1))
                    got.append(r)
                    refusals += 1
                case .failed(let e): Issue.record("\(e)")
                }
            }
            #expect(got == expected, "writes admitted: \(writes)")
            #expect(refusals == (writes ? 0 : expected.filter { $0.op == .write }.count))
        }
    }

    @Test func sequentialWrapsInRegion() throws {
        let spec = WorkloadSpec(
            pattern: .sequential, count: 6, diskSize: 1 << 20, requestSize: 4096,
            regionStart: 8192, regionLength: 16384, interval: 0.5)
        let r = Array(try WorkloadGenerator(spec))
        #expect(r.map(\.offset) == [8192, 12288, 16384, 20480, 8192, 12288])
        #expect(r.map(\.time) == [0, 0.5, 1, 1.5, 2, 2.5])
    }

    @Test func readRatioIsRespected() throws {
        let spec = WorkloadSpec(count: 100_000, diskSize: 1 << 30, readRatio: 0.25, seed: 9)
        let reads = try WorkloadGenerator(spec).filter { $0.op == .read }.count
        #expect(abs(Double(reads) / 100_000 - 0.25) < 0.01)
    }

    @Test func zipfFrequenciesFollowThePowerLaw() throws {
        // P(rank 1) = 1 / H(n, θ) with H the generalised harmonic number.
        let n: UInt64 = 1000, theta = 0.99
        let h = (1...n).reduce(0.0) { $0 + 1 / pow(Double($1), theta) }
        var rng = Xoshiro256StarStar(seed: 5)
        let z = ZipfSampler(n: n, theta: theta)
        var counts = [Int](repeating: 0, count: Int(n) + 1)
        let draws = 200_000
        for _ in 0..<draws { counts[Int(z.sample(&rng))] += 1 }
        for k in [1, 2, 10, 100] {
            let expected = 1 / pow(Double(k), theta) / h
            let observed = Double(counts[k]) / Double(draws)
            #expect(abs(observed - expected) / expected < 0.1, "rank \(k): \(observed) vs \(expected)")
        }
        #expect(counts[0] == 0)
    }

    @Test func hotsetSendsTheHotShareToTheHotRegion() throws {
        let spec = WorkloadSpec(pattern: .hotset(hotFraction: 0.1, hotAccess: 0.9), count: 100_000, diskSize: 1 << 30, seed: 3)
        let hot = try WorkloadGenerator(spec).filter { $0.offset < (1 << 30) / 10 }.count
        #expect(abs(Double(hot) / 100_000 - 0.9) < 0.01)
    }

    @Test(arguments: [
        (WorkloadSpec(count: 1, diskSize: 1 << 20, readRatio: 1.5), "read ratio '1.5' is not between 0 and 1"),
        (WorkloadSpec(count: 1, diskSize: 1 << 20, requestSize: 0), "request size '0' must be positive"),
        (
            WorkloadSpec(count: 1, diskSize: 4096, regionStart: 0, regionLength: 8192),
            "region 0:8192 ends beyond the disk size 4096"
        ),
        (WorkloadSpec(count: 1, diskSize: 1024), "region length 1024 is smaller than the request size 4096"),
        (WorkloadSpec(pattern: .zipf(theta: 0), count: 1, diskSize: 1 << 20), "theta '0.0' must be positive"),
        (
            WorkloadSpec(pattern: .hotset(hotFraction: 1, hotAccess: 0.5), count: 1, diskSize: 1 << 20),
            "hot fraction '1.0' is not strictly between 0 and 1"
        ),
    ])
    func invalidSpecs(_ spec: WorkloadSpec, _ message: String) {
        #expect(throws: TraceError(file: "generate", location: .file, message: message, exitCode: 64)) { try spec.validate() }
    }

    @Test func writerRoundTrips() throws {
        let spec = WorkloadSpec(
            pattern: .zipf(theta: 0.9), count: 5000, diskSize: 1 << 34, readRatio: 0.5, seed: 11, interval: 0.000123)
        let recs = Array(try WorkloadGenerator(spec))
        var w = NativeTraceWriter(withTime: true)
        for r in recs { w.append(r) }
        var back: [TraceRecord] = []
        var reader = NativeTraceReader(bytes: w.bytes)
        while let r = try reader.next() { back.append(r) }
        #expect(back.count == recs.count)
        for (a, b) in zip(recs, back) {
            #expect(a.op == b.op && a.offset == b.offset && a.length == b.length)
            #expect(abs((a.time ?? -1) - (b.time ?? 1)) <= 1e-9)
        }
        let text = String(decoding: w.bytes.prefix(60), as: UTF8.self)
        #expect(text.hasPrefix("time,op,offset,length\n0,"))
    }
}

import Foundation

/// A portable pseudo-random generator: xoshiro256** (Blackman & Vigna, 2018) seeded through
/// SplitMix64, as its authors recommend. Pure integer arithmetic with wrapping operators, so a
/// seed produces the same sequence on every machine and Swift version.
public struct Xoshiro256StarStar: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    /// Seeds the four state words from SplitMix64(`seed`).
    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            return Self.splitMix64Mix(x)
        }
        s0 = splitmix(); s1 = splitmix(); s2 = splitmix(); s3 = splitmix()
    }

    /// A generator with an explicit state (reference-vector tests).
    init(state: (UInt64, UInt64, UInt64, UInt64)) {
        (s0, s1, s2, s3) = state
    }

    /// The first `count` SplitMix64 outputs for `seed` (reference-vector tests).
    static func splitMix64Outputs(seed: UInt64, count: Int) -> [UInt64] {
        var x = seed
        return (0..<count).map { _ in
            x &+= 0x9E37_79B9_7F4A_7C15
            return splitMix64Mix(x)
        }
    }

    /// SplitMix64's output function (Steele, Lea & Flood, OOPSLA 2014): a bijective, well-mixed
    /// 64-bit value of `z`.
    @inline(__always)
    public static func splitMix64Mix(_ z: UInt64) -> UInt64 {
        var z = z
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// A double uniformly distributed in [0, 1), from the top 53 bits.
    @inline(__always)
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// An integer uniformly distributed in [0, n) (Lemire's multiply-shift, unbiased by rejection).
    @inline(__always)
    public mutating func nextBelow(_ n: UInt64) -> UInt64 {
        precondition(n > 0)
        var m = next().multipliedFullWidth(by: n)
        if m.low < n {
            let threshold = (0 &- n) % n
            while m.low < threshold { m = next().multipliedFullWidth(by: n) }
        }
        return m.high
    }
}

/// Samples ranks 1...n with P(k) ∝ 1/k^θ in O(1) time and O(1) setup, by rejection-inversion
/// (W. Hörmann and G. Derflinger, "Rejection-inversion to generate variates from monotone
/// discrete distributions", ACM TOMACS 6(3), 1996). Unlike Gray et al.'s method it needs no
/// O(n) zeta sum, so it works for a 2^32-slot disk.
public struct ZipfSampler: Sendable {
    /// Number of ranks.
    public let n: UInt64
    /// The exponent θ (> 0).
    public let theta: Double
    private let hx1: Double
    private let hn: Double
    private let s: Double

    /// A sampler over ranks 1...`n` with exponent `theta`.
    public init(n: UInt64, theta: Double) {
        precondition(n >= 1 && theta > 0)
        self.n = n
        self.theta = theta
        hx1 = Self.hIntegral(1.5, theta) - 1
        hn = Self.hIntegral(Double(n) + 0.5, theta)
        s = 2 - Self.hIntegralInverse(Self.hIntegral(2.5, theta) - Self.h(2, theta), theta)
    }

    /// A rank in 1...n; rank 1 is the most frequent.
    @inline(__always)
    public func sample(_ rng: inout Xoshiro256StarStar) -> UInt64 {
        while true {
            let u = hn + rng.nextUnit() * (hx1 - hn)
            let x = Self.hIntegralInverse(u, theta)
            var k = (x + 0.5).rounded(.down)
            if k < 1 { k = 1 } else if k > Double(n) { k = Double(n) }
            if k - x <= s || u >= Self.hIntegral(k + 0.5, theta) - Self.h(k, theta) {
                return UInt64(k)
            }
        }
    }

    // h(x) = x^-θ, H its integral (shifted so θ = 1 needs no special case), H⁻¹ its inverse.
    private static func h(_ x: Double, _ t: Double) -> Double { exp(-t * log(x)) }
    private static func hIntegral(_ x: Double, _ t: Double) -> Double {
        let lx = log(x)
        return helper2((1 - t) * lx) * lx
    }
    private static func hIntegralInverse(_ x: Double, _ t: Double) -> Double {
        var y = x * (1 - t)
        if y < -1 { y = -1 }
        return exp(helper1(y) * x)
    }
    /// log(1+x)/x, accurate near 0.
    private static func helper1(_ x: Double) -> Double {
        abs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
    /// (e^x − 1)/x, accurate near 0.
    private static func helper2(_ x: Double) -> Double {
        abs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x))
    }
}

/// What ``WorkloadGenerator`` produces.
public struct WorkloadSpec: Sendable, Equatable {
    /// How offsets are chosen. Slots are `alignment`-spaced request positions in the region;
    /// slot 0 is at the region's start.
    public enum Pattern: Sendable, Equatable {
        /// Every slot equally likely.
        case uniform
        /// Slots 0, 1, 2, … wrapping at the end of the region.
        case sequential
        /// Slot k−1 with probability ∝ 1/k^θ (rank 1 = slot 0, so the hottest data sits at the
        /// region's start), sampled by rejection-inversion (``ZipfSampler``).
        case zipf(theta: Double)
        /// The first `hotFraction` of the slots receives `hotAccess` of the requests, uniformly;
        /// the rest go uniformly to the other slots.
        case hotset(hotFraction: Double, hotAccess: Double)
    }

    /// Offset pattern.
    public var pattern: Pattern
    /// Number of records.
    public var count: Int
    /// Virtual disk size in bytes.
    public var diskSize: UInt64
    /// Bytes per request.
    public var requestSize: UInt64
    /// Fraction of requests that are reads (the rest are writes).
    public var readRatio: Double
    /// PRNG seed: the same seed gives the same trace on every machine.
    public var seed: UInt64
    /// Byte offset of the region the requests fall in.
    public var regionStart: UInt64
    /// Region length in bytes; `nil` = to the end of the disk.
    public var regionLength: UInt64?
    /// Offset granularity; `nil` = `requestSize`.
    public var alignment: UInt64?
    /// Seconds between consecutive requests; `nil` = untimed records.
    public var interval: Double?

    /// A spec with the usual defaults (4 KiB reads, seed 1, whole disk, untimed).
    public init(
        pattern: Pattern = .uniform, count: Int, diskSize: UInt64, requestSize: UInt64 = 4096,
        readRatio: Double = 1, seed: UInt64 = 1, regionStart: UInt64 = 0, regionLength: UInt64? = nil,
        alignment: UInt64? = nil, interval: Double? = nil
    ) {
        self.pattern = pattern
        self.count = count
        self.diskSize = diskSize
        self.requestSize = requestSize
        self.readRatio = readRatio
        self.seed = seed
        self.regionStart = regionStart
        self.regionLength = regionLength
        self.alignment = alignment
        self.interval = interval
    }

    /// Checks the spec; the message quotes the bad value and says what was expected.
    public func validate() throws {
        func bad(_ m: String) -> TraceError { TraceError(file: "generate", location: .file, message: m, exitCode: 64) }
        guard count >= 0 else { throw bad("count '\(count)' is negative") }
        guard requestSize > 0 else { throw bad("request size '0' must be positive") }
        let align = alignment ?? requestSize
        guard align > 0 else { throw bad("alignment '0' must be positive") }
        guard readRatio >= 0 && readRatio <= 1 else { throw bad("read ratio '\(readRatio)' is not between 0 and 1") }
        guard regionStart <= diskSize else { throw bad("region start \(regionStart) is beyond the disk size \(diskSize)") }
        let length = regionLength ?? (diskSize - regionStart)
        guard !regionStart.addingReportingOverflow(length).overflow, regionStart + length <= diskSize else {
            throw bad("region \(regionStart):\(length) ends beyond the disk size \(diskSize)")
        }
        guard regionStart % align == 0 else {
            throw bad("region start \(regionStart) is not a multiple of the alignment \(align)")
        }
        guard length >= requestSize else { throw bad("region length \(length) is smaller than the request size \(requestSize)") }
        if let interval {
            guard interval >= 0 && interval.isFinite else {
                throw bad("interval '\(interval)' must be a non-negative number of seconds")
            }
            // The last record's time must stay a usable trace time (`TraceRecord.maxTime`).
            let last = Double(Swift.max(count - 1, 0)) * interval
            guard last <= TraceRecord.maxTime else {
                throw bad(
                    "interval '\(interval)' puts record \(count) beyond the trace time limit of 4503599627370496 s (2^52)")
            }
        }
        switch pattern {
        case .zipf(let theta):
            guard theta > 0 && theta.isFinite else { throw bad("theta '\(theta)' must be positive") }
        case .hotset(let f, let a):
            guard f > 0 && f < 1 else { throw bad("hot fraction '\(f)' is not strictly between 0 and 1") }
            guard a >= 0 && a <= 1 else { throw bad("hot access '\(a)' is not between 0 and 1") }
        default: break
        }
    }

    /// Number of request positions in the region.
    var slots: UInt64 {
        let align = alignment ?? requestSize
        let length = regionLength ?? (diskSize - regionStart)
        return (length - requestSize) / align + 1
    }
}

/// Generates a synthetic workload in memory: a `Sequence` and a ``TraceReader`` of
/// ``TraceRecord``, so 10⁷ requests can be simulated without a file.
///
/// ```swift
/// let spec = WorkloadSpec(pattern: .zipf(theta: 0.99), count: 1_000_000, diskSize: 1 << 34, seed: 42)
/// for record in try WorkloadGenerator(spec) { … }
/// ```
///
/// Per record it draws, in order: one unit double for the op (read when < `readRatio`), then the
/// pattern's draws (none for sequential; one bounded integer for uniform; zipf's
/// rejection loop; a unit double plus a bounded integer for hotset). Changing that order changes
/// every seeded trace, so it is fixed.
public struct WorkloadGenerator: Sequence, IteratorProtocol, TraceReader {
    /// The spec being generated.
    public let spec: WorkloadSpec
    private var rng: Xoshiro256StarStar
    private let slots: UInt64
    private let align: UInt64
    private let zipf: ZipfSampler?
    private let hotSlots: UInt64
    private var produced = 0
    /// `<generated>`.
    public var fileName: String { "<generated>" }

    /// A generator for `spec`; throws when the spec is invalid.
    public init(_ spec: WorkloadSpec) throws {
        try spec.validate()
        self.spec = spec
        rng = Xoshiro256StarStar(seed: spec.seed)
        slots = spec.slots
        align = spec.alignment ?? spec.requestSize
        if case .zipf(let theta) = spec.pattern { zipf = ZipfSampler(n: slots, theta: theta) } else { zipf = nil }
        if case .hotset(let f, _) = spec.pattern {
            hotSlots = Swift.min(Swift.max(1, UInt64((Double(slots) * f).rounded(.down))), Swift.max(1, slots - 1))
        } else {
            hotSlots = 0
        }
    }

    /// `.line(n)`: the 1-based index of the last record generated.
    public var location: TraceLocation { .line(produced) }

    /// The next record, or `nil` after `count` records.
    @inline(__always)
    public mutating func next() -> TraceRecord? {
        guard produced < spec.count else { return nil }
        let i = produced
        produced += 1
        let op: TraceRecord.Op = rng.nextUnit() < spec.readRatio ? .read : .write
        let slot: UInt64
        switch spec.pattern {
        case .uniform:
            slot = rng.nextBelow(slots)
        case .sequential:
            slot = UInt64(i) % slots
        case .zipf:
            slot = (zipf?.sample(&rng) ?? 1) - 1
        case .hotset(_, let hotAccess):
            if rng.nextUnit() < hotAccess || slots == hotSlots {
                slot = rng.nextBelow(hotSlots)
            } else {
                slot = hotSlots + rng.nextBelow(slots - hotSlots)
            }
        }
        let time = spec.interval.map { Double(i) * $0 }
        return TraceRecord(time: time, op: op, offset: spec.regionStart + slot * align, length: spec.requestSize)
    }

    /// A batch of `next()`'s records. Untimed uniform workloads (the benchmarks') draw in a loop
    /// over a local copy of the generator's state: the same draws in the same order, without a
    /// call and an optional per record.
    public mutating func next(into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads) -> (
        count: Int, end: BatchEnd
    ) {
        guard case .uniform = spec.pattern, spec.interval == nil else { return filter.fill(buffer) { next() } }
        var rng = self.rng
        let ratio = spec.readRatio, slots = self.slots, align = self.align
        let start = spec.regionStart, length = spec.requestSize
        let n = Swift.min(buffer.count, spec.count - produced)
        var k = 0
        defer {
            self.rng = rng
        }
        while k < n {
            let op: TraceRecord.Op = rng.nextUnit() < ratio ? .read : .write
            let r = TraceRecord(op: op, offset: start &+ rng.nextBelow(slots) &* align, length: length)
            guard filter.admits(r) else {
                // Consumed, as `next()` would have returned it: the location is at it.
                produced += k + 1
                return (k, .refused(r))
            }
            buffer[k] = r
            k &+= 1
        }
        produced += k
        return (k, k == buffer.count ? .full : .ended)
    }
}

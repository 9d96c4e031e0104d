/// SplitMix64 (Steele, Lea & Flood, 2014), the tests' seeded generator: the same seed gives the
/// same sequence on every machine, so a seeded case's failure message reproduces it. (TraceKit's
/// `Xoshiro256StarStar` is seeded from the same function; its reference vectors are checked in
/// WorkloadGeneratorTests, and SplitMix64Tests ties this copy to them.)
public struct SplitMix64: Sendable {
    /// The generator's state (the seed, then advanced by the golden-ratio increment per output).
    public var state: UInt64

    /// A generator whose first output is SplitMix64(`seed`)'s first.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `next() % n`: slightly biased for large `n`, which the tests' small ranges do not notice
    /// (their goldens depend on exactly this reduction).
    public mutating func below(_ n: UInt64) -> UInt64 { next() % n }
}

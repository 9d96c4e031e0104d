/// Marsaglia's xorshift64 (shifts 13, 7, 17): the request streams of `OperationStreamTests` and
/// `QuickWriteTests` come from it, so their workloads (and what each one is known to reach, such
/// as a quick allocating write in a disk's partial last cluster) stay the same.
public struct XorShift64: Sendable {
    /// The generator's state (never 0).
    public var state: UInt64

    /// A generator started at `seed` (nonzero).
    public init(seed: UInt64) {
        precondition(seed != 0, "xorshift64 needs a nonzero seed")
        state = seed
    }

    /// The next 64 bits.
    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

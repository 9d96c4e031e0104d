/// Belady's MIN (Belady, "A study of replacement algorithms for a virtual-storage computer",
/// IBM Systems Journal 5(2), 1966; optimality: Mattson, Gecsei, Slutz, Traiger, IBM Systems
/// Journal 9(2), 1970): replace the unpinned table whose next use lies farthest in the future
/// (a table never used again first). Ties go to the lowest slot.
///
/// It needs the future, so it runs only over a recorded operation stream: `NextUseOracle`
/// computes, for each lookup, when the same table (image, cache, offset) is next looked up,
/// and `OptimalLayer` tells this policy after every lookup (`setNextUse`). Used live (without
/// an oracle) it would know nothing; `Simulation.run` and `Simulation.replay` therefore route
/// `--policy opt` through a recording (`Simulation.runOptimal`).
///
/// What it bounds: misses (lookups that fill a slot) at the given size, for the same operation
/// stream and the cache's own rules (empty slots first, pinned entries never replaced). It does
/// not minimize write-backs: a dirty victim costs a write-back (and possibly a dependency flush
/// of the other cache) that a clean one would not, and MIN does not look at dirtiness. With pins
/// the choice among unpinned entries is still well defined; MIN's proof (an exchange argument on
/// a free choice of victim) does not cover forced choices or the clean timer's emptying, so the
/// bound is checked on every shipped trace rather than assumed (`EvictionPolicyTests`).
///
/// - Complexity: a victim is a scan of the slots (O(entries) per miss).
public struct OptimalPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "opt"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "Belady's MIN over the recorded stream: the lower bound on misses (replays a recording)"
    private let nextUse: SlotBuffer<UInt32>
    private let filledSlots: SlotBuffer<Bool>
    private let capacity: Int

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        self.capacity = capacity
        nextUse = SlotBuffer(count: capacity, repeating: 0)
        filledSlots = SlotBuffer(count: capacity, repeating: false)
    }

    /// Sets when the table in `slot` is next looked up (`NextUseOracle.never`: not again).
    @inline(__always) public mutating func setNextUse(_ slot: Int, _ time: UInt32) { nextUse[slot] = time }
    /// When the table in `slot` is next looked up, as last set.
    public func nextUse(of slot: Int) -> UInt32 { nextUse[slot] }

    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func filled(_ slot: Int, offset: UInt64) {
        filledSlots[slot] = true
        nextUse[slot] = NextUseOracle.never
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func emptied(_ slot: Int, offset: UInt64) { filledSlots[slot] = false }
    /// Repeated hits change nothing here: the layer sets the next use after the operation.
    @inline(__always) public mutating func repeatedHits(_ slot: Int, offset: UInt64, count: Int, released: Bool) {}

    /// The unpinned filled slot used farthest in the future.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        var best = -1
        var bestTime: UInt32 = 0
        for i in 0..<capacity where filledSlots[i] && !pins.isPinned(i) {
            if best < 0 || nextUse[i] > bestTime {
                best = i
                bestTime = nextUse[i]
                if bestTime == NextUseOracle.never { break }
            }
        }
        return best >= 0 ? best : nil
    }
}

/// S3-FIFO (Yang, Zhang, Qiu, Yue, Rashmi, "FIFO queues are all you need for cache eviction",
/// SOSP 2023, Algorithm 1): a small FIFO `S` (10 % of the entries), a main FIFO `M` (the rest)
/// and a ghost FIFO `G` of offsets evicted from `S`, holding as many offsets as `M` holds
/// entries. Each entry has a frequency counter capped at 3, raised by every hit.
///
/// A miss on an offset in `G` goes to `M`, any other to `S`, frequency 0. To evict: if `S` holds
/// at least its 10 % share, its oldest entry is examined — with a frequency above 1 it moves to
/// `M` (and if `M` is then over its share, eviction continues in `M`), otherwise it is evicted
/// and its offset enters `G`; else `M`'s oldest is examined — with a nonzero frequency it is
/// re-inserted as the newest with its frequency decreased, otherwise evicted. Pinned entries are
/// passed over (left where they are); if the queue the rule names has only pinned entries, the
/// other queue is used.
public struct S3FIFOPolicy: EvictionPolicy {
    /// Witness of the `EvictionPolicy` requirement.
    public static let name = "s3fifo"
    /// Witness of the `EvictionPolicy` requirement.
    public static let summary = "S3-FIFO (Yang et al., SOSP 2023): small 10% and main FIFOs, ghost queue, 2-bit frequency"
    private var small: SlotList
    private var main: SlotList
    private var ghost = GhostList()
    private let offsets: SlotBuffer<UInt64>
    private let frequency: SlotBuffer<UInt8>
    /// `S`'s share of the entries.
    public let smallTarget: Int
    /// `M`'s share (and `G`'s length).
    public let mainTarget: Int

    /// Witness of the `EvictionPolicy` requirement.
    public init(capacity: Int, kind: CacheKind) {
        small = SlotList(capacity: capacity)
        main = SlotList(capacity: capacity)
        offsets = SlotBuffer(count: capacity, repeating: 0)
        frequency = SlotBuffer(count: capacity, repeating: 0)
        smallTarget = max(1, capacity / 10)
        mainTarget = max(1, capacity - max(1, capacity / 10))
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func filled(_ slot: Int, offset: UInt64) {
        small.remove(slot)
        main.remove(slot)
        offsets[slot] = offset
        frequency[slot] = 0
        if ghost.remove(offset) { main.append(slot) } else { small.append(slot) }
        // Trimmed only now, so this miss's own eviction cannot push the incoming offset out.
        ghost.trim(to: mainTarget)
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func hit(_ slot: Int, offset: UInt64) {
        if frequency[slot] < 3 { frequency[slot] += 1 }
    }
    /// Witness of the `EvictionPolicy` requirement.
    @inline(__always) public mutating func released(_ slot: Int, offset: UInt64) {}
    /// Witness of the `EvictionPolicy` requirement.
    public mutating func emptied(_ slot: Int, offset: UInt64) {
        small.remove(slot)
        main.remove(slot)
        frequency[slot] = 0
    }

    /// Witness of the `EvictionPolicy` requirement.
    public mutating func victim(_ pins: PinCounts) -> Int? {
        // Each step moves an entry from S to M or lowers a frequency, so this ends; the bound
        // is a guard against a slot list corrupted by a bug.
        var steps = 0
        let limit = 8 * (small.count + main.count) + 8
        while steps < limit {
            steps += 1
            let s = small.count >= smallTarget ? small.firstUnpinned(pins) : nil
            if let t = s {
                if frequency[t] > 1 {
                    small.remove(t)
                    main.append(t)
                    if main.count > mainTarget, let v = evictMain(pins) { return v }
                    continue
                }
                small.remove(t)
                ghost.insert(offsets[t])
                return t
            }
            if let v = evictMain(pins) { return v }
            // M has only pinned entries: take S's oldest unpinned whatever its share.
            guard let t = small.firstUnpinned(pins) else { return nil }
            small.remove(t)
            ghost.insert(offsets[t])
            return t
        }
        return nil
    }

    /// M's eviction: re-inserts entries with a nonzero frequency (one lower) until one has 0.
    private mutating func evictMain(_ pins: PinCounts) -> Int? {
        for _ in 0..<(4 * main.count + 1) {
            guard let t = main.firstUnpinned(pins) else { return nil }
            if frequency[t] > 0 {
                frequency[t] -= 1
                main.append(t)
                continue
            }
            main.remove(t)
            return t
        }
        return nil
    }
}

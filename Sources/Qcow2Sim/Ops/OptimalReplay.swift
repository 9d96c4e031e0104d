import Foundation
import TraceKit

/// The future of a recorded operation stream, for Belady's MIN (`OptimalPolicy`): for every
/// lookup (`get`, `repeatGet`, `regetIfDropped`), in stream order, the ordinal of the next
/// lookup of the same table — same image, cache and offset — or `never`.
///
/// Built by one forward pass over `OpRecording.forEachBatch` with a dictionary from table to its
/// last lookup's ordinal (a forward pass that patches the previous lookup equals the backward
/// pass of the textbook, without reading the file backwards). Kept in memory, 4 bytes per
/// lookup (a `UInt32` ordinal) plus the dictionary, proportional to the distinct tables: the
/// seed trace's 20 000 requests make about 60 000 lookups (240 KB). In memory rather than on
/// disk because the replay consults it in stream order at every lookup, and a recording's own
/// size (2–3 bytes per operation) already bounds what fits: a stream too long for 2^32 − 1
/// lookups is refused.
///
/// `regetIfDropped` counts as a lookup of its block: when `update_refcount` still holds the
/// block the cache does nothing, but the block is pinned then, so no victim choice can depend
/// on the next use it gets; when it does GET again, the ordinal is exact.
public final class NextUseOracle: @unchecked Sendable {
    /// The next-use value of a table never looked up again.
    public static let never = UInt32.max
    /// Per lookup, in stream order: the ordinal of the next lookup of the same table.
    public let nextUse: [UInt32]

    /// Reads `recording` once.
    ///
    /// - Throws: `SimulationError.image` for a damaged recording; `.usage` for one with more
    ///   than 2^32 − 2 lookups.
    public init(recording: OpRecording) throws {
        var next: [UInt32] = []
        var last: [UInt64: UInt32] = [:]
        var n: UInt32 = 0
        var tooMany = false
        try recording.forEachBatch { batch in
            for op in batch where Self.isLookup(op.code) {
                guard n < Self.never - 1 else {
                    tooMany = true
                    return
                }
                let key = Self.key(op)
                if let prev = last[key] { next[Int(prev)] = n }
                last[key] = n
                next.append(Self.never)
                n += 1
            }
        }
        if tooMany {
            throw SimulationError.usage("\(recording.path): more than \(Self.never - 1) lookups: too long for --policy opt")
        }
        nextUse = next
    }

    /// The operations that look a table up.
    @inline(__always) static func isLookup(_ code: MetadataOp.Code) -> Bool {
        code == .get || code == .repeatGet || code == .regetIfDropped
    }

    /// Table offsets are multiples of 512: the low bits hold the cache kind and the image.
    @inline(__always) static func key(_ op: MetadataOp) -> UInt64 {
        op.offset | UInt64(op.kind.rawValue) | (UInt64(op.image & 0xFF) << 1)
    }
}

/// A cache layer running `OptimalPolicy` over a recording: feeds the operations to a
/// `CacheSystem<OptimalPolicy>` and, after each lookup, tells the policy of the cache holding
/// the table when it is next looked up.
final class OptimalLayer: CacheLayer {
    let system: CacheSystem<OptimalPolicy>
    let oracle: NextUseOracle
    @exclusivity(unchecked) private var cursor = 0

    init(system: CacheSystem<OptimalPolicy>, oracle: NextUseOracle) {
        self.system = system
        self.oracle = oracle
    }

    var divergedAt: UInt64? { system.divergedAt }
    func counters(image k: Int) -> CacheLayerCounters { system.counters(image: k) }
    func finish() -> [String] { system.finish() }

    func consume(_ ops: UnsafeMutableBufferPointer<MetadataOp>) {
        var start = 0
        for k in ops.indices where NextUseOracle.isLookup(ops[k].code) {
            system.consume(UnsafeMutableBufferPointer(rebasing: ops[start...k]))
            start = k + 1
            let op = ops[k]
            let t = cursor < oracle.nextUse.count ? oracle.nextUse[cursor] : NextUseOracle.never
            cursor += 1
            if let (cache, slot) = system.slot(image: Int(op.image), kind: op.kind, offset: op.offset) {
                cache.updatePolicy { $0.setNextUse(slot, t) }
            }
        }
        if start < ops.count { system.consume(UnsafeMutableBufferPointer(rebasing: ops[start...])) }
    }
}

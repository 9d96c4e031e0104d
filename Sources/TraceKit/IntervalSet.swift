/// A set of `UInt64` values kept as sorted, disjoint, non-adjacent half-open ranges: memory and
/// time grow with the number of distinct ranges inserted, never with their lengths, so a
/// 16 TiB request costs one range (`trace info` used to enumerate its 2^28 clusters).
///
/// Insertions are buffered and merged in batches (sort, then one sweep), so a trace of many
/// small scattered requests costs O(n log n) overall, not O(n) per insertion.
struct IntervalSet: Sendable {
    /// Merged ranges, sorted by start; no two overlap or touch.
    private var merged: [Range<UInt64>] = []
    /// Ranges inserted since the last merge.
    private var pending: [Range<UInt64>] = []

    /// Adds `[r.lowerBound, r.upperBound)`.
    mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        // Repeats of the last range (a trace rereading one region) need no buffering.
        if let last = pending.last, last == r { return }
        pending.append(r)
        if pending.count >= Swift.max(4096, merged.count) { compact() }
    }

    /// Folds the buffered ranges into `merged`.
    mutating func compact() {
        guard !pending.isEmpty else { return }
        merged = Self.union(merged, pending)
        pending.removeAll(keepingCapacity: true)
    }

    /// The merged ranges in order (buffered ones included), without changing `self`.
    var ranges: [Range<UInt64>] { pending.isEmpty ? merged : Self.union(merged, pending) }

    /// Number of values in the set.
    var count: UInt64 { ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) } }

    private static func union(_ a: [Range<UInt64>], _ b: [Range<UInt64>]) -> [Range<UInt64>] {
        let sortedB = b.sorted { $0.lowerBound < $1.lowerBound }
        var out: [Range<UInt64>] = []
        out.reserveCapacity(a.count + sortedB.count)
        var i = 0, j = 0
        while i < a.count || j < sortedB.count {
            let next: Range<UInt64>
            if j == sortedB.count || (i < a.count && a[i].lowerBound <= sortedB[j].lowerBound) {
                next = a[i]
                i += 1
            } else {
                next = sortedB[j]
                j += 1
            }
            if let last = out.last, next.lowerBound <= last.upperBound {
                if next.upperBound > last.upperBound { out[out.count - 1] = last.lowerBound..<next.upperBound }
            } else {
                out.append(next)
            }
        }
        return out
    }
}

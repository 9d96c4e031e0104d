/// QEMU's subcluster types (`QCow2SubclusterType`), with the numeric codes `qcow2_add_task`
/// prints (qcow2-model.md §1.4).
public enum SubclusterType: Int, Sendable {
    case unallocatedPlain = 0
    case unallocatedAlloc = 1
    case zeroPlain = 2
    case zeroAlloc = 3
    case normal = 4
    case compressed = 5
    /// Both the allocation and the zero bit of one subcluster are set: corruption.
    case invalid = 6

    /// Reads as zeroes.
    @inline(__always) var isZero: Bool { self == .zeroPlain || self == .zeroAlloc }
    /// No data in this image (falls through to the backing file).
    @inline(__always) var isUnallocated: Bool { self == .unallocatedPlain || self == .unallocatedAlloc }
    /// Types whose host offsets must be contiguous to extend a MAP run.
    @inline(__always) var hasHostCluster: Bool { self == .normal || self == .zeroAlloc || self == .unallocatedAlloc }
}

/// Cluster-level types (`QCow2ClusterType`).
enum ClusterType {
    case unallocated, zeroPlain, zeroAlloc, normal, compressed

    /// Counts as allocated for discard and write-zeroes (`qcow2_cluster_is_allocated`).
    var isAllocated: Bool { self == .compressed || self == .normal || self == .zeroAlloc }
}

extension Geometry {
    /// `qcow2_get_cluster_type`.
    @inline(__always) func clusterType(_ word: UInt64) -> ClusterType {
        if word & EntryBits.compressed != 0 { return .compressed }
        if word & EntryBits.zero != 0 && !extendedL2 {
            return word & EntryBits.offsetMask != 0 ? .zeroAlloc : .zeroPlain
        }
        return word & EntryBits.offsetMask == 0 ? .unallocated : .normal
    }

    /// `qcow2_get_subcluster_type` without extended L2 entries (`subclusterType(word, 0, 0)`).
    @inline(__always) func standardType(_ word: UInt64) -> SubclusterType {
        if word & EntryBits.compressed != 0 { return .compressed }
        let hasOffset = word & EntryBits.offsetMask != 0
        if word & EntryBits.zero != 0 { return hasOffset ? .zeroAlloc : .zeroPlain }
        return hasOffset ? .normal : .unallocatedPlain
    }

    /// `qcow2_get_subcluster_type`.
    @inline(__always) func subclusterType(_ word: UInt64, _ bitmap: UInt64, _ sc: Int) -> SubclusterType {
        let ct = clusterType(word)
        guard extendedL2 else {
            switch ct {
            case .compressed: return .compressed
            case .zeroPlain: return .zeroPlain
            case .zeroAlloc: return .zeroAlloc
            case .normal: return .normal
            case .unallocated: return .unallocatedPlain
            }
        }
        switch ct {
        case .compressed: return .compressed
        case .normal:
            if (bitmap >> 32) & bitmap != 0 { return .invalid }
            if bitmap & (1 << UInt64(32 + sc)) != 0 { return .zeroAlloc }
            if bitmap & (1 << UInt64(sc)) != 0 { return .normal }
            return .unallocatedAlloc
        default:
            if bitmap & EntryBits.allocMask != 0 { return .invalid }
            if bitmap & (1 << UInt64(32 + sc)) != 0 { return .zeroPlain }
            return .unallocatedPlain
        }
    }

    /// `qcow2_get_subcluster_range_type`: the type at `sc` and how many consecutive subclusters
    /// from `sc` share it (within the cluster).
    @inline(__always) func subclusterRun(_ word: UInt64, _ bitmap: UInt64, _ sc: Int) -> (SubclusterType, Int) {
        let t = subclusterType(word, bitmap, sc)
        if t == .invalid { return (t, 0) }
        if !extendedL2 || t == .compressed { return (t, subclustersPerCluster - sc) }
        let below: UInt64 = sc == 0 ? 0 : (1 << UInt64(sc)) - 1
        switch t {
        case .normal:
            let v = UInt32(truncatingIfNeeded: bitmap) | UInt32(truncatingIfNeeded: below)
            return (t, (~v).trailingZeroBitCount - sc)
        case .zeroPlain, .zeroAlloc:
            let v = UInt32(truncatingIfNeeded: bitmap >> 32) | UInt32(truncatingIfNeeded: below)
            return (t, (~v).trailingZeroBitCount - sc)
        default:
            let v =
                (UInt32(truncatingIfNeeded: bitmap >> 32) | UInt32(truncatingIfNeeded: bitmap)) & ~UInt32(
                    truncatingIfNeeded: below)
            return (t, v.trailingZeroBitCount - sc)
        }
    }

    /// `cluster_needs_new_alloc`.
    @inline(__always) func needsNewAllocation(_ word: UInt64) -> Bool {
        switch clusterType(word) {
        case .normal, .zeroAlloc: return word & EntryBits.copied == 0
        default: return true
        }
    }
}

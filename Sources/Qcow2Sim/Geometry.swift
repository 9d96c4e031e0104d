/// The fixed geometry of one qcow2 image: cluster, L2-entry, subcluster and refcount sizes,
/// and the index math of qcow2-model.md §1.2.
///
/// All shifts and masks are precomputed so that the per-request path does no division.
public struct Geometry: Equatable, Hashable, Sendable {
    /// log2 of the cluster size (9 ... 21), QEMU's `cluster_bits`.
    public let clusterBits: Int
    /// Cluster size in bytes (`CS`).
    public let clusterSize: UInt64
    /// Whether L2 entries are extended (16 bytes, with a subcluster bitmap).
    public let extendedL2: Bool
    /// Size of one L2 entry: 8, or 16 with extended L2 (`l2e`).
    public let l2EntrySize: UInt64
    /// Entries per L2 table (`CS / l2e`).
    public let l2Entries: Int
    /// log2 of `l2Entries`.
    public let l2Bits: Int
    /// Subclusters per cluster: 32 with extended L2, else 1.
    public let subclustersPerCluster: Int
    /// log2 of the subcluster size.
    public let subclusterBits: Int
    /// Refcount width in bits (1 ... 64).
    public let refcountBits: Int
    /// `refcount_order`: log2 of `refcountBits`.
    public let refcountOrder: Int
    /// Refcounts per refcount block (`CS * 8 / refcount_bits`).
    public let refblockEntries: UInt64
    /// log2 of `refblockEntries`.
    public let refblockBits: Int
    /// Virtual disk size in bytes.
    public let virtualSize: UInt64
    /// Number of L1 entries: `ceil(size / (CS * l2_entries))`.
    public let l1Size: Int
    /// `clusterBits + l2Bits`, `clusterBits`, `subclusterBits` and `refblockBits` as shift
    /// amounts, and the index masks: the per-request math below shifts with `&>>` (every amount
    /// is below 64 for valid geometries, so the result is `>>`'s) and never traps or branches
    /// on an oversized shift (callgrind, read-1e6: a `cmp`/`cmov` pair and an overflow check per
    /// shift in the read path).
    private let l1Shift: UInt64
    private let clusterShift: UInt64
    private let subclusterShift: UInt64
    private let refblockShift: UInt64
    private let l2Mask: UInt64
    private let subclusterMask: UInt64

    /// Valid cluster sizes are 512 B ... 2 MiB (QEMU `MIN_CLUSTER_BITS` / `MAX_CLUSTER_BITS`).
    public static let clusterBitsRange = 9...21

    /// Creates a geometry; the caller has validated the values (see `CreateOptions`).
    public init(clusterBits: Int, extendedL2: Bool, refcountOrder: Int, virtualSize: UInt64) {
        self.clusterBits = clusterBits
        self.clusterSize = 1 << UInt64(clusterBits)
        self.extendedL2 = extendedL2
        self.l2EntrySize = extendedL2 ? 16 : 8
        self.l2Bits = clusterBits - (extendedL2 ? 4 : 3)
        self.l2Entries = 1 << l2Bits
        self.subclustersPerCluster = extendedL2 ? 32 : 1
        self.subclusterBits = extendedL2 ? clusterBits - 5 : clusterBits
        self.refcountOrder = refcountOrder
        self.refcountBits = 1 << refcountOrder
        self.refblockBits = clusterBits + 3 - refcountOrder
        self.refblockEntries = 1 << UInt64(refblockBits)
        self.virtualSize = virtualSize
        let coverage = UInt64(1) << UInt64(clusterBits + l2Bits)
        self.l1Size = Int((virtualSize + coverage - 1) >> UInt64(clusterBits + l2Bits))
        self.l1Shift = UInt64(clusterBits + l2Bits)
        self.clusterShift = UInt64(clusterBits)
        self.subclusterShift = UInt64(subclusterBits)
        self.refblockShift = UInt64(refblockBits)
        self.l2Mask = UInt64(l2Entries - 1)
        self.subclusterMask = UInt64(subclustersPerCluster - 1)
    }

    /// Subcluster size in bytes (`SC`).
    @inline(__always) public var subclusterSize: UInt64 { 1 << UInt64(subclusterBits) }
    /// `l1_index(g)`.
    @inline(__always) public func l1Index(_ g: UInt64) -> Int { Int(truncatingIfNeeded: g &>> l1Shift) }
    /// `l2_index(g)`.
    @inline(__always) public func l2Index(_ g: UInt64) -> Int { Int(truncatingIfNeeded: (g &>> clusterShift) & l2Mask) }
    /// `sc_index(g)`.
    @inline(__always) public func subclusterIndex(_ g: UInt64) -> Int {
        Int(truncatingIfNeeded: (g &>> subclusterShift) & subclusterMask)
    }
    /// `g mod CS`.
    @inline(__always) public func offsetInCluster(_ g: UInt64) -> UInt64 { g & (clusterSize &- 1) }
    /// `floor(g / CS) * CS`.
    @inline(__always) public func clusterStart(_ g: UInt64) -> UInt64 { g & ~(clusterSize &- 1) }
    /// `ceil(bytes / CS)`.
    @inline(__always) public func clusters(covering bytes: UInt64) -> UInt64 {
        (bytes + clusterSize - 1) &>> clusterShift
    }
    /// Host cluster number of a host offset.
    @inline(__always) public func hostCluster(_ h: UInt64) -> UInt64 { h &>> clusterShift }
    /// Refcount-table index of host cluster `k`.
    @inline(__always) public func refblockIndex(ofCluster k: UInt64) -> UInt64 { k &>> refblockShift }
}

/// L1 / L2 entry bits (qcow2-model.md §1.3, QEMU `QCOW_OFLAG_*`, `L1E_OFFSET_MASK`).
public enum EntryBits {
    /// Bit 63: refcount of the cluster / table is exactly 1 (`QCOW_OFLAG_COPIED`).
    public static let copied: UInt64 = 1 << 63
    /// Bit 62: compressed cluster (`QCOW_OFLAG_COMPRESSED`).
    public static let compressed: UInt64 = 1 << 62
    /// Bit 0: reads as zeroes, without extended L2 (`QCOW_OFLAG_ZERO`).
    public static let zero: UInt64 = 1
    /// Offset field of L1 and standard L2 entries (`L1E_OFFSET_MASK`, `L2E_OFFSET_MASK`).
    public static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    /// Offset field of refcount-table entries (`REFT_OFFSET_MASK`).
    public static let reftableOffsetMask: UInt64 = 0xffff_ffff_ffff_fe00
    /// The extended-L2 bitmap's allocation bits (subcluster i = bit i).
    public static let allocMask: UInt64 = 0x0000_0000_ffff_ffff
    /// The extended-L2 bitmap's zero bits (subcluster i = bit 32+i).
    public static let zeroMask: UInt64 = 0xffff_ffff_0000_0000
}

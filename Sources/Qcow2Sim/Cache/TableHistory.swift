/// Why each table of one cache last left it, for the miss classes (cold, evicted, cleaned,
/// discarded): two bits per table index (`offset / tableSize`).
///
/// Pages of 32 768 tables (8 KiB) are allocated on first touch, found through a flat directory
/// for table indices below 2^30 (host offsets below 4 TiB with 4 KiB slices, 64 PiB with 64 KiB
/// tables) and through a dictionary above, so a damaged image naming offsets near 2^56 costs one
/// page per distinct region, never memory proportional to the offset.
struct TableHistory {
    /// A table's last departure.
    enum Reason: UInt64 {
        /// Never loaded in this session: its next miss is cold.
        case never = 0
        /// Replaced by another table (or resident now).
        case evicted = 1
        /// Dropped by the cache-clean timer.
        case cleaned = 2
        /// Discarded (its cluster was freed).
        case discarded = 3
    }

    private static let pageBits = 15
    private static let wordsPerPage = (1 << pageBits) / 32
    private static let directoryLimit: UInt64 = 1 << 30

    /// Page number + 1 per directory entry (0: no page yet).
    private var directory = ContiguousArray<Int32>()
    private var far: [UInt64: Int32] = [:]
    private var words = ContiguousArray<UInt64>()

    @inline(__always) func get(_ table: UInt64) -> Reason {
        let p = page(table)
        guard p >= 0 else { return .never }
        let (w, shift) = Self.position(table, page: p)
        return Reason(rawValue: (words[w] >> shift) & 3) ?? .never
    }

    @inline(__always) mutating func set(_ table: UInt64, _ reason: Reason) {
        var p = page(table)
        if p < 0 { p = addPage(table) }
        let (w, shift) = Self.position(table, page: p)
        words[w] = (words[w] & ~(3 << shift)) | (reason.rawValue << shift)
    }

    @inline(__always) private static func position(_ table: UInt64, page: Int) -> (Int, UInt64) {
        let inPage = Int(table & ((1 << UInt64(pageBits)) - 1))
        return (page * wordsPerPage + inPage >> 5, UInt64(inPage & 31) * 2)
    }

    /// The page holding `table`, or -1.
    @inline(__always) private func page(_ table: UInt64) -> Int {
        if table < Self.directoryLimit {
            let d = Int(table >> UInt64(Self.pageBits))
            return d < directory.count ? Int(directory[d]) - 1 : -1
        }
        return far[table >> UInt64(Self.pageBits)].map { Int($0) - 1 } ?? -1
    }

    private mutating func addPage(_ table: UInt64) -> Int {
        let p = words.count / Self.wordsPerPage
        words.append(contentsOf: repeatElement(0, count: Self.wordsPerPage))
        if table < Self.directoryLimit {
            let d = Int(table >> UInt64(Self.pageBits))
            if d >= directory.count { directory.append(contentsOf: repeatElement(0, count: d + 1 - directory.count)) }
            directory[d] = Int32(p + 1)
        } else {
            far[table >> UInt64(Self.pageBits)] = Int32(p + 1)
        }
        return p
    }

    /// A well-mixed 64-bit value of a table offset (SplitMix64's finalizer), summed into
    /// `MetadataCache.freshWrittenDigest`.
    static func mix(_ offset: UInt64) -> UInt64 {
        var z = offset &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The pin counts of a cache's slots, as an eviction policy sees them when it picks a victim.
public struct PinCounts {
    private let pins: UnsafeBufferPointer<Int32>

    init(_ pins: UnsafeBufferPointer<Int32>) { self.pins = pins }

    /// Number of slots.
    public var count: Int { pins.count }

    /// Whether slot `i` is held by a caller (QEMU's `ref > 0`): it cannot be replaced.
    @inline(__always) public func isPinned(_ i: Int) -> Bool {
        precondition(i >= 0 && i < pins.count, "slot \(i) out of range 0..<\(pins.count)")
        return pins[i] != 0
    }
}

/// Why each table of one cache last left it, for the miss classes (cold, evicted, cleaned,
/// discarded): one byte per table index (`offset / tableSize`), in 512-byte pages allocated on
/// first touch, so memory follows the tables touched (a damaged image naming offsets near 2^56
/// costs a page per region, never memory in proportion to the offset).
struct TableHistory {
    /// A table's last departure.
    enum Reason: UInt8 {
        /// Never loaded in this session: its next miss is cold.
        case never = 0
        /// Replaced by another table (or resident now).
        case evicted = 1
        /// Dropped by the cache-clean timer.
        case cleaned = 2
        /// Discarded (its cluster was freed).
        case discarded = 3
    }

    /// Tables per page (one byte each), and pages reachable through the flat directory: 2^33
    /// tables, host offsets below 32 TiB with 4 KiB slices; beyond, a dictionary of pages.
    private static let pageBits: UInt64 = 9
    private static let directoryLimit = 1 << 24
    /// Page number + 1 per directory entry (0: no page), grown on first touch.
    private var directory = ContiguousArray<Int32>()
    private var far: [UInt64: Int32] = [:]
    private var bytes = ContiguousArray<UInt8>()

    @inline(__always) private func page(_ table: UInt64) -> Int {
        let d = table >> Self.pageBits
        if d < UInt64(directory.count) { return Int(directory[Int(d)]) - 1 }
        if d < UInt64(Self.directoryLimit) { return -1 }
        return far[d].map { Int($0) - 1 } ?? -1
    }

    @inline(__always) func get(_ table: UInt64) -> Reason {
        let p = page(table)
        guard p >= 0 else { return .never }
        return Reason(rawValue: bytes[p << Int(Self.pageBits) | Int(table & ((1 << Self.pageBits) - 1))]) ?? .never
    }

    @inline(__always) mutating func set(_ table: UInt64, _ reason: Reason) {
        var p = page(table)
        if p < 0 { p = addPage(table) }
        bytes[p << Int(Self.pageBits) | Int(table & ((1 << Self.pageBits) - 1))] = reason.rawValue
    }

    /// Sets `table`'s reason and returns the one it replaces.
    @inline(__always) mutating func exchange(_ table: UInt64, _ reason: Reason) -> Reason {
        var p = page(table)
        if p < 0 { p = addPage(table) }
        let k = p << Int(Self.pageBits) | Int(table & ((1 << Self.pageBits) - 1))
        let old = bytes[k]
        bytes[k] = reason.rawValue
        return Reason(rawValue: old) ?? .never
    }

    private mutating func addPage(_ table: UInt64) -> Int {
        let p = bytes.count >> Int(Self.pageBits)
        bytes.append(contentsOf: repeatElement(0, count: 1 << Int(Self.pageBits)))
        let d = table >> Self.pageBits
        if d < UInt64(Self.directoryLimit) {
            if d >= UInt64(directory.count) {
                // Geometric growth: amortized O(1) per page whatever the order of first touches.
                let n = min(Self.directoryLimit, max(Int(d) + 1, directory.count * 2))
                directory.append(contentsOf: repeatElement(0, count: n - directory.count))
            }
            directory[Int(d)] = Int32(p + 1)
        } else {
            far[d] = Int32(p + 1)
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

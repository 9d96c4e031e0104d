/// Big-endian field access over bytes read from an image (qcow2 stores every number big-endian).
///
/// Reads past the end yield zero bytes: QEMU's file driver reads beyond EOF as zeroes, and the
/// header-extension walk relies on that to stop at a short first cluster.
struct BigEndianReader {
    /// The bytes read from the file.
    let bytes: [UInt8]

    /// The byte at `offset`, or 0 past the end.
    @inline(__always) func u8(_ offset: Int) -> UInt8 {
        offset >= 0 && offset < bytes.count ? bytes[offset] : 0
    }

    /// The big-endian 32-bit value at `offset`.
    func u32(_ offset: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(u8(offset + i)) }
        return v
    }

    /// The big-endian 64-bit value at `offset`.
    func u64(_ offset: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(u8(offset + i)) }
        return v
    }

    /// `count` bytes from `offset`, zero-padded past the end.
    func slice(_ offset: Int, _ count: Int) -> [UInt8] {
        (0..<count).map { u8(offset + $0) }
    }
}

/// Decodes an array of big-endian 64-bit words (L1, L2 and refcount-table entries).
func decodeBigEndianWords(_ bytes: [UInt8]) -> [UInt64] {
    let n = bytes.count / 8
    var out = [UInt64](repeating: 0, count: n)
    // One unaligned load per word: a 2 MiB table is 256 Ki words (the image fuzz target opens
    // many such tables per second).
    bytes.withUnsafeBytes { p in
        out.withUnsafeMutableBufferPointer { o in
            for i in 0..<n { o[i] = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
        }
    }
    return out
}

/// `0x30000`: lower-case hex without leading zeros, the way QEMU's traces print offsets.
func qcow2Hex<T: BinaryInteger>(_ v: T) -> String {
    "0x" + String(v, radix: 16)
}

/// C's `%#x`, as QEMU's messages print numbers: `0x30000`, but `0` for zero.
func qemuHex<T: BinaryInteger>(_ v: T) -> String {
    v == 0 ? "0" : qcow2Hex(v)
}

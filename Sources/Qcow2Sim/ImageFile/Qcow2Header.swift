/// The parsed and validated header of a qcow2 image (qcow2 spec "Header", qcow2-model.md §1.1),
/// including the two header extensions the simulator cares about.
///
/// Version 2 headers are normalised to the values the spec says to assume: `refcountOrder` 4,
/// `headerLength` 72 and no feature bits.
public struct Qcow2Header: Equatable, Sendable {
    /// Format version, 2 or 3 (`qemu-img info` reports these as compat `0.10` and `1.1`).
    public var version: Int
    /// log2 of the cluster size, 9 ... 21.
    public var clusterBits: Int
    /// Virtual disk size in bytes.
    public var virtualSize: UInt64
    /// Host offset of the active L1 table (cluster-aligned).
    public var l1TableOffset: UInt64
    /// Number of entries in the L1 table as stored (at least `geometry.l1Size`).
    public var l1Size: Int
    /// Host offset of the refcount table (cluster-aligned).
    public var refcountTableOffset: UInt64
    /// Length of the refcount table in clusters.
    public var refcountTableClusters: Int
    /// Number of internal snapshots (always 0 for an image `Qcow2File` accepts).
    public var snapshotCount: Int
    /// Incompatible feature bits (`IncompatibleFeature`).
    public var incompatibleFeatures: UInt64
    /// Compatible feature bits (bit 0: lazy refcounts).
    public var compatibleFeatures: UInt64
    /// Autoclear feature bits (bit 0: bitmaps, bit 1: raw external data).
    public var autoclearFeatures: UInt64
    /// log2 of the refcount width in bits, 0 ... 6.
    public var refcountOrder: Int
    /// Length of the fixed header in bytes; header extensions start here.
    public var headerLength: Int
    /// The backing file name exactly as stored (relative names are relative to the image's directory).
    public var backingFileName: String?
    /// The backing format from the "backing file format name" header extension (`-F`).
    public var backingFormat: String?
    /// Whether L2 entries are extended (incompatible feature bit 4).
    public var extendedL2: Bool

    /// The geometry these values define.
    public var geometry: Geometry {
        Geometry(clusterBits: clusterBits, extendedL2: extendedL2, refcountOrder: refcountOrder, virtualSize: virtualSize)
    }

    /// Whether lazy refcounts are enabled (compatible feature bit 0).
    public var lazyRefcounts: Bool { compatibleFeatures & 1 != 0 }
}

/// Incompatible feature bits of the qcow2 header (spec "incompatible_features", QEMU
/// `QCOW2_INCOMPAT_*`).
enum IncompatibleFeature {
    /// Bit 0: refcounts may be inconsistent (`QCOW2_INCOMPAT_DIRTY`).
    static let dirty: UInt64 = 1 << 0
    /// Bit 1: any structure may be corrupt (`QCOW2_INCOMPAT_CORRUPT`).
    static let corrupt: UInt64 = 1 << 1
    /// Bit 2: guest data lives in an external file (`QCOW2_INCOMPAT_DATA_FILE`).
    static let externalDataFile: UInt64 = 1 << 2
    /// Bit 3: non-zlib compression (`QCOW2_INCOMPAT_COMPRESSION`).
    static let compressionType: UInt64 = 1 << 3
    /// Bit 4: extended L2 entries (`QCOW2_INCOMPAT_EXTL2`).
    static let extendedL2: UInt64 = 1 << 4
    /// Every bit QEMU 7.2 knows (`QCOW2_INCOMPAT_MASK`).
    static let known: UInt64 = 0x1f
}

/// Header extension types (spec "Header extensions").
enum HeaderExtension {
    /// End of the extension area.
    static let end: UInt32 = 0
    /// Backing file format name string.
    static let backingFormat: UInt32 = 0xe279_2aca
    /// Feature name table: 48-byte entries of (type, bit, name[46]).
    static let featureNames: UInt32 = 0x6803_f857
}

/// Limits QEMU 7.2 enforces at open (`QCOW_MAX_L1_SIZE`, `QCOW_MAX_REFTABLE_SIZE`, the
/// backing-name limit of the spec).
enum Qcow2Limits {
    /// Largest L1 table QEMU opens: 32 MiB.
    static let maxL1Bytes: UInt64 = 32 << 20
    /// Largest refcount table QEMU opens: 8 MiB.
    static let maxRefcountTableBytes: UInt64 = 8 << 20
    /// Longest backing file name the spec allows.
    static let maxBackingNameBytes: UInt64 = 1023
    /// Smallest version-3 header.
    static let v3HeaderBytes = 104
    /// The version-2 header, also the smallest readable prefix.
    static let v2HeaderBytes = 72
    /// Extended L2 needs at least 16 KiB clusters (32 subclusters of at least 512 bytes).
    static let minExtendedL2ClusterBits = 14
}

extension Qcow2Header {
    /// Parses and validates a header.
    ///
    /// - Parameters:
    ///   - prefix: the first bytes of the file (at least the fixed header when the file is long enough).
    ///   - fileLength: the file's length, for truncation checks.
    ///   - file: the file name used in errors.
    ///   - readCluster0: reads the first `n` bytes of the file (zero-padded past EOF), used for
    ///     header extensions and the backing file name once the cluster size is known.
    /// - Throws: `Qcow2FileError` naming the first bad field; the order of checks follows QEMU's
    ///   `qcow2_do_open` so that an image with several problems reports the one QEMU would.
    static func parse(
        prefix r: BigEndianReader, fileLength: UInt64, file: String,
        readCluster0: (Int) throws -> BigEndianReader
    ) throws -> Qcow2Header {
        func fail(_ at: UInt64, _ message: String) -> Qcow2FileError {
            Qcow2FileError(file: file, byteOffset: at, message: message)
        }
        func plural(_ n: Int, _ word: String, _ words: String? = nil) -> String {
            n == 1 ? "1 \(word)" : "\(n) \(words ?? word + "s")"
        }

        if fileLength < 4 {
            throw fail(
                fileLength,
                "truncated header: file is \(plural(Int(fileLength), "byte")), a qcow2 header needs at least \(Qcow2Limits.v2HeaderBytes)"
            )
        }
        let magic = r.slice(0, 4)
        if magic != [0x51, 0x46, 0x49, 0xfb] {
            let found = magic.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
            throw fail(0, "not a qcow2 file: magic bytes are \(found), expected 51 46 49 fb ('QFI\\xfb')")
        }
        let version = Int(r.u32(4))
        guard version == 2 || version == 3 else {
            throw fail(4, "unsupported qcow2 version \(version) (expected 2 or 3)")
        }
        let fixedBytes = version == 2 ? Qcow2Limits.v2HeaderBytes : Qcow2Limits.v3HeaderBytes
        if fileLength < UInt64(fixedBytes) {
            throw fail(
                fileLength,
                "truncated header: file is \(plural(Int(fileLength), "byte")), a version \(version) header needs \(fixedBytes)")
        }
        let clusterBits = Int(r.u32(20))
        guard Geometry.clusterBitsRange.contains(clusterBits) else {
            throw fail(20, "cluster_bits \(clusterBits) out of range (expected 9 to 21)")
        }
        let clusterSize = 1 << clusterBits

        let headerLength: Int
        let incompatible: UInt64, compatible: UInt64, autoclear: UInt64, refcountOrder: Int
        if version == 2 {
            headerLength = Qcow2Limits.v2HeaderBytes
            (incompatible, compatible, autoclear, refcountOrder) = (0, 0, 0, 4)
        } else {
            headerLength = Int(r.u32(100))
            if headerLength < Qcow2Limits.v3HeaderBytes {
                throw fail(
                    100, "header_length \(headerLength) too small (expected at least \(Qcow2Limits.v3HeaderBytes) for version 3)")
            }
            if headerLength > clusterSize {
                throw fail(100, "header_length \(headerLength) exceeds the cluster size \(clusterSize)")
            }
            (incompatible, compatible, autoclear) = (r.u64(72), r.u64(80), r.u64(88))
            refcountOrder = Int(r.u32(96))
        }

        // The backing name and the extensions both live in cluster 0 (spec "Header extensions").
        let backingOffset = r.u64(8)
        let backingLength = UInt64(r.u32(16))
        if backingOffset != 0 {
            if backingOffset >= UInt64(clusterSize) {
                throw fail(
                    8,
                    "backing file name offset \(qcow2Hex(backingOffset)) is outside the first cluster (cluster size \(clusterSize))"
                )
            }
            if backingLength > Qcow2Limits.maxBackingNameBytes {
                throw fail(16, "backing file name is \(backingLength) bytes long (at most \(Qcow2Limits.maxBackingNameBytes))")
            }
            if backingOffset + backingLength > UInt64(clusterSize) {
                throw fail(
                    16,
                    "backing file name at \(qcow2Hex(backingOffset)) with \(backingLength) bytes runs past the first cluster (cluster size \(clusterSize))"
                )
            }
            if backingOffset + backingLength > fileLength {
                throw fail(
                    backingOffset,
                    "truncated backing file name: \(backingLength) bytes at \(qcow2Hex(backingOffset)), file ends at \(qcow2Hex(fileLength))"
                )
            }
        }
        let cluster0 = try readCluster0(clusterSize)
        let backingFileName: String? =
            backingOffset == 0 ? nil : String(decoding: cluster0.slice(Int(backingOffset), Int(backingLength)), as: UTF8.self)

        // QEMU stops the extension walk at the backing name, which follows the extensions.
        let extensionEnd = backingOffset != 0 ? Int(backingOffset) : clusterSize
        var backingFormat: String?
        var featureNames: [UInt16: String] = [:]  // (type << 8 | bit) -> name
        var at = headerLength
        while at + 8 <= extensionEnd {
            let type = cluster0.u32(at)
            let length = Int(cluster0.u32(at + 4))
            if type == HeaderExtension.end { break }
            if length > extensionEnd - at - 8 {
                throw fail(
                    UInt64(at), "header extension \(qcow2Hex(type)) has length \(length), which runs past byte \(extensionEnd)")
            }
            let data = at + 8
            switch type {
            case HeaderExtension.backingFormat:
                backingFormat = String(decoding: cluster0.slice(data, length), as: UTF8.self)
            case HeaderExtension.featureNames:
                for entry in stride(from: data, to: data + length - 47, by: 48) {
                    let nameBytes = cluster0.slice(entry + 2, 46).prefix { $0 != 0 }
                    featureNames[UInt16(cluster0.u8(entry)) << 8 | UInt16(cluster0.u8(entry + 1))] =
                        String(decoding: nameBytes, as: UTF8.self)
                }
            default:
                // Bitmaps, encryption and data-file extensions do not affect metadata caching,
                // and unknown extensions may be ignored by the spec.
                break
            }
            at = data + (length + 7) / 8 * 8
        }

        let unknown = incompatible & ~IncompatibleFeature.known
        if unknown != 0 {
            let names = (0..<64).filter { unknown >> UInt64($0) & 1 != 0 }.map { bit in
                featureNames[UInt16(bit)].map { "bit \(bit) '\($0)'" } ?? "bit \(bit)"
            }
            throw fail(72, "unknown incompatible feature bits \(qcow2Hex(unknown)) (\(names.joined(separator: ", ")))")
        }
        // An image that needs repair has refcounts the simulator cannot trust; QEMU would repair
        // them at open, which the simulator does not model.
        if incompatible & IncompatibleFeature.corrupt != 0 {
            throw fail(72, "image is marked corrupt; run 'qemu-img check -r all' first")
        }
        if incompatible & IncompatibleFeature.dirty != 0 {
            throw fail(72, "image is marked dirty; run 'qemu-img check -r all' first")
        }
        if incompatible & IncompatibleFeature.externalDataFile != 0 {
            throw fail(72, "external data files are not supported (incompatible feature bit 2 is set)")
        }
        let extendedL2 = incompatible & IncompatibleFeature.extendedL2 != 0
        if extendedL2 && clusterBits < Qcow2Limits.minExtendedL2ClusterBits {
            throw fail(
                20,
                "extended L2 entries need a cluster size of at least 16384 bytes, found \(clusterSize) (cluster_bits \(clusterBits))"
            )
        }
        if refcountOrder > 6 {
            throw fail(96, "refcount_order \(refcountOrder) out of range (expected 0 to 6)")
        }
        let cryptMethod = r.u32(32)
        if cryptMethod != 0 {
            throw fail(32, "encrypted images are not supported (crypt_method \(cryptMethod), expected 0)")
        }
        let snapshotCount = Int(r.u32(60))
        if snapshotCount != 0 {
            throw fail(60, "internal snapshots are not supported (image has \(plural(snapshotCount, "snapshot")), expected 0)")
        }

        let virtualSize = r.u64(24)
        let l2Bits = clusterBits - (extendedL2 ? 4 : 3)
        let neededL1 =
            virtualSize >> UInt64(clusterBits + l2Bits)
            + (virtualSize & ((1 << UInt64(clusterBits + l2Bits)) - 1) == 0 ? 0 : 1)
        let maxL1Entries = Qcow2Limits.maxL1Bytes / 8
        if virtualSize > UInt64(Int64.max) || neededL1 > maxL1Entries {
            throw fail(
                24,
                "virtual size \(virtualSize) is too large for cluster size \(clusterSize) (an L1 table holds at most \(maxL1Entries) entries)"
            )
        }
        let l1Size = UInt64(r.u32(36))
        if l1Size > maxL1Entries {
            throw fail(36, "l1 table has \(l1Size) entries (at most \(maxL1Entries))")
        }
        if l1Size < neededL1 {
            throw fail(
                36, "l1 table has \(plural(Int(l1Size), "entry", "entries")), virtual size \(virtualSize) needs \(neededL1)")
        }
        let l1TableOffset = r.u64(40)
        let clusterMask = UInt64(clusterSize - 1)
        if l1TableOffset & clusterMask != 0 {
            throw fail(
                40, "l1 table offset \(qcow2Hex(l1TableOffset)) is not cluster-aligned (cluster size \(qcow2Hex(clusterSize)))")
        }
        if l1Size > 0 && (l1TableOffset > fileLength || l1Size * 8 > fileLength - l1TableOffset) {
            throw fail(
                l1TableOffset,
                "truncated l1 table: \(l1Size * 8) bytes at \(qcow2Hex(l1TableOffset)), file ends at \(qcow2Hex(fileLength))")
        }

        let refcountTableOffset = r.u64(48)
        let refcountTableClusters = UInt64(r.u32(56))
        if refcountTableClusters == 0 {
            throw fail(56, "refcount table is empty (refcount_table_clusters 0, expected at least 1)")
        }
        let maxReftableClusters = Qcow2Limits.maxRefcountTableBytes >> UInt64(clusterBits)
        if refcountTableClusters > maxReftableClusters {
            throw fail(
                56,
                "refcount table has \(refcountTableClusters) clusters (at most \(maxReftableClusters) with cluster size \(clusterSize))"
            )
        }
        if refcountTableOffset & clusterMask != 0 {
            throw fail(
                48,
                "refcount table offset \(qcow2Hex(refcountTableOffset)) is not cluster-aligned (cluster size \(qcow2Hex(clusterSize)))"
            )
        }
        let reftableBytes = refcountTableClusters << UInt64(clusterBits)
        // Offsets come from an untrusted file: compare without overflowing.
        if refcountTableOffset > fileLength || reftableBytes > fileLength - refcountTableOffset {
            throw fail(
                refcountTableOffset,
                "truncated refcount table: \(reftableBytes) bytes at \(qcow2Hex(refcountTableOffset)), file ends at \(qcow2Hex(fileLength))"
            )
        }

        return Qcow2Header(
            version: version, clusterBits: clusterBits, virtualSize: virtualSize,
            l1TableOffset: l1TableOffset, l1Size: Int(l1Size),
            refcountTableOffset: refcountTableOffset, refcountTableClusters: Int(refcountTableClusters),
            snapshotCount: snapshotCount, incompatibleFeatures: incompatible,
            compatibleFeatures: compatible, autoclearFeatures: autoclear,
            refcountOrder: refcountOrder, headerLength: headerLength,
            backingFileName: backingFileName, backingFormat: backingFormat, extendedL2: extendedL2)
    }
}

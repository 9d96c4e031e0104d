/// The `qemu-img create -o` options that shape an image (`cluster_size=64K,extended_l2=on,
/// refcount_bits=16`), validated with qemu-img's own messages; `rendered` spells them back.
public struct CreateOptions: Equatable, Sendable, CustomStringConvertible {
    /// Cluster size in bytes (default 64 KiB).
    public var clusterSize: UInt64 = 65536
    /// `extended_l2=on` (default off).
    public var extendedL2 = false
    /// `refcount_bits` (default 16).
    public var refcountBits = 16
    /// The qcow2 version: 3 (`compat=1.1`, the default) or 2 (`compat=0.10`: no zero clusters,
    /// no extended L2 entries, 16-bit refcounts only).
    public var version = 3
    /// `compression_type` (default zlib). It shapes no metadata; it is kept so that the options
    /// given to qemu-img are the ones the user gave.
    public var compressionType = CompressionType.zlib

    /// qcow2's compression types (`Qcow2CompressionType` in qapi/block-core.json).
    public enum CompressionType: String, Equatable, Sendable, CaseIterable {
        /// zlib, the default (and the only type of a version 2 image).
        case zlib
        /// zstd (version 3 only: an incompatible feature bit).
        case zstd
    }

    /// The given options; no arguments give the defaults of `qemu-img create -f qcow2`. The
    /// values are not checked here (`parse` checks what it reads; `rendered` spells any value).
    public init(
        clusterSize: UInt64 = 65536, extendedL2: Bool = false, refcountBits: Int = 16, version: Int = 3,
        compressionType: CompressionType = .zlib
    ) {
        self.clusterSize = clusterSize
        self.extendedL2 = extendedL2
        self.refcountBits = refcountBits
        self.version = version
        self.compressionType = compressionType
    }

    /// Parses a comma-separated `key=value` list as qemu-img does (see `parse(_:)`).
    public init(parsing text: String) throws(Failure) { self = try Self.parse(text) }

    /// The options as `qemu-img create -o` spells them, defaults left out (qemu-img then applies
    /// the same defaults), in a fixed order, sizes in bytes: `cluster_size=4096,extended_l2=on`.
    /// `CreateOptions.parse(rendered)` gives back these options; the defaults render as "".
    public var rendered: String {
        let d = CreateOptions()
        var items: [String] = []
        if clusterSize != d.clusterSize { items.append("cluster_size=\(clusterSize)") }
        if extendedL2 != d.extendedL2 { items.append("extended_l2=\(extendedL2 ? "on" : "off")") }
        if refcountBits != d.refcountBits { items.append("refcount_bits=\(refcountBits)") }
        // qcow2_co_create_opts spells the versions "0.10" and "1.1".
        if version != d.version { items.append("compat=\(version == 2 ? "0.10" : "1.1")") }
        if compressionType != d.compressionType { items.append("compression_type=\(compressionType.rawValue)") }
        return items.joined(separator: ",")
    }

    /// `rendered`.
    public var description: String { rendered }

    /// A qemu-img error, with qemu-img's exact text.
    public struct Failure: Error, Equatable, CustomStringConvertible {
        /// qemu-img's message.
        public var message: String
        /// The message.
        public var description: String { message }
        /// Creates a failure with qemu-img's text.
        public init(message: String) { self.message = message }
    }

    /// Parses a comma-separated `key=value` list as qemu-img does.
    public static func parse(_ text: String) throws(Failure) -> CreateOptions {
        var o = CreateOptions()
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0])
            let value = kv.count > 1 ? kv[1] : ""
            switch key {
            case "cluster_size":
                guard case .success(let v) = QemuSize.parse(value) else {
                    throw Failure(message: "Parameter 'cluster_size' expects a non-negative number below 2^64")
                }
                o.clusterSize = v
            case "extended_l2":
                switch value {
                case "on", "true", "yes": o.extendedL2 = true
                case "off", "false", "no": o.extendedL2 = false
                default: throw Failure(message: "Parameter 'extended_l2' expects 'on' or 'off'")
                }
            case "compat":
                // qcow2_co_create_opts: "0.10"/"v2" and "1.1"/"v3" (qemu-img names the option 'version').
                switch value {
                case "0.10", "v2": o.version = 2
                case "1.1", "v3": o.version = 3
                default: throw Failure(message: "Parameter 'version' does not accept value '\(value)'")
                }
            case "refcount_bits":
                guard let v = Int(value) else { throw Failure(message: "Parameter 'refcount_bits' expects a number") }
                o.refcountBits = v
            case "compression_type":
                guard value == "zlib" || value == "zstd" else {
                    throw Failure(message: "Parameter 'compression_type' does not accept value '\(value)'")
                }
                o.compressionType = value == "zstd" ? .zstd : .zlib
            case "lazy_refcounts":
                guard value == "off" || value == "false" else {
                    throw Failure(message: "lazy_refcounts=on is not simulated (qcow2-model.md §18: unverified)")
                }
            default:
                throw Failure(message: "Invalid parameter '\(key)'")
            }
        }
        guard o.clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(o.clusterSize) else {
            throw Failure(message: "Cluster size must be a power of two between 512 and 2048k")
        }
        guard o.refcountBits > 0, o.refcountBits <= 64, o.refcountBits.nonzeroBitCount == 1 else {
            throw Failure(message: "Refcount width must be a power of two and may not exceed 64 bits")
        }
        // qcow2_co_create's version checks, with qemu-img's messages (checked against 7.2).
        if o.version < 3 {
            if o.refcountBits != 16 {
                throw Failure(
                    message:
                        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"
                )
            }
            if o.extendedL2 {
                throw Failure(
                    message:
                        "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)"
                )
            }
            if o.compressionType != .zlib {
                throw Failure(
                    message:
                        "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)"
                )
            }
        }
        if o.extendedL2 && o.clusterSize < 16384 {
            throw Failure(message: "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }
        return o
    }

    /// The geometry of an image of `virtualSize` bytes, with qemu-img's size checks.
    public func geometry(virtualSize: UInt64) throws(Failure) -> Geometry {
        guard virtualSize % 512 == 0 else { throw Failure(message: "Image size must be a multiple of 512 bytes") }
        let g = Geometry(
            clusterBits: clusterSize.trailingZeroBitCount, extendedL2: extendedL2,
            refcountOrder: refcountBits.trailingZeroBitCount, virtualSize: virtualSize)
        // QCOW_MAX_L1_SIZE is 32 MiB of 8-byte entries.
        if g.l1Size > (32 << 20) / 8 {
            throw Failure(message: "The image size is too large for file format 'qcow2' (try using a larger cluster size)")
        }
        return g
    }
}

/// The runtime qcow2 options of one image that size its metadata caches, as QEMU's `-drive` /
/// `--image-opts` spell them (qcow2-model.md §2).
public struct CacheOptions: Equatable, Sendable {
    /// `cache-size` (combined L2 + refcount bytes), if set.
    public var cacheSize: UInt64?
    /// `l2-cache-size`, if set.
    public var l2CacheSize: UInt64?
    /// `refcount-cache-size`, if set.
    public var refcountCacheSize: UInt64?
    /// `l2-cache-entry-size`, if set.
    public var l2CacheEntrySize: UInt64?
    /// `cache-clean-interval` in seconds, if set (QEMU's Linux default is 600; 0 disables).
    public var cacheCleanInterval: UInt64?
    /// `discard-no-unref` (QEMU 8.1 and later; default off): discards keep the cluster allocated.
    public var discardNoUnref = false

    /// The given options; no arguments give QEMU's defaults.
    public init(
        cacheSize: UInt64? = nil, l2CacheSize: UInt64? = nil, refcountCacheSize: UInt64? = nil,
        l2CacheEntrySize: UInt64? = nil, cacheCleanInterval: UInt64? = nil, discardNoUnref: Bool = false
    ) {
        self.cacheSize = cacheSize
        self.l2CacheSize = l2CacheSize
        self.refcountCacheSize = refcountCacheSize
        self.l2CacheEntrySize = l2CacheEntrySize
        self.cacheCleanInterval = cacheCleanInterval
        self.discardNoUnref = discardNoUnref
    }

    /// The option names QEMU's qcow2 driver accepts that qcow2sim models.
    public static let names = [
        "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size", "cache-size", "cache-clean-interval",
    ]

    /// The options that are set, as QEMU spells them (`("l2-cache-size", "1048576")`), in a fixed
    /// order: sizes in bytes, `discard-no-unref` only when on (off is its default).
    public var items: [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        if let v = cacheSize { out.append(("cache-size", String(v))) }
        if let v = l2CacheSize { out.append(("l2-cache-size", String(v))) }
        if let v = refcountCacheSize { out.append(("refcount-cache-size", String(v))) }
        if let v = l2CacheEntrySize { out.append(("l2-cache-entry-size", String(v))) }
        if let v = cacheCleanInterval { out.append(("cache-clean-interval", String(v))) }
        if discardNoUnref { out.append(("discard-no-unref", "on")) }
        return out
    }
}

/// An error QEMU prints when it cannot open an image with the given options; `message` is
/// QEMU's exact text (what qemu-io prints after `qemu-io: can't open: `).
public struct OpenError: Error, Equatable, CustomStringConvertible {
    /// QEMU's message.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// The runtime options of a whole chain as one `-drive` / `--image-opts` string gives them: one
/// `CacheOptions` per image, top first (`backing.` prefixes address the images below).
///
/// Parsed from QEMU's spelling (`DriveOptions(parsing:)`, with QEMU's messages) and rendered back
/// to it (`rendered`), for qemu-io's `--image-opts` and qemu-system's `-drive` alike.
public struct DriveOptions: Equatable, Sendable, CustomStringConvertible {
    /// Per image, top first: index 0 is the top image, 1 its backing file, and so on. Trailing
    /// images without options are not stored (`init` drops them), so equal options compare equal
    /// whatever depth they were parsed for.
    public private(set) var images: [CacheOptions]

    /// The deepest chain a `backing.` prefix can reach (the image reader's limit, 64 images).
    public static let maxDepth = 64

    /// Options for the top `images.count` images, top first (QEMU's defaults below them).
    public init(_ images: [CacheOptions] = []) {
        var images = images
        while let last = images.last, last == CacheOptions() { images.removeLast() }
        self.images = images
    }

    /// Parses `text` as QEMU `version` does (see `parse(_:depth:version:)`); `depth` nil accepts
    /// up to `maxDepth` levels of `backing.` (the chain's depth is checked by `images(depth:)`).
    public init(parsing text: String, depth: Int? = nil, version: QemuVersion = .v7_2) throws(OpenError) {
        self.init(try Self.parse(text, depth: depth ?? Self.maxDepth, version: version))
    }

    /// The options of the image `level` steps below the top (0 = the top image).
    public subscript(level: Int) -> CacheOptions {
        get { level >= 0 && level < images.count ? images[level] : CacheOptions() }
        set {
            guard level >= 0 else { return }
            var all = images
            while all.count <= level { all.append(CacheOptions()) }
            all[level] = newValue
            self = DriveOptions(all)
        }
    }

    /// The options of each image of a chain of `depth` images, top first, or QEMU's error for
    /// options addressed to an image below the base (named as the `-drive` string names them).
    public func images(depth: Int) throws(OpenError) -> [CacheOptions] {
        // The shallowest image below the base that has options: the first such option in the
        // rendering's order (a string parsed for a known depth was refused at its first one).
        if let level = images.indices.first(where: { $0 >= max(depth, 1) && images[$0] != CacheOptions() }) {
            let key = images[level].items.first?.key ?? ""
            throw OpenError(
                "Block format 'qcow2' does not support the option '\(String(repeating: "backing.", count: level))\(key)'")
        }
        return (0..<max(depth, 1)).map { self[$0] }
    }

    /// The options as QEMU spells them: each image's `CacheOptions.items` in order, top first,
    /// `backing.` once per level below the top, sizes in bytes
    /// (`l2-cache-size=1048576,backing.cache-clean-interval=0`). `DriveOptions(parsing: rendered)`
    /// gives back these options.
    public var rendered: String {
        var items: [String] = []
        for (level, o) in images.enumerated() {
            let prefix = String(repeating: "backing.", count: level)
            for (key, value) in o.items { items.append(prefix + key + "=" + value) }
        }
        return items.joined(separator: ",")
    }

    /// `rendered`.
    public var description: String { rendered }

    /// Parses a `--drive` option string into per-image `CacheOptions` for a chain of `depth`
    /// images (top first in the result, `depth` entries), as QEMU `version` does:
    /// `discard-no-unref` is an unknown option before 8.1.
    public static func parse(_ text: String, depth: Int, version: QemuVersion = .v7_2) throws(OpenError) -> [CacheOptions] {
        var result = Array(repeating: CacheOptions(), count: max(depth, 1))
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            var key = kv[0]
            let value = kv.count > 1 ? kv[1] : ""
            var level = 0
            while key.hasPrefix("backing.") {
                key = key.dropFirst("backing.".count)
                level += 1
            }
            if key == "discard-no-unref" && version.hasDiscardNoUnref && level < result.count {
                // QEMU_OPT_BOOL (qapi_bool_parse).
                switch value {
                case "on", "yes", "true", "y": result[level].discardNoUnref = true
                case "off", "no", "false", "n": result[level].discardNoUnref = false
                default: throw OpenError("Parameter 'discard-no-unref' expects 'on' or 'off'")
                }
                continue
            }
            guard CacheOptions.names.contains(String(key)) else {
                throw OpenError("Block format 'qcow2' does not support the option '\(kv[0])'")
            }
            guard level < result.count else {
                throw OpenError("Block format 'qcow2' does not support the option '\(kv[0])'")
            }
            if key == "cache-clean-interval" {
                // QEMU_OPT_NUMBER: qemu_strtou64, which wraps negative numbers.
                let v: UInt64
                if let u = UInt64(value) {
                    v = u
                } else if let i = Int64(value), i < 0 {
                    v = UInt64(bitPattern: i)
                } else {
                    throw OpenError("Parameter 'cache-clean-interval' expects a number")
                }
                result[level].cacheCleanInterval = v
                continue
            }
            let size: UInt64
            switch QemuSize.parse(value) {
            case .success(let v): size = v
            case .failure(.invalid): throw OpenError("Parameter '\(key)' expects a non-negative number below 2^64")
            case .failure(.outOfRange): throw OpenError("Value '\(value)' is out of range for parameter '\(key)'")
            }
            switch key {
            case "cache-size": result[level].cacheSize = size
            case "l2-cache-size": result[level].l2CacheSize = size
            case "refcount-cache-size": result[level].refcountCacheSize = size
            default: result[level].l2CacheEntrySize = size
            }
        }
        return result
    }
}

/// The effective cache configuration of one image: QEMU's `qcow2_update_options_prepare` and
/// `read_cache_sizes` (qcow2-model.md §2), for Linux.
public struct CacheSizing: Equatable, Sendable {
    /// Bytes per L2 cache entry (the slice size).
    public var l2EntrySize: UInt64
    /// Number of L2 cache entries.
    public var l2Entries: Int
    /// Bytes per refcount cache entry (always the cluster size).
    public var refcountEntrySize: UInt64
    /// Number of refcount cache entries.
    public var refcountEntries: Int
    /// Seconds between clean ticks; 0 = never.
    public var cleanInterval: UInt64

    /// QEMU's `DEFAULT_L2_CACHE_MAX_SIZE` on Linux.
    public static let defaultL2Max: UInt64 = 32 << 20
    /// QEMU's `DEFAULT_CACHE_CLEAN_INTERVAL` on Linux.
    public static let defaultCleanInterval: UInt64 = 600
    /// Memory QEMU could allocate for the caches; above it QEMU says
    /// `Could not allocate metadata caches`. Defaults to this machine's physical memory.
    nonisolated(unsafe) public static var allocationLimit: UInt64 = physicalMemory()

    /// Computes the sizing of an image with geometry `g` and options `o`, or QEMU's error.
    public init(geometry g: Geometry, options o: CacheOptions) throws(OpenError) {
        let cs = g.clusterSize
        let needEntries = (g.virtualSize + cs - 1) / cs
        let maxL2 = (needEntries * g.l2EntrySize + cs - 1) / cs * cs
        let l2Setting = o.l2CacheSize ?? Self.defaultL2Max
        var rcBytes = o.refcountCacheSize ?? 0
        var entrySize = o.l2CacheEntrySize ?? cs
        var l2Bytes = min(maxL2, l2Setting)

        if let c = o.cacheSize {
            if o.l2CacheSize != nil && o.refcountCacheSize != nil {
                throw OpenError("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time")
            }
            if o.l2CacheSize != nil && l2Setting > c { throw OpenError("l2-cache-size may not exceed cache-size") }
            if rcBytes > c { throw OpenError("refcount-cache-size may not exceed cache-size") }
            if o.l2CacheSize != nil {
                rcBytes = c - l2Bytes
            } else if o.refcountCacheSize != nil {
                l2Bytes = c - rcBytes
            } else if c >= maxL2 + 4 * cs {
                l2Bytes = maxL2
                rcBytes = c - l2Bytes
            } else {
                rcBytes = min(c, 4 * cs)
                l2Bytes = c - rcBytes
            }
        }
        if l2Bytes < maxL2 && o.l2CacheEntrySize == nil { entrySize = min(cs, 4096) }
        if entrySize < 512 || entrySize > cs || entrySize.nonzeroBitCount != 1 {
            throw OpenError("L2 cache entry size must be a power of two between 512 and the cluster size (\(cs))")
        }
        let nL2 = max(2, l2Bytes / entrySize)
        if nL2 > UInt64(Int32.max) { throw OpenError("L2 cache size too big") }
        let nRC = max(4, rcBytes / cs)
        if nRC > UInt64(Int32.max) { throw OpenError("Refcount cache size too big") }
        let interval = o.cacheCleanInterval ?? Self.defaultCleanInterval
        if interval > UInt64(UInt32.max) { throw OpenError("Cache clean interval too big") }
        let (l2Mem, o1) = nL2.multipliedReportingOverflow(by: entrySize)
        let (rcMem, o2) = nRC.multipliedReportingOverflow(by: cs)
        if o1 || o2 || l2Mem > Self.allocationLimit || rcMem > Self.allocationLimit {
            throw OpenError("Could not allocate metadata caches")
        }
        self.l2EntrySize = entrySize
        self.l2Entries = Int(nL2)
        self.refcountEntrySize = cs
        self.refcountEntries = Int(nRC)
        self.cleanInterval = interval
    }

    private static func physicalMemory() -> UInt64 {
        #if canImport(Glibc)
            return UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
        #else
            return 1 << 36
        #endif
    }
}

#if canImport(Glibc)
    import Glibc
#endif

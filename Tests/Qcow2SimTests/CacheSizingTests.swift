import Qcow2Sim
import Testing

/// QEMU's cache sizing and its error messages (qcow2-model.md §2), as a table of cases. Every
/// expected value is computed by hand from §2's rules or quoted from its error list.
@Suite struct CacheSizingTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var size: UInt64
        var cluster: UInt64 = 65536
        var extended = false
        var drive: String
        /// (L2 entry size, L2 entries, refcount entries, clean interval)
        var expected: (UInt64, Int, Int, UInt64)
        var testDescription: String { "\(size >> 20)M/\(cluster >> 10)K '\(drive)'" }
    }

    static let G: UInt64 = 1 << 30
    static let cases: [Case] = [
        // Defaults: the L2 cache covers the disk (1 GiB/64 KiB = 128 KiB of L2 = 2 whole tables).
        Case(size: G, drive: "", expected: (65536, 2, 4, 600)),
        Case(size: G, extended: true, drive: "", expected: (65536, 4, 4, 600)),
        // TV8: 4 KiB clusters, 1 GiB: 2 MiB of L2 = 512 entries of 4 KiB.
        Case(size: G, cluster: 4096, drive: "", expected: (4096, 512, 4, 600)),
        // The 32 MiB default cap: 1 TiB needs 128 MiB, so 4 KiB slices.
        Case(size: 1 << 40, drive: "", expected: (4096, 8192, 4, 600)),
        // Below 2 entries becomes 2 (verified with l2-cache-size=1).
        Case(size: G, drive: "l2-cache-size=1", expected: (4096, 2, 4, 600)),
        // TV3 and TV6.
        Case(size: G, drive: "l2-cache-size=64K", expected: (4096, 16, 4, 600)),
        Case(size: 4 * G, drive: "l2-cache-size=8K", expected: (4096, 2, 4, 600)),
        Case(size: 4 * G, drive: "l2-cache-size=12K", expected: (4096, 3, 4, 600)),
        // An explicit value is capped at the disk's need; then entries stay whole clusters.
        Case(size: G, drive: "l2-cache-size=1M", expected: (65536, 2, 4, 600)),
        Case(size: 20 * G, drive: "l2-cache-size=1M,l2-cache-entry-size=64K", expected: (65536, 16, 4, 600)),
        Case(size: 20 * G, drive: "l2-cache-size=1.5M,l2-cache-entry-size=64K", expected: (65536, 24, 4, 600)),
        Case(size: 16 * G, drive: "l2-cache-size=1M,l2-cache-entry-size=4K", expected: (4096, 256, 4, 600)),
        Case(size: G, drive: "l2-cache-entry-size=512", expected: (512, 256, 4, 600)),
        // cache-size alone: large enough for all L2 plus 4 clusters of refcounts.
        Case(size: G, drive: "cache-size=1M", expected: (65536, 2, 14, 600)),
        // cache-size alone, too small: refcounts take min(C, 4 clusters), L2 the rest.
        Case(size: G, drive: "cache-size=200K", expected: (4096, 2, 4, 600)),
        Case(size: G, drive: "cache-size=300K", expected: (4096, 11, 4, 600)),
        // cache-size with l2-cache-size: refcounts get the (capped) remainder.
        Case(size: G, drive: "cache-size=1M,l2-cache-size=64K", expected: (4096, 16, 15, 600)),
        // cache-size with refcount-cache-size: L2 gets the rest, not capped, whole clusters.
        Case(size: G, drive: "cache-size=2M,refcount-cache-size=256K", expected: (65536, 28, 4, 600)),
        Case(size: G, drive: "refcount-cache-size=1M", expected: (65536, 2, 16, 600)),
        Case(size: G, drive: "cache-clean-interval=0", expected: (65536, 2, 4, 0)),
        Case(size: G, drive: "cache-clean-interval=4294967295", expected: (65536, 2, 4, 4_294_967_295)),
        Case(size: G, drive: "l2-cache-size=0x10000", expected: (4096, 16, 4, 600)),
    ]

    @Test(arguments: cases)
    func sizing(_ c: Case) throws {
        let g = try CreateOptions.parse("cluster_size=\(c.cluster)\(c.extended ? ",extended_l2=on" : "")").geometry(
            virtualSize: c.size)
        let s = try CacheSizing(geometry: g, options: DriveOptions.parse(c.drive, depth: 1)[0])
        #expect(s.l2EntrySize == c.expected.0)
        #expect(s.l2Entries == c.expected.1)
        #expect(s.refcountEntries == c.expected.2)
        #expect(s.refcountEntrySize == c.cluster)
        #expect(s.cleanInterval == c.expected.3)
    }

    static let errors: [(String, String)] = [
        (
            "cache-size=1M,l2-cache-size=64K,refcount-cache-size=64K",
            "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"
        ),
        ("cache-size=64K,l2-cache-size=128K", "l2-cache-size may not exceed cache-size"),
        ("cache-size=64K,refcount-cache-size=128K", "refcount-cache-size may not exceed cache-size"),
        ("l2-cache-entry-size=256", "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"),
        ("l2-cache-entry-size=3000", "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"),
        ("l2-cache-entry-size=128K", "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"),
        ("cache-size=2T,refcount-cache-size=1M,l2-cache-entry-size=512", "L2 cache size too big"),
        ("refcount-cache-size=1P", "Refcount cache size too big"),
        ("cache-size=1T,refcount-cache-size=1M,l2-cache-entry-size=512", "Could not allocate metadata caches"),
        ("cache-clean-interval=4294967296", "Cache clean interval too big"),
        ("cache-clean-interval=-1", "Cache clean interval too big"),
        ("cache-clean-interval=abc", "Parameter 'cache-clean-interval' expects a number"),
        ("l2-cache-size=abc", "Parameter 'l2-cache-size' expects a non-negative number below 2^64"),
        ("l2-cache-size=1.5", "Parameter 'l2-cache-size' expects a non-negative number below 2^64"),
        ("l2-cache-size=-1", "Parameter 'l2-cache-size' expects a non-negative number below 2^64"),
        ("l2-cache-size=16E", "Value '16E' is out of range for parameter 'l2-cache-size'"),
        ("l2-cache-sise=1M", "Block format 'qcow2' does not support the option 'l2-cache-sise'"),
        ("backing.l2-cache-size=1M", "Block format 'qcow2' does not support the option 'backing.l2-cache-size'"),
    ]

    @Test(arguments: errors)
    func error(_ drive: String, _ message: String) throws {
        let g = Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30)
        #expect(throws: OpenError(message)) {
            try CacheSizing(geometry: g, options: DriveOptions.parse(drive, depth: 1)[0])
        }
    }

    @Test func backingOptionsApplyPerImage() throws {
        let o = try DriveOptions.parse(
            "l2-cache-size=1M,backing.l2-cache-size=256K,backing.backing.cache-clean-interval=5", depth: 3)
        #expect(o[0].l2CacheSize == 1 << 20)
        #expect(o[1].l2CacheSize == 256 << 10)
        #expect(o[2].cacheCleanInterval == 5)
    }

    /// qemu-img's own messages for bad `-o` values (seen with Debian qemu-img 7.2.22).
    static let createErrors: [(String, UInt64, String)] = [
        ("cluster_size=1000", 1 << 30, "Cluster size must be a power of two between 512 and 2048k"),
        ("cluster_size=4M", 1 << 30, "Cluster size must be a power of two between 512 and 2048k"),
        ("refcount_bits=3", 1 << 30, "Refcount width must be a power of two and may not exceed 64 bits"),
        (
            "extended_l2=on,cluster_size=8k", 1 << 30,
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"
        ),
        ("bogus=1", 1 << 30, "Invalid parameter 'bogus'"),
        ("cluster_size=512", 64 << 40, "The image size is too large for file format 'qcow2' (try using a larger cluster size)"),
        ("", (1 << 30) + 1, "Image size must be a multiple of 512 bytes"),
    ]

    @Test(arguments: createErrors)
    func createError(_ o: String, _ size: UInt64, _ message: String) {
        #expect(throws: CreateOptions.Failure(message: message)) {
            try CreateOptions.parse(o).geometry(virtualSize: size)
        }
    }
}

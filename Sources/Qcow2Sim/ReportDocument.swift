import Foundation
import TraceKit

/// The `simulate --format json` report as a `Codable` value: `ReportFormat.json` encodes it, and
/// a program reading the JSON can decode it with `JSONDecoder` (README, "The JSON reports").
///
/// Versioning: `schemaVersion` is `currentSchemaVersion` (1). It is raised when a field is
/// removed or renamed, or changes its type or meaning; adding a field does not raise it, so a
/// reader must ignore keys it does not know.
public struct SimulationDocument: Equatable, Sendable, Codable {
    /// The schema version this code writes.
    public static let currentSchemaVersion = 1

    /// `schema_version`.
    public var schemaVersion = Self.currentSchemaVersion
    /// What ran: the policy, the options as QEMU spells them, each image's geometry and caches.
    public var config: Config
    /// One entry per image, base first.
    public var images: [Image]
    /// Both caches summed over the chain.
    public var totals: Totals
    /// Trace records replayed.
    public var requests: Int
    /// Records per op.
    public var requestsByOp: RequestsByOp
    /// Requests QEMU would run as concurrent tasks: reads.
    public var multiSegmentReads: Int
    /// Multi-segment writes.
    public var multiSegmentWrites: Int
    /// Trace time spanned, seconds (0 without timestamps), to 6 significant digits.
    public var durationSeconds: Double
    /// The what-ifs the run applied (proposals QEMU does not implement), `KEY: VALUE`; absent
    /// when none (issue 11: labelled so no one mistakes them for QEMU behaviour).
    public var whatIf: [String: String]?

    /// The run's configuration.
    public struct Config: Equatable, Sendable, Codable {
        /// Eviction policy.
        public var policy: String
        /// `CacheMode` name.
        public var cacheMode: String
        /// Chain-wide `qemu-img create -o` options, rendered (`CreateOptions.rendered`).
        public var createOptions: String
        /// `-drive` options, rendered (`DriveOptions.rendered`).
        public var driveOptions: String
        /// Images in the chain.
        public var chain: Int
        /// Each image's geometry and effective cache sizes, base first.
        public var images: [ImageConfig]

        enum CodingKeys: String, CodingKey {
            case policy
            case cacheMode = "cache_mode"
            case createOptions = "create_options"
            case driveOptions = "drive_options"
            case chain, images
        }
    }

    /// One image's geometry and effective cache configuration (`CacheSizing`).
    public struct ImageConfig: Equatable, Sendable, Codable {
        /// Chain position (0 = base).
        public var index: Int
        /// Cluster size in bytes.
        public var clusterSize: UInt64
        /// Extended L2 entries (subclusters).
        public var extendedL2: Bool
        /// Refcount width in bits.
        public var refcountBits: Int
        /// Virtual size in bytes.
        public var virtualSize: UInt64
        /// Bytes per L2 cache entry (the slice size).
        public var l2EntrySize: UInt64
        /// L2 cache entries.
        public var l2Entries: Int
        /// L2 cache bytes (entries × entry size).
        public var l2CacheBytes: UInt64
        /// Bytes per refcount cache entry (the cluster size).
        public var refcountEntrySize: UInt64
        /// Refcount cache entries.
        public var refcountEntries: Int
        /// Seconds between cache-clean ticks (0 = off).
        public var cacheCleanInterval: UInt64

        enum CodingKeys: String, CodingKey {
            case index
            case clusterSize = "cluster_size"
            case extendedL2 = "extended_l2"
            case refcountBits = "refcount_bits"
            case virtualSize = "virtual_size"
            case l2EntrySize = "l2_entry_size"
            case l2Entries = "l2_entries"
            case l2CacheBytes = "l2_cache_bytes"
            case refcountEntrySize = "refcount_entry_size"
            case refcountEntries = "refcount_entries"
            case cacheCleanInterval = "cache_clean_interval"
        }
    }

    /// What one image did: its two caches and its `ImageStats`.
    public struct Image: Equatable, Sendable, Codable {
        /// Chain position (0 = base).
        public var index: Int
        /// The L2-table cache.
        public var l2: Metrics
        /// The refcount-block cache.
        public var refcount: Metrics
        /// Data clusters allocated.
        public var clustersAllocated: UInt64
        /// L2 tables allocated.
        public var l2TablesAllocated: UInt64
        /// Refcount blocks allocated.
        public var refcountBlocksAllocated: UInt64
        /// Refcount-table growths.
        public var refcountTableGrowths: UInt64
        /// Clusters whose refcount dropped to zero.
        public var clustersFreed: UInt64
        /// Bytes read by copy-on-write.
        public var cowBytesRead: UInt64
        /// Bytes of COW regions written.
        public var cowBytesWritten: UInt64
        /// COW regions replaced by a zero-range write.
        public var cowSkipped: UInt64
        /// Guest bytes read from this image's data clusters.
        public var guestBytesRead: UInt64
        /// Guest bytes written into this image's data clusters.
        public var guestBytesWritten: UInt64
        /// Metadata bytes written outside the caches.
        public var directMetadataBytesWritten: UInt64
        /// Runs of the one-time preallocation probe.
        public var preallocationProbes: UInt64
        /// Host file length at the end.
        public var hostLengthBytes: UInt64
        /// Host bytes allocated at the end (4 KiB blocks).
        public var hostAllocatedBytes: UInt64

        enum CodingKeys: String, CodingKey {
            case index, l2, refcount
            case clustersAllocated = "clusters_allocated"
            case l2TablesAllocated = "l2_tables_allocated"
            case refcountBlocksAllocated = "refcount_blocks_allocated"
            case refcountTableGrowths = "refcount_table_growths"
            case clustersFreed = "clusters_freed"
            case cowBytesRead = "cow_bytes_read"
            case cowBytesWritten = "cow_bytes_written"
            case cowSkipped = "cow_skipped"
            case guestBytesRead = "guest_bytes_read"
            case guestBytesWritten = "guest_bytes_written"
            case directMetadataBytesWritten = "direct_metadata_bytes_written"
            case preallocationProbes = "preallocation_probes"
            case hostLengthBytes = "host_length_bytes"
            case hostAllocatedBytes = "host_allocated_bytes"
        }
    }

    /// Both caches over the whole chain.
    public struct Totals: Equatable, Sendable, Codable {
        /// Every image's L2 cache, summed (memory too: the chain's).
        public var l2: Metrics
        /// Every image's refcount cache, summed.
        public var refcount: Metrics
        /// Host flushes of the image files (`HostFlushes`: fdatasync calls QEMU makes).
        public var hostFlushes: Int?
        /// With a cost model (`--cost`): requests per second at queue depth 1.
        public var predictedIops: Double?
        /// With a cost model: mean time per request, µs.
        public var predictedLatencyUs: Double?

        enum CodingKeys: String, CodingKey {
            case l2, refcount
            case hostFlushes = "host_flushes"
            case predictedIops = "predicted_iops"
            case predictedLatencyUs = "predicted_latency_us"
        }
    }

    /// Records per op.
    public struct RequestsByOp: Equatable, Sendable, Codable {
        /// Reads.
        public var read: Int
        /// Writes.
        public var write: Int
        /// Discards.
        public var discard: Int
        /// Write-zeroes (with or without unmap).
        public var writeZeroes: Int
        /// Flushes.
        public var flush: Int

        enum CodingKeys: String, CodingKey {
            case read, write, discard, flush
            case writeZeroes = "write_zeroes"
        }
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case config, images, totals, requests
        case requestsByOp = "requests_by_op"
        case multiSegmentReads = "multi_segment_reads"
        case multiSegmentWrites = "multi_segment_writes"
        case durationSeconds = "duration_seconds"
        case whatIf = "what_if"
    }

    /// The document of `report`, a run of `config`, with `cost`'s prediction in the totals.
    public init(report r: SimulationReport, config: SimulationConfig, cost: CostModel?) {
        self.init(report: r, config: config)
        if let cost {
            let p = cost.predict(r, config: config)
            totals.predictedIops = p.iops
            totals.predictedLatencyUs = p.latencyUs
        }
    }

    /// The document of `report`, a run of `config`.
    public init(report r: SimulationReport, config: SimulationConfig) {
        var totalL2 = CacheStats()
        var totalRC = CacheStats()
        for im in r.images {
            totalL2 = ReportFormat.add(totalL2, im.l2)
            totalRC = ReportFormat.add(totalRC, im.refcount)
        }
        let span = r.memorySpan
        self.config = Config(
            policy: config.policy, cacheMode: config.cacheMode.rawValue, createOptions: config.createOptions.rendered,
            driveOptions: config.driveOptions.rendered, chain: r.images.count,
            images: r.images.map { im in
                ImageConfig(
                    index: im.index, clusterSize: im.geometry.clusterSize, extendedL2: im.geometry.extendedL2,
                    refcountBits: im.geometry.refcountBits, virtualSize: im.geometry.virtualSize,
                    l2EntrySize: im.sizing.l2EntrySize, l2Entries: im.sizing.l2Entries,
                    l2CacheBytes: UInt64(im.sizing.l2Entries) * im.sizing.l2EntrySize,
                    refcountEntrySize: im.sizing.refcountEntrySize, refcountEntries: im.sizing.refcountEntries,
                    cacheCleanInterval: im.sizing.cleanInterval)
            })
        images = r.images.map { im in
            let s = im.image
            return Image(
                index: im.index, l2: Metrics(im.l2, memorySpan: span), refcount: Metrics(im.refcount, memorySpan: span),
                clustersAllocated: s.clustersAllocated, l2TablesAllocated: s.l2TablesAllocated,
                refcountBlocksAllocated: s.refcountBlocksAllocated, refcountTableGrowths: s.refcountTableGrowths,
                clustersFreed: s.clustersFreed, cowBytesRead: s.cowBytesRead, cowBytesWritten: s.cowBytesWritten,
                cowSkipped: s.cowSkipped, guestBytesRead: s.guestBytesRead, guestBytesWritten: s.guestBytesWritten,
                directMetadataBytesWritten: s.directMetadataBytesWritten, preallocationProbes: s.preallocationProbes,
                hostLengthBytes: im.hostLengthBytes, hostAllocatedBytes: im.hostAllocatedBytes)
        }
        totals = Totals(
            l2: Metrics(totalL2, memorySpan: span), refcount: Metrics(totalRC, memorySpan: span),
            hostFlushes: HostFlushes.count(r, config: config))
        requests = r.requests
        let ops = r.requestsByOp
        requestsByOp = RequestsByOp(
            read: ops[.read] ?? 0, write: ops[.write] ?? 0, discard: ops[.discard] ?? 0, writeZeroes: ops[.writeZeroes] ?? 0,
            flush: ops[.flush] ?? 0)
        multiSegmentReads = r.multiSegmentReads
        multiSegmentWrites = r.multiSegmentWrites
        durationSeconds = ReportFormat.rounded(r.duration)
        if !r.whatIf.isEmpty {
            var w: [String: String] = [:]
            for setting in r.whatIf {
                let kv = setting.split(separator: "=", maxSplits: 1)
                w[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
            }
            whatIf = w
        }
    }
}

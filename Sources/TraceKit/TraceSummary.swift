import Foundation

/// Counts, bytes, time span, request-size histogram and qcow2 footprint of a trace: what
/// `qcow2sim trace info` prints.
///
/// Footprint: the distinct clusters touched by data requests (reads, writes, discards,
/// write-zeroes), the distinct L2 tables covering them (one table maps `clusterSize / 8`
/// clusters, qcow2 spec "Cluster mapping"), and the L2 cache that holds all those tables,
/// `tables × clusterSize` bytes. Memory grows with the footprint, not with the trace length.
public struct TraceSummary: Sendable {
    /// Cluster size used for the footprint.
    public let clusterSize: UInt64
    /// All records.
    public private(set) var records = 0
    /// Reads.
    public private(set) var reads = 0
    /// Writes (not write-zeroes).
    public private(set) var writes = 0
    /// Discards.
    public private(set) var discards = 0
    /// Write-zeroes requests.
    public private(set) var writeZeroes = 0
    /// Flushes.
    public private(set) var flushes = 0
    /// Bytes read.
    public private(set) var bytesRead: UInt64 = 0
    /// Bytes written (not write-zeroes).
    public private(set) var bytesWritten: UInt64 = 0
    /// Bytes discarded.
    public private(set) var bytesDiscarded: UInt64 = 0
    /// Bytes zeroed.
    public private(set) var bytesZeroed: UInt64 = 0
    /// Earliest timestamp seen.
    public private(set) var firstTime: Double?
    /// Latest timestamp seen.
    public private(set) var lastTime: Double?
    /// Highest byte touched + 1.
    public private(set) var maxEnd: UInt64 = 0
    /// Request-size histogram: key = the smallest power of two ≥ the length, value = count.
    public private(set) var sizeHistogram: [UInt64: Int] = [:]
    /// Cluster numbers touched, as ranges: memory follows the number of distinct requests,
    /// not their lengths.
    private var clusters = IntervalSet()

    /// An empty summary for `clusterSize`-byte clusters (a power of two, 512 B to 2 MiB).
    public init(clusterSize: UInt64 = 65536) {
        self.clusterSize = clusterSize
    }

    /// Distinct clusters touched.
    public var footprintClusters: Int { footprint.clusters }
    /// Distinct L2 tables touched.
    public var footprintL2Tables: Int { footprint.tables }
    /// L2 cache bytes to hold every touched table (full coverage of the footprint).
    public var l2CacheBytesFullCoverage: UInt64 { UInt64(footprint.tables) * clusterSize }
    /// L2 cache bytes QEMU needs to cover a disk ending at ``maxEnd``: 8 bytes per cluster,
    /// rounded up to whole tables (qcow2 docs/qcow2-cache.txt).
    public var l2CacheBytesForSpan: UInt64 {
        // Rounded up without overflow: maxEnd may be close to 2^64.
        let clustersSpanned = maxEnd / clusterSize + (maxEnd % clusterSize == 0 ? 0 : 1)
        let entriesPerTable = clusterSize / 8
        return (clustersSpanned / entriesPerTable + (clustersSpanned % entriesPerTable == 0 ? 0 : 1)) * clusterSize
    }

    /// Distinct clusters and distinct L2 tables (one per `clusterSize / 8` clusters) of the
    /// footprint, counted over the merged cluster ranges: a range's tables are
    /// `first / perTable ... last / perTable`, and a table shared with the previous range is
    /// counted once.
    private var footprint: (clusters: Int, tables: Int) {
        let perTable = clusterSize / 8
        var clusterCount: UInt64 = 0
        var tableCount: UInt64 = 0
        var lastTable: UInt64?
        for r in clusters.ranges {
            clusterCount += r.upperBound - r.lowerBound
            var first = r.lowerBound / perTable
            let last = (r.upperBound - 1) / perTable
            if let t = lastTable, t == first { first += 1 }
            if first <= last { tableCount += last - first + 1 }
            lastTable = last
        }
        return (Int(clusterCount), Int(tableCount))
    }

    /// Adds one record.
    public mutating func add(_ r: TraceRecord) {
        records += 1
        if let t = r.time {
            firstTime = Swift.min(firstTime ?? t, t)
            lastTime = Swift.max(lastTime ?? t, t)
        }
        switch r.op {
        case .read: reads += 1; bytesRead &+= r.length
        case .write: writes += 1; bytesWritten &+= r.length
        case .discard: discards += 1; bytesDiscarded &+= r.length
        case .writeZeroes: writeZeroes += 1; bytesZeroed &+= r.length
        case .flush: flushes += 1; return
        }
        let bucket: UInt64 =
            r.length <= 1 ? r.length : (r.length > 1 << 63 ? 1 << 63 : 1 << (64 - UInt64((r.length - 1).leadingZeroBitCount)))
        sizeHistogram[bucket, default: 0] += 1
        guard r.length > 0 else { return }
        // Saturating: without a disk size a record may claim to end past 2^64.
        let (sum, overflow) = r.offset.addingReportingOverflow(r.length)
        let end = overflow ? UInt64.max : sum
        maxEnd = Swift.max(maxEnd, end)
        let first = r.offset / clusterSize
        let last = (end - 1) / clusterSize
        clusters.insert(first..<(last + 1))
    }

    /// A JSON object (stable key order).
    public func json() -> String {
        func num(_ d: Double?) -> String {
            guard let d else { return "null" }
            return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
        }
        let fp = footprint
        let hist = sizeHistogram.keys.sorted().map { "{\"max_bytes\": \($0), \"count\": \(sizeHistogram[$0] ?? 0)}" }
        return """
            {
              "records": \(records),
              "reads": \(reads),
              "writes": \(writes),
              "discards": \(discards),
              "write_zeroes": \(writeZeroes),
              "flushes": \(flushes),
              "bytes_read": \(bytesRead),
              "bytes_written": \(bytesWritten),
              "bytes_discarded": \(bytesDiscarded),
              "bytes_zeroed": \(bytesZeroed),
              "first_time": \(num(firstTime)),
              "last_time": \(num(lastTime)),
              "max_offset_end": \(maxEnd),
              "request_size_histogram": [\(hist.joined(separator: ", "))],
              "cluster_size": \(clusterSize),
              "footprint_clusters": \(fp.clusters),
              "footprint_l2_tables": \(fp.tables),
              "l2_cache_bytes_full_coverage": \(UInt64(fp.tables) * clusterSize),
              "l2_cache_bytes_for_span": \(l2CacheBytesForSpan)
            }

            """
    }

    /// A human-readable report.
    public func text() -> String {
        let fp = footprint
        var s = """
            records        \(records) (\(reads) reads, \(writes) writes, \(discards) discards, \(writeZeroes) write-zeroes, \(flushes) flushes)
            bytes          \(bytesRead) read, \(bytesWritten) written, \(bytesDiscarded) discarded, \(bytesZeroed) zeroed
            time           \(firstTime.map { "\($0)" } ?? "-") to \(lastTime.map { "\($0)" } ?? "-") s
            span           0 to \(maxEnd) bytes
            footprint      \(fp.clusters) clusters of \(clusterSize) bytes in \(fp.tables) L2 tables
            L2 cache       \(UInt64(fp.tables) * clusterSize) bytes for full coverage of the footprint, \(l2CacheBytesForSpan) for the whole span
            request sizes

            """
        for k in sizeHistogram.keys.sorted() {
            // Padded to 12 columns, never cut: 2^40 and above have 13 or more digits.
            let label = String(k)
            s += "  <= \(label)\(String(repeating: " ", count: max(0, 12 - label.count))) \(sizeHistogram[k] ?? 0)\n"
        }
        return s
    }
}

/// Writes records as a qemu-io command script (`qemu-io -f qcow2 img < script`):
/// `read -q OFF LEN`, `write -q OFF LEN`, `write -q -z OFF LEN` (with `-u` for `.unmap`),
/// `discard -q OFF LEN`, `flush`. qemu-io rejects lengths above ``maxRequest`` (checked against
/// qemu-io 7.2: "length cannot exceed 2147483136"), so longer requests are split.
public struct QemuIOScriptWriter {
    /// `BDRV_REQUEST_MAX_BYTES` = (INT_MAX >> 9) << 9, qemu-io's per-command limit.
    public static let maxRequest: UInt64 = 2_147_483_136
    /// Formatted output not yet taken.
    public private(set) var bytes: [UInt8] = []

    /// An empty script.
    public init() {}

    /// Appends the command(s) for one record.
    public mutating func append(_ r: TraceRecord) {
        let verb: String
        switch r.op {
        case .flush:
            bytes.append(contentsOf: Array("flush\n".utf8))
            return
        case .read: verb = "read -q"
        case .write: verb = r.flags.contains(.fua) ? "write -q -f" : "write -q"
        case .writeZeroes: verb = r.flags.contains(.unmap) ? "write -q -z -u" : "write -q -z"
        case .discard: verb = "discard -q"
        }
        var off = r.offset
        var left = r.length
        repeat {
            let n = Swift.min(left, Self.maxRequest)
            bytes.append(contentsOf: Array("\(verb) \(off) \(n)\n".utf8))
            off &+= n
            left -= n
        } while left > 0
    }

    /// Returns and clears the buffered output.
    public mutating func take() -> [UInt8] {
        defer { bytes.removeAll(keepingCapacity: true) }
        return bytes
    }
}

import Foundation
import Qcow2Sim

/// One point of a miss-ratio curve: a cache size and what the run at that size measured.
public struct CurvePoint: Sendable {
    /// The swept size in bytes (the x value).
    public var size: UInt64
    /// The cache's counters at that size.
    public var stats: CacheStats

    /// Creates a point.
    public init(size: UInt64, stats: CacheStats) {
        self.size = size
        self.stats = stats
    }
}

/// One curve: a name (trace, image, policy …) and its points.
public struct CurveSeries: Sendable {
    /// Legend text.
    public var name: String
    /// The points, in any order (drawn by size).
    public var points: [CurvePoint]

    /// Creates a series.
    public init(_ name: String, _ points: [CurvePoint]) {
        self.name = name
        self.points = points.sorted { $0.size < $1.size }
    }
}

/// The miss-ratio figures shared by the `sweep`, `mrc` and `compare` pages (and any page that has
/// curves over cache sizes, such as a recommendation): misses and metadata bytes read against
/// cache size on a log₂ axis with byte ticks, full coverage and QEMU's default L2 cache maximum
/// marked, the misses split into their four classes, and the numbers under each chart.
public enum MissRatioCurve {
    /// QEMU's default maximum L2 cache on Linux (`DEFAULT_L2_CACHE_MAX_SIZE`, qcow2-model.md §2).
    public static let qemuDefault: UInt64 = 32 << 20

    /// L2 cache bytes that cover the whole disk of geometry `g` (§2: `max_l2_bytes`).
    public static func fullCoverage(_ g: Geometry) -> UInt64 {
        let need = (g.virtualSize + g.clusterSize - 1) / g.clusterSize
        let bytes = need * g.l2EntrySize
        return (bytes + g.clusterSize - 1) / g.clusterSize * g.clusterSize
    }

    /// The markers of a size axis: full coverage (when known), QEMU's default, and `extra`
    /// (e.g. a recommended size).
    public static func markers(fullCoverage: UInt64?, extra: [Marker] = []) -> [Marker] {
        var m: [Marker] = []
        if let f = fullCoverage { m.append(Marker(x: Double(f), label: "full coverage \(Format.bytes(Double(f)))")) }
        m.append(Marker(x: Double(qemuDefault), label: "QEMU default 32M"))
        return m + extra
    }

    /// The marker of a recommended size (a page that advises one passes it as `extraMarkers`).
    public static func recommended(_ size: UInt64) -> Marker {
        Marker(x: Double(size), label: "recommended \(Format.bytes(Double(size)))")
    }

    /// A count axis: log₁₀ when every value is positive and they span more than two decades,
    /// linear (from 0) otherwise.
    static func countAxis(_ label: String, _ values: [Double], format: ValueFormat) -> Axis {
        let positive = values.filter { $0 > 0 }
        if positive.count == values.count, let lo = positive.min(), let hi = positive.max(), hi / lo > 100 {
            return Axis(label, scale: .log10, format: format)
        }
        return Axis(label, format: format)
    }

    /// The figures: misses against size, metadata bytes read against size, and the miss classes
    /// of the first series. `sizeLabel` names the x axis (`l2-cache-size (bytes)`).
    public static func figures(
        _ series: [CurveSeries], sizeLabel: String, fullCoverage: UInt64?, extraMarkers: [Marker] = []
    ) -> [HTMLPage.Block] {
        guard !series.isEmpty else { return [] }
        let x = Axis(sizeLabel, scale: .log2, format: .bytes)
        let markers = markers(fullCoverage: fullCoverage, extra: extraMarkers)
        let sizes = Array(Set(series.flatMap { $0.points.map(\.size) })).sorted()
        var blocks: [HTMLPage.Block] = []

        let missValues = series.flatMap { $0.points.map { Double($0.stats.misses) } }
        let misses = LineChart(
            title: "Misses against cache size", x: x, y: countAxis("misses", missValues, format: .count),
            series: series.map { s in
                Series(s.name, s.points.map { (x: Double($0.size), y: Double($0.stats.misses)) }, showPoints: true)
            },
            markers: markers)
        blocks.append(
            .figure(
                svg: misses.svg(),
                caption:
                    "Cache misses at each size (one dot per run). Where the curve flattens, more cache no longer helps; at full coverage every L2 table of the disk fits, and only first loads miss.",
                table: table("Misses", series, sizes) { "\($0.misses)" }))

        let byteValues = series.flatMap { $0.points.map { Double($0.stats.bytesRead) } }
        let bytes = LineChart(
            title: "Metadata bytes read against cache size", x: x,
            y: countAxis("bytes read from the image", byteValues, format: .bytes),
            series: series.map { s in
                Series(s.name, s.points.map { (x: Double($0.size), y: Double($0.stats.bytesRead)) }, showPoints: true)
            },
            markers: markers)
        blocks.append(
            .figure(
                svg: bytes.svg(),
                caption:
                    "Bytes of metadata tables the misses read from the image file: each miss that is not a brand-new table reads one cache entry (a slice or a whole table).",
                table: table("Metadata bytes read", series, sizes) { "\($0.bytesRead)" }))

        let first = series[0]
        let classNames = ["cold (first load)", "evicted (capacity)", "dropped by the clean timer", "discarded"]
        let classPoints: [[(x: Double, y: Double)]] = (0..<4).map { c in
            first.points.map { p in (x: Double(p.size), y: Double(classesOf(p.stats)[c])) }
        }
        let classes = LineChart(
            title: "Miss classes: \(first.name)", x: x, y: Axis("misses", format: .count),
            series: (0..<4).map { Series(classNames[$0], classPoints[$0], showPoints: true) }, markers: markers)
        let rows = first.points.map { p -> [String] in
            let c = classesOf(p.stats)
            return [Format.bytes(Double(p.size)), "\(p.stats.misses)"] + c.map { "\($0)" }
        }
        blocks.append(
            .figure(
                svg: classes.svg(),
                caption:
                    "Why each miss happened: the table's first load (cold), an eviction for capacity, an entry the cache-clean timer dropped, or a table discarded when its cluster was freed. The four add up to the misses.",
                table: Table(
                    caption: "Miss classes of \(first.name)", header: ["size", "misses"] + classNames, rows: rows)))
        return blocks
    }

    static func classesOf(_ s: CacheStats) -> [Int] { [s.missesCold, s.missesEvicted, s.missesCleaned, s.missesDiscarded] }

    /// One row per size, one column per series.
    static func table(_ caption: String, _ series: [CurveSeries], _ sizes: [UInt64], _ cell: (CacheStats) -> String) -> Table {
        let rows = sizes.map { size -> [String] in
            [Format.bytes(Double(size)) + " (\(size))"]
                + series.map { s in s.points.first { $0.size == size }.map { cell($0.stats) } ?? "–" }
        }
        return Table(caption: caption, header: ["size"] + series.map(\.name), rows: rows)
    }
}

import Foundation
import Qcow2Sim
import TraceKit

/// The HTML report of `qcow2sim simulate --format html`: the run's configuration, a summary
/// table, resident cache memory over trace time (clean-timer releases marked), hit rate over
/// trace time, and per-image bars of lookups and misses, each chart with its numbers under it.
public enum SimulationPage {
    /// The page for one run. `timeline` must have observed the run (its samples are the charts'
    /// data); `trace` names the input and `command` is the command line shown at the top.
    public static func html(
        report r: SimulationReport, config: SimulationConfig, timeline: MemoryTimeline, trace: String, command: String
    ) -> String {
        let timed = r.duration > 0
        let timeAxis = Axis(timed ? "trace time (s)" : "request number (the trace has no timestamps)", format: .plain)
        let caches = cacheKeys(r)
        var page = HTMLPage(title: "qcow2sim simulate: \((trace as NSString).lastPathComponent)")
        page.blocks.append(.code(command))
        page.blocks.append(.facts(facts(r, config: config, trace: trace)))

        page.blocks.append(.heading("Summary"))
        page.blocks.append(.table(summary(r)))

        page.blocks.append(.heading("Resident cache memory over trace time"))
        page.blocks.append(memoryFigure(r, timeline: timeline, caches: caches, axis: timeAxis))

        page.blocks.append(.heading("Hit rate over trace time"))
        page.blocks.append(hitRateFigure(r, timeline: timeline, caches: caches, axis: timeAxis))

        page.blocks.append(.heading("Per image"))
        page.blocks.append(contentsOf: imageFigures(r))
        return page.render()
    }

    /// One cache of one image.
    struct CacheKey: Hashable {
        var image: Int
        var isL2: Bool
    }

    static func name(_ k: CacheKey, _ r: SimulationReport) -> String {
        let cache = k.isL2 ? "L2" : "refcount"
        return r.images.count == 1 ? cache : "\(imageLabel(k.image, r)) \(cache)"
    }

    static func imageLabel(_ i: Int, _ r: SimulationReport) -> String {
        let role = i == r.images.count - 1 ? "top" : (i == 0 ? "base" : "backing")
        return "image \(i) (\(role))"
    }

    /// The caches worth drawing: every L2 cache, and refcount caches that were used.
    static func cacheKeys(_ r: SimulationReport) -> [CacheKey] {
        var keys: [CacheKey] = []
        for im in r.images.reversed() {
            keys.append(CacheKey(image: im.index, isL2: true))
            if im.refcount.lookups > 0 || im.refcount.memoryPeakBytes > 0 { keys.append(CacheKey(image: im.index, isL2: false)) }
        }
        return keys
    }

    static func stats(_ k: CacheKey, _ r: SimulationReport) -> CacheStats? {
        guard let im = r.images.first(where: { $0.index == k.image }) else { return nil }
        return k.isL2 ? im.l2 : im.refcount
    }

    static func facts(_ r: SimulationReport, config: SimulationConfig, trace: String) -> [(String, String)] {
        var f: [(String, String)] = [("trace", trace)]
        let ops = r.requestsByOp.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \(opName($0.key))" }
        f.append(("requests", "\(r.requests)" + (ops.isEmpty ? "" : " (\(ops.joined(separator: ", ")))")))
        f.append(("trace time", r.duration > 0 ? "\(Format.trimmed(r.duration, decimals: 3)) s" : "no timestamps"))
        f.append(("policy", "\(config.policy), cache mode \(config.cacheMode.rawValue)"))
        for im in r.images.reversed() {
            let g = im.geometry, z = im.sizing
            let l2 = UInt64(z.l2Entries) * z.l2EntrySize
            let rc = UInt64(z.refcountEntries) * z.refcountEntrySize
            f.append(
                (
                    imageLabel(im.index, r),
                    "\(Format.bytes(Double(g.virtualSize))) disk, \(Format.bytes(Double(g.clusterSize))) clusters"
                        + (g.extendedL2 ? ", extended L2" : "")
                        + "; L2 cache \(z.l2Entries) × \(Format.bytes(Double(z.l2EntrySize))) = \(Format.bytes(Double(l2)))"
                        + "; refcount cache \(z.refcountEntries) × \(Format.bytes(Double(z.refcountEntrySize))) = \(Format.bytes(Double(rc)))"
                        + "; cache-clean-interval \(z.cleanInterval == 0 ? "off" : "\(z.cleanInterval) s")"
                ))
        }
        return f
    }

    static func opName(_ op: TraceRecord.Op) -> String {
        switch op {
        case .read: "reads"
        case .write: "writes"
        case .discard: "discards"
        case .writeZeroes: "write-zeroes"
        case .flush: "flushes"
        }
    }

    static func summary(_ r: SimulationReport) -> Table {
        var rows: [[String]] = []
        for im in r.images.reversed() {
            for (cache, st) in [("L2", im.l2), ("refcount", im.refcount)] {
                rows.append(
                    [
                        r.images.count == 1 ? cache : "\(imageLabel(im.index, r)) \(cache)",
                        "\(st.lookups)", "\(st.hits)", "\(st.misses)", Format.trimmed(st.hitRate * 100, decimals: 2) + "%",
                        "\(st.evictions)", "\(st.cleaned)", "\(st.writebacks)", "\(st.bytesRead)", "\(st.bytesWritten)",
                        "\(st.memoryPeakBytes)",
                        Format.trimmed(SimulationReport.meanMemory(st, span: r.memorySpan), decimals: 0),
                    ])
            }
        }
        return Table(
            caption: "Cache counters (bytes in bytes)",
            header: [
                "cache", "lookups", "hits", "misses", "hit rate", "evictions", "dropped by clean timer", "write-backs",
                "bytes read", "bytes written", "memory peak", "memory mean",
            ], rows: rows)
    }

    static func endTime(_ r: SimulationReport, _ timeline: MemoryTimeline) -> Double {
        let last = max(timeline.samples.last?.time ?? 0, timeline.counterSamples.map(\.time).max() ?? 0)
        return max(last, r.duration > 0 ? r.memorySpan : Double(max(0, r.requests - 1)))
    }

    static func memoryFigure(_ r: SimulationReport, timeline: MemoryTimeline, caches: [CacheKey], axis: Axis) -> HTMLPage.Block {
        let end = endTime(r, timeline)
        var series: [Series] = []
        var rows: [[String]] = []
        for k in caches {
            let own = timeline.samples.filter { $0.image == k.image && $0.isL2 == k.isL2 }
            var pts = own.map { (x: $0.time, y: Double($0.residentBytes)) }
            if let lastY = pts.last?.y, let lastX = pts.last?.x, lastX < end { pts.append((x: end, y: lastY)) }
            guard let st = stats(k, r) else { continue }
            series.append(Series(name(k, r), pts))
            let rel = timeline.releases.filter { $0.image == k.image && $0.isL2 == k.isL2 }
            rows.append([
                name(k, r), "\(own.count)", "\(st.memoryPeakBytes)",
                Format.trimmed(SimulationReport.meanMemory(st, span: r.memorySpan), decimals: 0), "\(st.memoryBytes)",
                "\(rel.count)", "\(rel.reduce(0) { $0 + $1.entries })",
            ])
        }
        let ticks = Array(Set(timeline.releases.map(\.time))).sorted()
        let markers = ticks.map { t -> Marker in
            let n = timeline.releases.filter { $0.time == t }.reduce(0) { $0 + $1.entries }
            return Marker(x: t, label: ticks.count <= 8 ? "clean: \(n) dropped" : "")
        }
        let chart = LineChart(
            title: "Resident cache memory", x: axis, y: Axis("resident bytes", format: .bytes), series: series, markers: markers,
            steps: true)
        let caption =
            ticks.isEmpty
            ? "Bytes of cache memory in use after each request (steps). The cache-clean timer released nothing in this run."
            : "Bytes of cache memory in use after each request (steps). Dashed vertical lines: the \(ticks.count) cache-clean timer ticks that dropped unused entries and returned their memory."
        var table = Table(
            caption: "Memory per cache (bytes)",
            header: ["cache", "samples", "peak", "time-weighted mean", "at the end", "clean ticks that dropped", "entries dropped"],
            rows: rows)
        if !timeline.releases.isEmpty {
            let shown = timeline.releases.prefix(20)
            table.rows.append(contentsOf: shown.map { rel in
                ["clean tick at \(Format.trimmed(rel.time, decimals: 3)) s: \(name(CacheKey(image: rel.image, isL2: rel.isL2), r))", "", "", "", "", "", "\(rel.entries)"]
            })
            if timeline.releases.count > shown.count {
                table.rows.append(["… \(timeline.releases.count - shown.count) more clean ticks", "", "", "", "", "", ""])
            }
        }
        return .figure(svg: chart.svg(), caption: caption, table: table)
    }

    /// Interval hit rates from the cumulative counter samples of one cache.
    static func intervals(_ c: [MemoryTimeline.Counters]) -> [(from: Double, to: Double, lookups: Int, hits: Int)] {
        var out: [(from: Double, to: Double, lookups: Int, hits: Int)] = []
        var prevLookups = 0, prevHits = 0
        for s in c {
            out.append((from: s.since, to: s.time, lookups: s.lookups - prevLookups, hits: s.hits - prevHits))
            prevLookups = s.lookups
            prevHits = s.hits
        }
        return out
    }

    static func hitRateFigure(_ r: SimulationReport, timeline: MemoryTimeline, caches: [CacheKey], axis: Axis) -> HTMLPage.Block {
        let all = timeline.counterSamples
        var series: [Series] = []
        var perCache: [(String, [(from: Double, to: Double, lookups: Int, hits: Int)])] = []
        for k in caches {
            let iv = intervals(all.filter { $0.image == k.image && $0.isL2 == k.isL2 }).filter { $0.lookups > 0 }
            guard !iv.isEmpty else { continue }
            var pts: [(x: Double, y: Double)] = []
            for (n, i) in iv.enumerated() {
                let rate = Double(i.hits) / Double(i.lookups)
                var from = i.from
                if n > 0 {
                    // Idle time between two intervals (longer than the intervals themselves) is a
                    // gap in the line, not a rate; the short step between requests is not.
                    let prev = iv[n - 1]
                    let gap = i.from - prev.to
                    if gap > 2 * max(prev.to - prev.from, i.to - i.from, 1e-9) && gap > 1 {
                        pts.append((x: prev.to, y: .nan))
                    } else {
                        from = prev.to
                    }
                }
                pts.append((x: from, y: rate))
                pts.append((x: i.to, y: rate))
            }
            series.append(Series(name(k, r), pts))
            perCache.append((name(k, r), iv))
        }
        let chart = LineChart(
            title: "Hit rate", x: axis, y: Axis("hits / lookups", format: .percent, minimum: 0, maximum: 1), series: series)
        // The table: ten equal spans of trace time, each cache's lookups and hit rate in it (an
        // interval counts in the span its end falls in).
        let end = endTime(r, timeline)
        let spans = 10
        var rows: [[String]] = []
        for b in 0..<spans {
            let lo = end * Double(b) / Double(spans), hi = end * Double(b + 1) / Double(spans)
            let decimals = r.duration > 0 ? 2 : 0  // request numbers are whole
            var row = ["\(Format.trimmed(lo, decimals: decimals))–\(Format.trimmed(hi, decimals: decimals))"]
            for (_, iv) in perCache {
                let inSpan = iv.filter { $0.to > lo && ($0.to <= hi || (b == spans - 1 && $0.to >= hi)) || (b == 0 && $0.to == 0) }
                let l = inSpan.reduce(0) { $0 + $1.lookups }, h = inSpan.reduce(0) { $0 + $1.hits }
                row.append(l == 0 ? "–" : "\(Format.trimmed(Double(h) / Double(l) * 100, decimals: 2))% of \(l)")
            }
            rows.append(row)
        }
        let table = Table(
            caption: "Hit rate in ten equal spans of the trace (hit rate of the span's lookups, and their number)",
            header: [r.duration > 0 ? "trace time (s)" : "requests"] + perCache.map(\.0), rows: rows)
        return .figure(
            svg: chart.svg(),
            caption:
                "Hits per lookup in successive stretches of the trace (each stretch holds about the same number of lookups; at most \(2 * timeline.counterLimit) per cache). Drops after idle time are entries the clean timer dropped; drops elsewhere are the workload moving to tables not in the cache.",
            table: table)
    }

    static func imageFigures(_ r: SimulationReport) -> [HTMLPage.Block] {
        let images = Array(r.images.reversed())
        let categories = images.map { r.images.count == 1 ? "L2" : imageLabel($0.index, r) }
        let lookups = BarChart(
            title: "L2 lookups, hits and misses per image", categories: categories,
            series: [
                ("lookups", images.map { Double($0.l2.lookups) }), ("hits", images.map { Double($0.l2.hits) }),
                ("misses", images.map { Double($0.l2.misses) }),
            ], y: Axis("count", format: .count))
        let misses = BarChart(
            title: "What the misses filled", categories: images.map { r.images.count == 1 ? "image 0" : imageLabel($0.index, r) },
            series: [
                ("L2: evicted an entry", images.map { Double($0.l2.evictions) }),
                ("L2: filled an empty slot", images.map { Double($0.l2.misses - $0.l2.evictions) }),
                ("L2: entries dropped by clean timer", images.map { Double($0.l2.cleaned) }),
                ("refcount misses", images.map { Double($0.refcount.misses) }),
                ("refcount: evicted", images.map { Double($0.refcount.evictions) }),
            ], y: Axis("count", format: .count))
        let rows1 = images.map { im in
            [imageLabel(im.index, r), "\(im.l2.lookups)", "\(im.l2.hits)", "\(im.l2.misses)", "\(im.refcount.lookups)", "\(im.refcount.hits)", "\(im.refcount.misses)"]
        }
        let rows2 = images.map { im in
            [
                imageLabel(im.index, r), "\(im.l2.misses)", "\(im.l2.evictions)", "\(im.l2.misses - im.l2.evictions)", "\(im.l2.emptyGets)",
                "\(im.l2.cleaned)", "\(im.refcount.misses)", "\(im.refcount.evictions)", "\(im.image.clustersAllocated)",
                "\(im.image.l2TablesAllocated)", "\(im.image.cowBytesRead)", "\(im.image.cowBytesWritten)",
            ]
        }
        return [
            .figure(
                svg: lookups.svg(),
                caption: "Each image of the chain has its own L2 cache; a read that falls through to a backing file looks up that image's tables too.",
                table: Table(
                    caption: "Lookups per image",
                    header: ["image", "L2 lookups", "L2 hits", "L2 misses", "refcount lookups", "refcount hits", "refcount misses"],
                    rows: rows1)),
            .figure(
                svg: misses.svg(),
                caption:
                    "A miss either evicts a resident entry or fills an empty slot: at the start, after the clean timer dropped entries, or for a brand-new table (read nothing). Misses into empty slots beyond the tables' first loads are what the clean timer cost.",
                table: Table(
                    caption: "Misses per image",
                    header: [
                        "image", "L2 misses", "L2 evictions", "L2 into empty slots", "L2 new tables (nothing read)",
                        "L2 entries dropped by clean timer", "refcount misses", "refcount evictions", "clusters allocated",
                        "L2 tables allocated", "COW bytes read", "COW bytes written",
                    ], rows: rows2)),
        ]
    }
}

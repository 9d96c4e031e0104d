import Foundation
import Qcow2Sim

/// The HTML reports of `qcow2sim sweep --format html` and `qcow2sim mrc --format html`: the
/// miss-ratio curve over the swept size (misses and metadata bytes, full coverage and QEMU's
/// default marked), the miss classes, per-image bars for a chain, and every row in a table.
public enum SweepPage {
    /// Whether sweep key `key` takes sizes in bytes (a curve's x axis).
    static func isSize(_ key: String) -> Bool { key.hasSuffix("-size") || key == "cluster_size" }

    /// The page for `table`; `fullCoverage` is the top image's full-coverage L2 size (marked when
    /// the swept key is `l2-cache-size`), `command` the command line shown at the top.
    public static func html(table t: SweepTable, fullCoverage: UInt64?, command: String) -> String {
        let names = t.traces.map { ($0 as NSString).lastPathComponent }
        var page = HTMLPage(title: "qcow2sim \(t.command): \(names.joined(separator: ", "))")
        page.blocks.append(.code(command))
        page.blocks.append(.facts(facts(t)))
        let axes = t.grid.axes
        let images = Set(t.rows.map(\.image)).sorted()
        let chain = images.count > 1
        let policies = Set(t.rows.map(\.policy))
        let sizeAxis = axes.firstIndex { isSize($0.key.description) && $0.values.allSatisfy { $0.number != nil } }
        let l2 = t.rows.filter { $0.cache == "l2" }

        if let a = sizeAxis {
            let key = axes[a].key.description
            page.blocks.append(.heading("Miss-ratio curve over \(key)"))
            // The curve is the swept image's (the top, or the backing image `backing.` names);
            // the per-image bars show the others. One curve per trace, other axes' values and
            // policy.
            var depth = 0
            var rest = Substring(key)
            while rest.hasPrefix("backing.") {
                depth += 1
                rest = rest.dropFirst("backing.".count)
            }
            let swept = key == "cluster_size" ? nil : images.last.map { $0 - depth }
            var order: [String] = []
            var groups: [String: [CurvePoint]] = [:]
            for r in l2 where swept == nil || r.image == swept {
                var parts: [String] = []
                if t.traces.count > 1 { parts.append((r.trace as NSString).lastPathComponent) }
                for (i, ax) in axes.enumerated() where i != a && ax.key.description != "policy" {
                    parts.append("\(ax.key)=\(r.values[i].text)")
                }
                if policies.count > 1 { parts.append(r.policy) }
                if chain { parts.append(label(image: r.image, of: images)) }
                let name = parts.isEmpty ? "L2 cache" : parts.joined(separator: ", ")
                if groups[name] == nil { order.append(name) }
                groups[name, default: []].append(CurvePoint(size: r.values[a].number ?? 0, stats: r.stats))
            }
            let limit = 10
            let shown = order.prefix(limit).map { CurveSeries($0, groups[$0] ?? []) }
            if order.count > limit {
                page.blocks.append(
                    .paragraph("The charts draw the first \(limit) of \(order.count) curves; the table at the end has every row.")
                )
            }
            let l2Key = key.hasSuffix("l2-cache-size") && !key.hasPrefix("backing.")
            page.blocks.append(
                contentsOf: MissRatioCurve.figures(
                    shown, sizeLabel: "\(key) (bytes, log scale)", fullCoverage: l2Key ? fullCoverage : nil))
        } else {
            page.blocks.append(.heading("Misses per configuration"))
            page.blocks.append(pointBars(t, l2, images: images))
        }
        if chain {
            page.blocks.append(.heading("Per image"))
            page.blocks.append(imageBars(t, l2, images: images))
        }
        page.blocks.append(.heading("Every row"))
        page.blocks.append(.table(allRows(t)))
        return page.render()
    }

    static func label(image: Int, of images: [Int]) -> String {
        let top = images.last ?? 0
        return "image \(image) (\(image == top ? "top" : image == 0 ? "base" : "backing"))"
    }

    static func pointLabel(_ t: SweepTable, _ values: [SweepValue]) -> String {
        zip(t.grid.axes, values).map { ax, v in
            isSize(ax.key.description) ? "\(ax.key)=\(Format.bytes(Double(v.number ?? 0)))" : "\(ax.key)=\(v.text)"
        }.joined(separator: ", ")
    }

    static func facts(_ t: SweepTable) -> [(String, String)] {
        let b = t.grid.base
        var f: [(String, String)] = [("traces", t.traces.joined(separator: ", "))]
        for ax in t.grid.axes {
            f.append(
                (
                    "varied: \(ax.key)",
                    ax.values.map { isSize(ax.key.description) ? Format.bytes(Double($0.number ?? 0)) : $0.text }.joined(
                        separator: ", ")
                ))
        }
        f.append(("configurations", "\(t.grid.points.count) per trace"))
        if let image = b.imageFile {
            f.append(("image", image))
        } else {
            f.append(
                (
                    "disk",
                    "\(Format.bytes(Double(b.virtualSize))), chain of \(b.chainLength), -o \(b.createOptions.rendered.isEmpty ? "(defaults)" : b.createOptions.rendered)"
                ))
        }
        f.append(("--drive", b.driveOptions.rendered.isEmpty ? "(defaults)" : b.driveOptions.rendered))
        f.append(("cache mode", b.cacheMode.rawValue))
        return f
    }

    /// Without a size axis: L2 misses per configuration (the first trace).
    static func pointBars(_ t: SweepTable, _ l2: [SweepRow], images: [Int]) -> HTMLPage.Block {
        let trace = t.traces.first ?? ""
        let rows = l2.filter { $0.trace == trace }
        var cats: [String] = []
        for r in rows where !cats.contains(pointLabel(t, r.values) + " " + r.policy) {
            cats.append(pointLabel(t, r.values) + " " + r.policy)
        }
        cats = Array(cats.prefix(24))
        let series = images.map { im -> (name: String, values: [Double]) in
            (
                images.count > 1 ? label(image: im, of: images) : "L2 misses",
                cats.map { c in
                    Double(rows.first { pointLabel(t, $0.values) + " " + $0.policy == c && $0.image == im }?.stats.misses ?? 0)
                }
            )
        }
        let chart = BarChart(
            title: "L2 misses per configuration", categories: cats, series: series, y: Axis("misses", format: .count))
        let table = Table(
            caption: "L2 misses per configuration (\((trace as NSString).lastPathComponent))",
            header: ["configuration"] + series.map(\.name),
            rows: cats.enumerated().map { i, c in [c] + series.map { "\(Int($0.values[i]))" } })
        return .figure(svg: chart.svg(), caption: "L2 cache misses of each configuration of the grid.", table: table)
    }

    /// A chain: each image's L2 misses at each configuration (the first trace, at most 12).
    static func imageBars(_ t: SweepTable, _ l2: [SweepRow], images: [Int]) -> HTMLPage.Block {
        let trace = t.traces.first ?? ""
        let rows = l2.filter { $0.trace == trace }
        var cats: [String] = []
        for r in rows {
            let c = pointLabel(t, r.values) + (Set(rows.map(\.policy)).count > 1 ? " " + r.policy : "")
            if !cats.contains(c) { cats.append(c) }
        }
        cats = Array(cats.prefix(12))
        func cat(_ r: SweepRow) -> String { pointLabel(t, r.values) + (Set(rows.map(\.policy)).count > 1 ? " " + r.policy : "") }
        let series = images.reversed().map { im -> (name: String, values: [Double]) in
            (
                label(image: im, of: images),
                cats.map { c in Double(rows.first { cat($0) == c && $0.image == im }?.stats.misses ?? 0) }
            )
        }
        let chart = BarChart(
            title: "L2 misses per image", categories: cats.map { shortLabel($0) }, series: series,
            y: Axis("misses", format: .count))
        let table = Table(
            caption: "L2 misses per image", header: ["configuration"] + series.map(\.name),
            rows: cats.enumerated().map { i, c in [c] + series.map { "\(Int($0.values[i]))" } })
        return .figure(
            svg: chart.svg(),
            caption:
                "Each image of the chain has its own L2 cache (QEMU sizes each from its own options); reads that fall through to a backing file look up its tables too.",
            table: table)
    }

    /// The varied values alone (bar labels are short).
    static func shortLabel(_ s: String) -> String {
        s.split(separator: ",").map { $0.split(separator: "=").last.map(String.init) ?? String($0) }.joined(separator: ",")
            .trimmingCharacters(in: .whitespaces)
    }

    static func allRows(_ t: SweepTable) -> Table {
        let axes = t.grid.axes.filter { $0.key.description != "policy" }
        let idx = t.grid.axes.indices.filter { t.grid.axes[$0].key.description != "policy" }
        let rows = t.rows.map { r -> [String] in
            let s = r.stats
            return [(r.trace as NSString).lastPathComponent] + idx.map { r.values[$0].text } + [
                r.policy, "\(r.image)", r.cache, "\(r.entries) × \(Format.bytes(Double(r.entrySize)))", "\(s.lookups)",
                "\(s.misses)",
                Format.trimmed(s.hitRate * 100, decimals: 2) + "%", "\(s.evictions)", "\(s.writebacks)", "\(s.bytesRead)",
                "\(s.memoryPeakBytes)", "\(s.missesCold)", "\(s.missesEvicted)", "\(s.missesCleaned)", "\(s.missesDiscarded)",
            ]
        }
        return Table(
            caption: "Every (trace, configuration, image, cache) row, as --format csv prints them (bytes in bytes)",
            header: ["trace"] + axes.map { $0.key.description } + [
                "policy", "image", "cache", "entries", "lookups", "misses", "hit rate", "evictions", "write-backs", "bytes read",
                "memory peak", "cold", "evicted", "cleaned", "discarded",
            ], rows: rows, numeric: Set((axes.count + 4)..<(axes.count + 16)))
    }
}

/// One row of `qcow2sim compare`: a candidate (or the baseline) at one point, one image (or the
/// chain's sum) and cache.
public struct CompareRow: Sendable {
    /// The trace as given.
    public var trace: String
    /// The SPEC as given.
    public var candidate: String
    /// The --vary values, one per axis.
    public var values: [String]
    /// `0`, `1`, … or `chain`.
    public var image: String
    /// `l2` or `refcount`.
    public var cache: String
    /// The counters.
    public var stats: CacheStats
    /// Change in misses against the baseline at the same point, in percent.
    public var deltaPct: Double?
    /// Belady's MIN at the candidate's configuration.
    public var optMisses: Int

    /// Creates a row.
    public init(
        trace: String, candidate: String, values: [String], image: String, cache: String, stats: CacheStats, deltaPct: Double?,
        optMisses: Int
    ) {
        self.trace = trace
        self.candidate = candidate
        self.values = values
        self.image = image
        self.cache = cache
        self.stats = stats
        self.deltaPct = deltaPct
        self.optMisses = optMisses
    }
}

/// The HTML report of `qcow2sim compare --format html`: the candidates' misses side by side with
/// the optimal bound, their miss classes, per-image bars for a chain, the miss-ratio curve when
/// a size is varied, and every row in a table.
public enum ComparePage {
    /// The page. `specs` starts with the baseline; `axes` names the --vary keys (with their
    /// values in each row); `fullCoverage` is the top image's full-coverage L2 size.
    public static func html(
        rows: [CompareRow], traces: [String], specs: [String], axes: [String], fullCoverage: UInt64?, command: String
    ) -> String {
        let names = traces.map { ($0 as NSString).lastPathComponent }
        var page = HTMLPage(title: "qcow2sim compare: \(names.joined(separator: ", "))")
        page.blocks.append(.code(command))
        var facts: [(String, String)] = [("traces", traces.joined(separator: ", ")), ("baseline", specs.first ?? "")]
        for (i, s) in specs.dropFirst().enumerated() { facts.append(("candidate \(i + 1)", s)) }
        for a in axes { facts.append(("varied", a)) }
        page.blocks.append(.facts(facts))
        let chain = rows.contains { $0.image == "chain" }
        let whole = chain ? "chain" : (rows.map(\.image).filter { $0 != "chain" }.max { (Int($0) ?? 0) < (Int($1) ?? 0) } ?? "0")
        let firstValues = rows.first?.values ?? []
        let wholeL2 = rows.filter { $0.image == whole && $0.cache == "l2" }
        let scope = chain ? "the chain's L2 caches together" : "the L2 cache"

        for trace in traces.prefix(4) {
            let rs = wholeL2.filter { $0.trace == trace && $0.values == firstValues }
            let heading = "Candidates side by side" + (traces.count > 1 ? ": \((trace as NSString).lastPathComponent)" : "")
            page.blocks.append(.heading(heading))
            let point = zip(axes, firstValues).map { "\($0)=\($1)" }.joined(separator: ", ")
            let bars = BarChart(
                title: "L2 misses" + (point.isEmpty ? "" : " at \(point)"), categories: specs,
                series: [
                    ("misses", specs.map { s in Double(rs.first { $0.candidate == s }?.stats.misses ?? 0) }),
                    (
                        "optimal (Belady's MIN at that configuration)",
                        specs.map { s in Double(rs.first { $0.candidate == s }?.optMisses ?? 0) }
                    ),
                ], y: Axis("misses", format: .count))
            let table = Table(
                caption: "Candidates (\(scope))",
                header: [
                    "candidate", "misses", "Δ misses vs baseline", "optimal", "write-backs", "bytes read", "memory peak",
                    "hit rate",
                ],
                rows: specs.map { s in
                    guard let r = rs.first(where: { $0.candidate == s }) else { return [s] + Array(repeating: "–", count: 7) }
                    return [
                        s + (s == specs.first ? " (baseline)" : ""), "\(r.stats.misses)",
                        r.deltaPct.map { String(format: "%+.2f%%", $0) } ?? "–", "\(r.optMisses)", "\(r.stats.writebacks)",
                        "\(r.stats.bytesRead)", "\(r.stats.memoryPeakBytes)",
                        Format.trimmed(r.stats.hitRate * 100, decimals: 2) + "%",
                    ]
                })
            page.blocks.append(
                .figure(
                    svg: bars.svg(),
                    caption:
                        "Misses of \(scope) for the baseline and each candidate, next to the fewest misses any policy could have at the same configuration (Belady's MIN over the same operation stream).",
                    table: table))

            let classNames = ["cold (first load)", "evicted (capacity)", "dropped by the clean timer", "discarded"]
            let classes = BarChart(
                title: "Miss classes", categories: specs,
                series: (0..<4).map { c in
                    (
                        classNames[c],
                        specs.map { s in Double(rs.first { $0.candidate == s }.map { MissRatioCurve.classesOf($0.stats)[c] } ?? 0)
                        }
                    )
                }, y: Axis("misses", format: .count))
            page.blocks.append(
                .figure(
                    svg: classes.svg(),
                    caption: "Why the misses happened, per candidate: the four classes add up to the misses.",
                    table: Table(
                        caption: "Miss classes (\(scope))", header: ["candidate", "misses"] + classNames,
                        rows: specs.map { s in
                            let st = rs.first { $0.candidate == s }?.stats ?? CacheStats()
                            return [s, "\(st.misses)"] + MissRatioCurve.classesOf(st).map { "\($0)" }
                        })))

            if chain {
                let images = Set(rows.map(\.image)).filter { $0 != "chain" }.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
                let per = rows.filter { $0.trace == trace && $0.values == firstValues && $0.cache == "l2" }
                let imageBars = BarChart(
                    title: "L2 misses per image",
                    categories: images.map { "image \($0)" + ($0 == images.first ? " (top)" : $0 == "0" ? " (base)" : "") },
                    series: specs.map { s in
                        (s, images.map { im in Double(per.first { $0.candidate == s && $0.image == im }?.stats.misses ?? 0) })
                    },
                    y: Axis("misses", format: .count))
                page.blocks.append(
                    .figure(
                        svg: imageBars.svg(), caption: "Each image's own L2 cache, per candidate (image 0 is the base).",
                        table: Table(
                            caption: "L2 misses per image", header: ["image"] + specs,
                            rows: images.map { im in
                                ["image \(im)" + (im == images.first ? " (top)" : im == "0" ? " (base)" : "")]
                                    + specs.map { s in "\(per.first { $0.candidate == s && $0.image == im }?.stats.misses ?? 0)" }
                            })))
            }

            if let a = axes.firstIndex(where: SweepPage.isSize) {
                let curveTrace = trace
                let curves = specs.map { s in
                    CurveSeries(
                        s,
                        wholeL2.filter { $0.trace == curveTrace && $0.candidate == s }.compactMap { r in
                            guard case .success(let size) = QemuSize.parse(Substring(r.values[a])) else { return nil }
                            return CurvePoint(size: size, stats: r.stats)
                        })
                }.filter { !$0.points.isEmpty }
                if !curves.isEmpty {
                    page.blocks.append(.heading("Miss-ratio curves over \(axes[a])"))
                    page.blocks.append(
                        contentsOf: MissRatioCurve.figures(
                            curves, sizeLabel: "\(axes[a]) (bytes, log scale)",
                            fullCoverage: axes[a] == "l2-cache-size" ? fullCoverage : nil))
                }
            }
        }
        page.blocks.append(.heading("Every row"))
        page.blocks.append(
            .table(
                Table(
                    caption: "Every (trace, candidate, point, image, cache) row, as --format csv prints them (bytes in bytes)",
                    header: ["trace", "candidate"] + axes + [
                        "image", "cache", "misses", "Δ misses", "optimal", "write-backs", "bytes read", "memory peak", "lookups",
                        "hit rate",
                    ],
                    rows: rows.map { r in
                        [(r.trace as NSString).lastPathComponent, r.candidate] + r.values + [
                            r.image, r.cache, "\(r.stats.misses)", r.deltaPct.map { String(format: "%+.2f%%", $0) } ?? "–",
                            "\(r.optMisses)",
                            "\(r.stats.writebacks)", "\(r.stats.bytesRead)", "\(r.stats.memoryPeakBytes)", "\(r.stats.lookups)",
                            Format.trimmed(r.stats.hitRate * 100, decimals: 2) + "%",
                        ]
                    }, numeric: Set((axes.count + 4)..<(axes.count + 12)))))
        return page.render()
    }
}

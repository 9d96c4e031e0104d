import Foundation
import Qcow2Sim

/// The HTML report of `qcow2sim advise --format html`, built from the `AdviceDocument` that
/// `--format json` writes: the settings to paste first (the `-drive` string and the libvirt
/// `<disk>` element), a table of the recommendation per image, then each image's L2 miss curve
/// with the recommended size, full coverage and QEMU's default 32M marked.
public enum AdvicePage {
    /// The page for `doc`; `command` is the command line shown at the top.
    public static func html(_ doc: AdviceDocument, command: String) -> String {
        let names = doc.traces.map { ($0 as NSString).lastPathComponent }
        var page = HTMLPage(title: "qcow2sim advise: \(names.joined(separator: ", "))")
        page.blocks.append(.code(command))
        page.blocks.append(.facts(facts(doc)))

        page.blocks.append(.heading("Settings to paste"))
        page.blocks.append(.paragraph("QEMU -drive options (backing. prefixes name the images below the top):"))
        page.blocks.append(.code(doc.drive))
        page.blocks.append(
            .paragraph(
                "libvirt <disk> element: max_size is the cache-size QEMU splits by its own rule (read_cache_sizes) into the L2 and refcount caches recommended here."
            ))
        page.blocks.append(.code(doc.libvirtXml))
        for note in doc.notes { page.blocks.append(.paragraph(note)) }
        page.blocks.append(.table(summary(doc)))

        // Top image first: it is the one the guest's requests reach first.
        for im in doc.images.reversed() {
            page.blocks.append(.heading("Image \(im.index) (\(im.role)): L2 miss curve"))
            page.blocks.append(
                .paragraph(
                    "Why \(Format.bytes(Double(im.l2CacheSize))): \(im.why)\(im.why.hasSuffix(".") ? "" : ".") Full coverage is \(Format.bytes(Double(im.l2FullCoverageBytes))) (\(im.fullCoverageMisses) misses there)."
                ))
            let series = CurveSeries(
                "image \(im.index) L2", im.curve.map { CurvePoint(size: $0.l2CacheSize, stats: stats($0)) })
            page.blocks.append(
                contentsOf: MissRatioCurve.figures(
                    [series], sizeLabel: "l2-cache-size (bytes, log scale)", fullCoverage: im.l2FullCoverageBytes,
                    extraMarkers: [MissRatioCurve.recommended(im.l2CacheSize)]))
        }
        if let alts = doc.alternatives, !alts.isEmpty {
            page.blocks.append(.heading("Other create options compared"))
            page.blocks.append(
                .table(
                    Table(
                        caption: "The --vary points not chosen (the advice needs the least memory, or with --cost the most IOPS)",
                        header: ["create options", "memory (bytes)", "L2 misses", "predicted IOPS"],
                        rows: alts.map { a in
                            [
                                a.createOptions.isEmpty ? "(defaults)" : a.createOptions, "\(a.memoryBytes)", "\(a.misses)",
                                a.predictedIops.map { Format.trimmed($0, decimals: 0) } ?? "–",
                            ]
                        })))
        }
        return page.render()
    }

    /// A curve point as the counters `MissRatioCurve` draws (lookups, misses, bytes, classes).
    static func stats(_ p: ImageAdvice.CurvePoint) -> CacheStats {
        var s = CacheStats()
        s.lookups = p.lookups
        s.misses = p.misses
        s.hits = p.lookups - p.misses
        s.bytesRead = p.bytesRead
        s.missesCold = p.missesCold
        s.missesEvicted = p.missesEvicted
        s.missesCleaned = p.missesCleaned
        s.missesDiscarded = p.missesDiscarded
        return s
    }

    static func facts(_ d: AdviceDocument) -> [(String, String)] {
        let target: String
        switch d.target {
        case "memory-budget": target = "memory budget \(Format.bytes(d.targetValue)) per image (L2 and refcount caches together)"
        case "hit-rate": target = "L2 hit rate at least \(Format.trimmed(d.targetValue, decimals: 4))"
        default: target = "at most \(Format.trimmed(d.targetValue, decimals: 4)) L2 misses per request"
        }
        var f: [(String, String)] = [
            ("traces", d.traces.joined(separator: ", ")), ("requests", "\(d.requests)"), ("target", target),
            ("create options", d.createOptions.isEmpty ? "(defaults)" : d.createOptions),
            ("images", "\(d.images.count)"),
        ]
        let memory = d.images.reduce(0) { $0 + $1.memoryBytes }, defaults = d.images.reduce(0) { $0 + $1.defaultMemoryBytes }
        f.append(
            ("cache memory", "\(Format.bytes(Double(memory))) over the chain, against \(Format.bytes(Double(defaults))) with QEMU's defaults"))
        f.append(("L2 misses", "\(d.totals.l2.misses) of \(d.totals.l2.lookups) lookups at the recommended settings"))
        if let iops = d.totals.predictedIops {
            var s = "\(Format.trimmed(iops, decimals: 0)) predicted IOPS"
            if let full = d.totals.fullCoverageIops { s += " (\(Format.trimmed(full, decimals: 0)) at full coverage)" }
            f.append(("cost model", s + (d.costSource.map { ", from \($0)" } ?? "")))
        }
        return f
    }

    /// One row per image (top first): the recommended options and what they cost.
    static func summary(_ d: AdviceDocument) -> Table {
        let rows = d.images.reversed().map { im -> [String] in
            let rate = im.l2.lookups > 0 ? Double(im.l2.hits) / Double(im.l2.lookups) * 100 : 100
            return [
                "\(im.index) (\(im.role))", "\(im.l2CacheSize)", "\(im.l2CacheEntrySize)", "\(im.refcountCacheSize)",
                "\(im.cacheCleanInterval)", "\(im.memoryBytes)", "\(im.defaultMemoryBytes)", "\(im.libvirtMaxSizeKiB)",
                "\(im.l2.misses) of \(im.l2.lookups)", "\(im.fullCoverageMisses)",
                Format.trimmed(rate, decimals: 2) + "%",
            ]
        }
        return Table(
            caption: "The recommendation per image (bytes in bytes, the interval in seconds)",
            header: [
                "image", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size", "cache-clean-interval", "memory",
                "memory with QEMU defaults", "libvirt max_size (KiB)", "L2 misses of lookups", "misses at full coverage",
                "L2 hit rate",
            ], rows: rows)
    }
}

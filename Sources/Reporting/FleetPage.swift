import Foundation
import Qcow2Sim

/// The HTML report of `qcow2sim advise --per-volume --format html`, built from the
/// `FleetSummary` that `--format json` writes: the fleet's figures first (the memory
/// distribution, the total against QEMU's defaults, the volumes above the 32 MiB default), a
/// histogram of the memory each volume needs, the total side by side, then every volume's
/// advice in a table.
public enum FleetPage {
    /// The page for `fleet`; `command` is the command line shown at the top.
    public static func html(_ fleet: FleetSummary, command: String) -> String {
        var page = HTMLPage(title: "qcow2sim advise --per-volume: \((fleet.trace as NSString).lastPathComponent)")
        page.blocks.append(.code(command))
        page.blocks.append(.facts(facts(fleet)))

        page.blocks.append(.heading("Memory each volume needs"))
        let (labels, counts) = histogram(fleet.volumes.map(\.memoryBytes))
        let hist = BarChart(
            title: "Volumes by the cache memory their advice needs (L2 + refcount, power-of-two buckets)",
            categories: labels, series: [("volumes", counts.map(Double.init))], y: Axis("volumes", format: .count))
        page.blocks.append(
            .figure(
                svg: hist.svg(), caption: "How many volumes need up to each size (nearest power of two above)",
                table: Table(
                    caption: "Volumes per bucket", header: ["memory up to", "volumes"],
                    rows: zip(labels, counts).map { [$0.0, "\($0.1)"] })))
        let totals = BarChart(
            title: "Fleet total: advised settings against QEMU's defaults", categories: ["fleet"],
            series: [
                ("advised", [Double(fleet.totalMemoryBytes)]), ("QEMU defaults", [Double(fleet.totalDefaultMemoryBytes)]),
            ], y: Axis("bytes", format: .bytes))
        page.blocks.append(
            .figure(
                svg: totals.svg(), caption: "Cache memory summed over every volume",
                table: Table(
                    caption: "Totals (bytes)", header: ["settings", "bytes"],
                    rows: [
                        ["advised", "\(fleet.totalMemoryBytes)"], ["QEMU defaults", "\(fleet.totalDefaultMemoryBytes)"],
                    ])))

        page.blocks.append(.heading("Volumes above the 32 MiB default"))
        page.blocks.append(
            .paragraph(
                fleet.aboveDefault.isEmpty
                    ? "None: every volume reaches the target with an L2 cache within QEMU's default."
                    : "\(fleet.aboveDefault.count) volumes need an L2 cache above 32 MiB to reach the target: \(fleet.aboveDefault.joined(separator: ", "))."
            ))

        page.blocks.append(.heading("Every volume"))
        page.blocks.append(
            .table(
                Table(
                    caption: "The advice per volume (bytes in bytes)",
                    header: [
                        "volume", "virtual size", "requests", "l2-cache-size", "memory", "memory with QEMU defaults", "L2 hit rate",
                        "L2 misses per request", "-drive options",
                    ],
                    rows: fleet.volumes.map { v in
                        [
                            v.volume, "\(v.virtualSize)", "\(v.requests)", "\(v.l2CacheSize)", "\(v.memoryBytes)",
                            "\(v.defaultMemoryBytes)", Format.trimmed(v.l2HitRate, decimals: 4),
                            Format.trimmed(v.l2MissesPerRequest, decimals: 4), v.drive,
                        ]
                    })))
        return page.render()
    }

    static func facts(_ f: FleetSummary) -> [(String, String)] {
        [
            ("trace", f.trace), ("volumes", "\(f.volumes.count)"), ("requests", "\(f.requests)"), ("target", f.targetText),
            (
                "memory per volume",
                "p50 \(Format.bytes(Double(f.memory.p50))), p90 \(Format.bytes(Double(f.memory.p90))), p99 \(Format.bytes(Double(f.memory.p99))), max \(Format.bytes(Double(f.memory.max))) (nearest rank)"
            ),
            (
                "fleet total",
                "\(Format.bytes(Double(f.totalMemoryBytes))) advised against \(Format.bytes(Double(f.totalDefaultMemoryBytes))) with QEMU's defaults"
            ),
            ("above the 32 MiB default", "\(f.aboveDefault.count) volumes"),
        ]
    }

    /// Power-of-two buckets from the smallest to the largest value: labels and counts.
    static func histogram(_ values: [UInt64]) -> ([String], [Int]) {
        guard let lo = values.min(), let hi = values.max() else { return ([], []) }
        func bucket(_ v: UInt64) -> Int { v <= 1 ? 0 : 64 - (v - 1).leadingZeroBitCount }
        let first = bucket(lo), last = bucket(hi)
        var counts = [Int](repeating: 0, count: last - first + 1)
        for v in values { counts[bucket(v) - first] += 1 }
        let labels = (first...last).map { Format.bytes(Double(UInt64(1) << UInt64($0))) }
        return (labels, counts)
    }
}

import Foundation
import Qcow2Sim
import TraceKit

/// `--per-volume` and `--volume-sizes` on `simulate`, `sweep`, `mrc` and `advise` (issue 16,
/// item 2): every volume of a multi-volume trace is its own disk with its own image and caches.
enum PerVolumeCLI {
    /// The option taking a value.
    static let options: Set<String> = ["--volume-sizes"]
    /// The flag.
    static let flags: Set<String> = ["--per-volume"]

    static let help = """
        per volume (a trace of many virtual disks: tencent, alibaba, msr, systor, spc, fio, native
        with a volume column):
          --per-volume          each volume is its own disk, image and caches, run as
                                `--device VOLUME --size SIZE` would run it; output rows gain
                                volume and virtual_size columns after trace; --jobs N runs N
                                volumes at once. SIZE is the volume's highest request end rounded
                                up to the cluster size, or --size for every volume, or
          --volume-sizes FILE   a CSV of volume,size lines (K/M/G/T suffixes; header optional)
        """

    /// `args` with a placeholder `--size` when `--per-volume` comes without one (each volume's
    /// size replaces it), so the run options parse as they always do.
    static func prepared(_ args: [String]) -> [String] {
        guard args.contains("--per-volume") else { return args }
        let hasSize = args.contains { $0 == "--size" || $0.hasPrefix("--size=") }
        return hasSize ? args : args + ["--size=512"]
    }

    /// Whether the run is per volume; refuses what cannot go with it.
    static func enabled(_ a: Arguments, _ original: [String], traces: [String], refuse: [String] = []) throws -> Bool {
        guard a.has("--per-volume") else {
            if a.value("--volume-sizes") != nil { throw UsageError("--volume-sizes needs --per-volume") }
            return false
        }
        if a.value("--device") != nil {
            throw UsageError("--per-volume runs every volume; --device selects one (give one of them)")
        }
        if a.value("--image") != nil { throw UsageError("--per-volume makes one image per volume; it cannot take --image") }
        let sized = original.contains { $0 == "--size" || $0.hasPrefix("--size=") }
        if sized && a.value("--volume-sizes") != nil {
            throw UsageError("--size and --volume-sizes both size the volumes; give one of them")
        }
        if traces.count != 1 { throw UsageError("--per-volume takes one TRACE (its volumes are the units of work)") }
        if traces[0] == "-" { throw UsageError("--per-volume reads TRACE more than once when its volumes interleave; give a file") }
        for option in refuse where a.value(option) != nil || a.has(option) {
            throw UsageError("\(option) cannot be used with --per-volume")
        }
        return true
    }

    /// How each volume's disk is sized.
    static func sizing(_ a: Arguments, _ original: [String], base: SimulationConfig) throws -> VolumeSizing {
        if let path = a.value("--volume-sizes") { return .table(try VolumeSizeTable.load(path)) }
        if original.contains(where: { $0 == "--size" || $0.hasPrefix("--size=") }) { return .uniform(base.virtualSize) }
        return .highestEnd(cluster: base.createOptions.clusterSize)
    }

    /// The mapping options of a per-volume run: without the placeholder's disk bound.
    static func mapping(_ a: Arguments, _ original: [String]) throws -> (TraceFormat?, TraceOptions) {
        var (format, o) = try TraceCommand.mapping(a)
        if !original.contains(where: { $0 == "--size" || $0.hasPrefix("--size=") }) { o.diskSize = nil }
        return (format, o)
    }

    /// The volumes of `trace` with at least one record (after the mapping options), in the order
    /// per-volume results come in (``VolumeTable/sorted(_:)``): the work units `--shard` splits.
    /// One pass over the trace.
    static func volumeNames(_ a: Arguments, _ original: [String], trace: String) throws -> [String] {
        var (format, o) = try mapping(a, original)
        o.tagVolumes = true
        var reader = try TraceFile.open(path: trace, format: format, options: o)
        var seen = Set<UInt32>()
        while let r = try reader.next() { if r.volume != 0 { seen.insert(r.volume) } }
        let names = reader.volumeNames
        return VolumeTable.sorted(seen.compactMap { Int($0) - 1 < names.count ? names[Int($0) - 1] : nil })
    }

    /// Runs `work` on every volume of `trace` with `base` sized for it; results in volume order.
    static func run<Result: Sendable>(
        _ a: Arguments, _ original: [String], trace: String, base: SimulationConfig, jobs: Int,
        work: @escaping @Sendable (VolumeWork, SimulationConfig) throws -> Result
    ) throws -> [(name: String, result: Result)] {
        let sizing = try sizing(a, original, base: base)
        let (format, mapping) = try mapping(a, original)
        return try PerVolume.run(path: trace, format: format, options: mapping, sizing: sizing, jobs: jobs) { unit in
            var config = base
            config.virtualSize = unit.size
            // Errors that are not located at a record name the volume they are about.
            do {
                return try work(unit, config)
            } catch let e as AdviceError {
                throw AdviceError(description: "volume \(unit.name): \(e.description)")
            } catch SimulationError.usage(let m) {
                throw SimulationError.usage("volume \(unit.name) (virtual size \(unit.size)): \(m)")
            }
        }
    }
}

import Foundation
import TraceKit

/// Proposals for QEMU's metadata caches that QEMU 7.2 does not implement (issue 11), applied to
/// a run with `--what-if KEY=VALUE` and reported as `what_if`, so that no result is mistaken for
/// QEMU's behaviour.
///
/// - `l2-cache-size=P%`, `refcount-cache-size=P%`: per image, a share of what full coverage
///   needs (Red Hat bug 1377735, never merged), rounded up to a whole number of entries, then
///   sized by QEMU's own code (`CacheSizing`) as if given in bytes.
/// - `cache-scope=chain`: one L2 cache and one refcount cache for every image of the chain,
///   entries keyed by image and table (the KVM Forum 2017 qcow2 talk), sized by
///   `chain-l2-cache-size=SIZE` / `chain-refcount-cache-size=SIZE` or by the sum of the
///   per-image entries.
///
/// The seam: a what-if never changes the image model. It is one key here (`set`), and acts in
/// one of two places: a rewrite of the QEMU options before the run (`resolvedDriveOptions`, as
/// the percentages do: the model sees ordinary options), or the cache layer a recording is
/// replayed through (`topology`, as the chain scope does: the model's operation stream is the
/// same whatever the cache, so `Simulation.run` records it once and replays it).
public struct WhatIf: Equatable, Sendable {
    /// Which images a cache serves.
    public enum Scope: String, Equatable, Sendable {
        /// Per image (QEMU).
        case image
        /// Shared by the chain.
        case chain
    }

    /// `l2-cache-size=P%`: percent of full coverage, per image.
    public var l2CachePercent: Double?
    /// `refcount-cache-size=P%`: percent of full coverage, per image.
    public var refcountCachePercent: Double?
    /// `cache-scope`.
    public var scope: Scope = .image
    /// `chain-l2-cache-size`: bytes of the shared L2 cache.
    public var chainL2CacheSize: UInt64?
    /// `chain-refcount-cache-size`: bytes of the shared refcount cache.
    public var chainRefcountCacheSize: UInt64?
    /// The settings as given, in order (`KEY=VALUE`): what reports print as `what_if`.
    public private(set) var settings: [String] = []

    /// No what-if: QEMU.
    public init() {}

    /// The keys `set` accepts.
    public static let keys = [
        "l2-cache-size", "refcount-cache-size", "cache-scope", "chain-l2-cache-size", "chain-refcount-cache-size",
    ]

    /// Whether nothing is set.
    public var isEmpty: Bool { settings.isEmpty }

    /// Whether the run needs the replay of a recording (a cache layer QEMU does not have).
    public var needsReplay: Bool { scope == .chain }

    /// The prefix that marks a what-if where QEMU options are also accepted: `sweep --vary
    /// what-if.KEY=VALUES`, `compare --candidate what-if.KEY=VALUE`.
    public static let prefix = "what-if."

    /// Parses and applies one `KEY=VALUE`.
    ///
    /// - Throws: `SimulationError.usage` naming the setting.
    public mutating func set(_ setting: String) throws {
        if let why = apply(setting) { throw SimulationError.usage("--what-if \(setting): \(why)") }
    }

    /// Why `setting` is not a `KEY=VALUE` that `set` accepts, without the `--what-if` prefix
    /// (`expected a percentage above 0, such as 50%`); nil if it is one. The one check of a
    /// what-if's value, for `simulate --what-if`, `sweep --vary what-if.` and `compare`.
    public static func problem(with setting: String) -> String? {
        var probe = WhatIf()
        return probe.apply(setting)
    }

    /// Applies `setting`; returns why it cannot be applied (nil: applied).
    private mutating func apply(_ setting: String) -> String? {
        let kv = setting.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard kv.count == 2, !kv[1].isEmpty else {
            return "expected KEY=VALUE (keys: \(Self.keys.joined(separator: ", ")))"
        }
        let key = String(kv[0]), value = String(kv[1])
        func percent() -> Double? {
            guard value.hasSuffix("%"), let p = Double(value.dropLast()), p.isFinite, p > 0, p <= 100_000 else { return nil }
            return p
        }
        func size() -> UInt64? {
            guard case .success(let v) = QemuSize.parse(Substring(value)), v > 0 else { return nil }
            return v
        }
        let percentWanted = "expected a percentage above 0, such as 50%"
        let sizeWanted = "expected a size such as 4M"
        switch key {
        case "l2-cache-size":
            guard let p = percent() else { return percentWanted }
            l2CachePercent = p
        case "refcount-cache-size":
            guard let p = percent() else { return percentWanted }
            refcountCachePercent = p
        case "cache-scope":
            guard let s = Scope(rawValue: value) else { return "expected cache-scope=image or cache-scope=chain" }
            scope = s
        case "chain-l2-cache-size":
            guard let v = size() else { return sizeWanted }
            chainL2CacheSize = v
        case "chain-refcount-cache-size":
            guard let v = size() else { return sizeWanted }
            chainRefcountCacheSize = v
        default:
            return "unknown key '\(key)' (expected one of: \(Self.keys.joined(separator: ", ")))"
        }
        settings.removeAll { $0.hasPrefix(key + "=") }
        settings.append("\(key)=\(value)")
        return nil
    }

    /// Bytes of cache giving full coverage of image `g`: every L2 table (`qcow2_update_options_prepare`'s
    /// `max_l2_cache`, a whole number of clusters) or every refcount block of the clusters the
    /// virtual disk can allocate (one block covers `refblockEntries` clusters).
    public static func fullCoverage(_ kind: CacheKind, _ g: Geometry) -> UInt64 {
        let cs = g.clusterSize
        let clusters = (g.virtualSize + cs - 1) / cs
        switch kind {
        case .l2: return (clusters * g.l2EntrySize + cs - 1) / cs * cs
        case .refcount: return max(1, (clusters + g.refblockEntries - 1) / g.refblockEntries) * cs
        }
    }

    /// `config.driveOptions` with the percentages turned into QEMU byte options, per image (top
    /// first: `l2-cache-size=…,backing.l2-cache-size=…`). The share is rounded up to a whole
    /// number of the entries QEMU would use at that size (4 KiB slices below full coverage
    /// unless `l2-cache-entry-size` is given; clusters for refcount blocks).
    ///
    /// - Throws: `.usage` if `--drive` sets the same option for an image.
    public func resolvedDriveOptions(_ driveOptions: String, geometries: [Geometry], version: QemuVersion = .v7_2) throws
        -> String
    {
        guard l2CachePercent != nil || refcountCachePercent != nil else { return driveOptions }
        let depth = geometries.count
        let parsed: [CacheOptions]
        do {
            parsed = try DriveOptions.parse(driveOptions, depth: depth, version: version)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
        var added: [String] = []
        for level in 0..<depth {
            let g = geometries[depth - 1 - level]
            let o = parsed[level]
            let prefix = String(repeating: "backing.", count: level)
            if let p = l2CachePercent {
                guard o.l2CacheSize == nil && o.cacheSize == nil else {
                    throw SimulationError.usage(
                        "--what-if l2-cache-size=\(Self.format(p))%: --drive sets \(prefix)\(o.l2CacheSize == nil ? "cache-size" : "l2-cache-size") too"
                    )
                }
                let full = Self.fullCoverage(.l2, g)
                let raw = (Double(full) * p / 100).rounded(.up)
                let entry = o.l2CacheEntrySize ?? (raw < Double(full) ? min(g.clusterSize, 4096) : g.clusterSize)
                let bytes = min(UInt64(max((raw / Double(entry)).rounded(.up), 1)) * entry, max(full, entry))
                added.append("\(prefix)l2-cache-size=\(bytes)")
            }
            if let p = refcountCachePercent {
                guard o.refcountCacheSize == nil && o.cacheSize == nil else {
                    throw SimulationError.usage(
                        "--what-if refcount-cache-size=\(Self.format(p))%: --drive sets \(prefix)\(o.refcountCacheSize == nil ? "cache-size" : "refcount-cache-size") too"
                    )
                }
                let full = Self.fullCoverage(.refcount, g)
                let entries = max(UInt64((Double(full) * p / 100 / Double(g.clusterSize)).rounded(.up)), 1)
                added.append("\(prefix)refcount-cache-size=\(entries * g.clusterSize)")
            }
        }
        return ([driveOptions] + added).filter { !$0.isEmpty }.joined(separator: ",")
    }

    /// The cache layer's topology for a chain whose images have `sizings` (base first).
    ///
    /// - Throws: `.usage` for a shared cache over images whose entry sizes differ.
    public func topology(_ sizings: [CacheSizing]) throws -> CacheTopology {
        guard scope == .chain else { return .perImage }
        guard let first = sizings.first else { return .perImage }
        guard sizings.allSatisfy({ $0.l2EntrySize == first.l2EntrySize && $0.refcountEntrySize == first.refcountEntrySize })
        else {
            throw SimulationError.usage(
                "--what-if cache-scope=chain: the images' L2 entry sizes (\(sizings.map { String($0.l2EntrySize) }.joined(separator: ", "))) and cluster sizes (\(sizings.map { String($0.refcountEntrySize) }.joined(separator: ", "))) must be the same for one shared cache"
            )
        }
        let l2 = chainL2CacheSize.map { max(2, Int($0 / first.l2EntrySize)) } ?? sizings.reduce(0) { $0 + $1.l2Entries }
        let rc =
            chainRefcountCacheSize.map { max(4, Int($0 / first.refcountEntrySize)) }
            ?? sizings.reduce(0) { $0 + $1.refcountEntries }
        return .chain(l2Entries: l2, refcountEntries: rc)
    }

    static func format(_ p: Double) -> String { p == p.rounded() ? String(Int(p)) : String(p) }
}

extension Simulation {
    /// The geometry of every image `config` describes, base first, without building them.
    static func geometries(_ config: SimulationConfig) throws -> [Geometry] {
        if let path = config.imageFile { return try ChainBuilder.fromFile(path).map { $0.geometry } }
        return try (0..<max(config.chainLength, 1)).map { k in
            let which = config.layers[k]?.createOptions != nil ? "--layer \(k): -o" : "-o"
            do {
                return try config.createOptions(layer: k).geometry(virtualSize: config.virtualSize)
            } catch let e as CreateOptions.Failure {
                throw SimulationError.usage("\(which): \(e.message)")
            }
        }
    }

    /// `config` with its percentage what-ifs resolved into drive options (and removed).
    static func resolvingPercentages(_ config: SimulationConfig, geometries: [Geometry]) throws -> SimulationConfig {
        var c = config
        let text = try config.whatIf.resolvedDriveOptions(
            config.driveOptions.rendered, geometries: geometries, version: config.qemuVersion)
        do {
            c.driveOptions = try DriveOptions(parsing: text, version: config.qemuVersion)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
        c.whatIf.l2CachePercent = nil
        c.whatIf.refcountCachePercent = nil
        return c
    }

    /// `Simulation.run` for a configuration QEMU cannot run as is: `--policy opt` (which needs
    /// the future) or a what-if. Percentages become QEMU options; when the cache layer itself
    /// differs (opt, a shared cache), the trace session is recorded to a temporary file with the
    /// same options and policy `qemu` (the stream does not depend on either), replayed through
    /// the configuration, and the file removed.
    ///
    /// - Throws: as `run`; exit 69 if the replay diverged (its write-backs changed host-file
    ///   state the model reads, so the stream from there on is not the configuration's).
    static func runViaRecording<R: TraceReader>(
        config: SimulationConfig, reader: inout R, log: EventLog?, memoryTimeline: MemoryTimeline?
    ) throws -> SimulationReport {
        let resolved = try resolvingPercentages(config, geometries: try geometries(config))
        if resolved.policy != OptimalPolicy.name && !resolved.whatIf.needsReplay {
            var plain = resolved
            plain.whatIf = WhatIf()
            var report = try run(config: plain, reader: &reader, log: log, memoryTimeline: memoryTimeline)
            report.whatIf = config.whatIf.settings
            return report
        }
        var recordConfig = resolved
        recordConfig.whatIf = WhatIf()
        recordConfig.policy = resolved.policy == OptimalPolicy.name ? QemuPolicy.name : resolved.policy
        let dir = FileManager.default.temporaryDirectory.path
        let path = "\(dir)/qcow2sim-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).ops"
        defer { unlink(path) }
        let recorded = try record(config: recordConfig, reader: &reader, to: path)
        guard let outcome = try replay(recorded.recording, configs: [config], logs: [log], timelines: [memoryTimeline]).first
        else { throw SimulationError.usage("the replay gave no outcome") }
        guard var report = outcome.report else {
            throw SimulationError.image(
                "\(config.policy == OptimalPolicy.name ? "--policy opt" : "--what-if \(config.whatIf.settings.joined(separator: " "))"): the replay of the recorded stream diverged at request \(outcome.divergedAtRequest ?? 0) (its write-backs left the host file in another state where the model reads it), so this configuration cannot be computed from the recording",
                69)
        }
        report.whatIf = config.whatIf.settings
        return report
    }
}

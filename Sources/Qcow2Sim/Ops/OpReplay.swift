import Foundation
import TraceKit

/// A cache layer of any policy, as a replay of a recording drives it: closures made where the
/// policy is a static type, so each batch runs specialized code (a call through an existential
/// of the generic `CacheSystem` would run its unspecialized body).
struct AnyCacheLayer {
    /// Processes a batch.
    let consume: (UnsafeMutableBufferPointer<MetadataOp>) -> Void
    /// Where the replay diverged (nil: never).
    let divergedAt: () -> UInt64?
    /// Image `k`'s counters.
    let counters: (Int) -> CacheLayerCounters
    /// QEMU's asserts at close and the invariants: the problems found.
    let finish: () -> [String]

    init<P: EvictionPolicy>(_ system: CacheSystem<P>) {
        consume = { system.consume($0) }
        divergedAt = { system.divergedAt }
        counters = { system.counters(image: $0) }
        finish = { system.finish() }
    }

    /// A layer of another shape (the optimal policy's, which informs its policy between lookups).
    init(_ layer: any CacheLayer) {
        consume = { layer.consume($0) }
        divergedAt = { layer.divergedAt }
        counters = { layer.counters(image: $0) }
        finish = { layer.finish() }
    }
}

/// A cache layer that is not a plain `CacheSystem` (the optimal policy's), as a replay drives it.
protocol CacheLayer: MetadataOpConsumer {
    /// Where this layer's write-backs first differed from the recording's (nil: never).
    var divergedAt: UInt64? { get }
    /// Image `k`'s sizing and counters.
    func counters(image k: Int) -> CacheLayerCounters
    /// QEMU's asserts at close and the invariants: the problems found.
    func finish() -> [String]
}

/// One image's cache counters after a run.
public struct CacheLayerCounters: Sendable {
    /// The sizing the caches ran with.
    public var sizing: CacheSizing
    /// The L2 cache's counters.
    public var l2: CacheStats
    /// The refcount cache's counters.
    public var refcount: CacheStats
    /// Cache-clean ticks (idle ones included) and ticks evaluated.
    public var cleanTicks: UInt64
    /// Ticks whose effect was computed.
    public var cleanTicksEvaluated: UInt64
}

extension CacheSystem {
    /// Image `k`'s sizing and counters.
    /// With a cache shared by the chain (a what-if), the shared caches' counters are the top
    /// image's and the other images report none (each image still reports the shared sizing).
    public func counters(image k: Int) -> CacheLayerCounters {
        let c = images[k]
        if topology != .perImage && k != images.count - 1 {
            return CacheLayerCounters(
                sizing: c.sizing, l2: CacheStats(), refcount: CacheStats(), cleanTicks: 0, cleanTicksEvaluated: 0)
        }
        return CacheLayerCounters(
            sizing: c.sizing, l2: c.l2.stats, refcount: c.refcount.stats, cleanTicks: c.cleanTicks,
            cleanTicksEvaluated: c.cleanTicksEvaluated)
    }
}

/// What replaying a recording through one configuration gave.
public struct ReplayOutcome: Sendable {
    /// The report a live run with this configuration gives; nil if the replay diverged.
    public var report: SimulationReport?
    /// The request at which this configuration's write-backs left the host file in another
    /// state than the recording's where the model read it (the preallocation probe, SEEK_DATA,
    /// the file length): the stream may differ from there on, so the configuration needs a live
    /// run (`Simulation.run`). Nil when the replay is exact.
    public var divergedAtRequest: UInt64?
}

extension Simulation {
    /// Runs `config` live, as `run` does, and records its trace session's operations to `path`.
    ///
    /// - Returns: the live report and the recording (which keeps the report for replays).
    /// - Parameter tap: sees every recorded batch as the live run hands it over (not with `opt`
    ///   or a what-if, whose report comes from a replay: there it is nil or refused).
    public static func record<R: TraceReader>(
        config: SimulationConfig, reader: inout R, to path: String, log: EventLog? = nil,
        memoryTimeline: MemoryTimeline? = nil, tap: ((UnsafeMutableBufferPointer<MetadataOp>) -> Void)? = nil
    ) throws -> (report: SimulationReport, recording: OpRecording) {
        if config.policy == OptimalPolicy.name || !config.whatIf.isEmpty {
            precondition(tap == nil, "Simulation.record: a tap needs a live policy without what-ifs")
            // The live run records with QEMU's cache (the stream does not depend on it); the
            // report is the configuration's, from a replay of the recording.
            var live = try resolvingPercentages(config, geometries: try geometries(config))
            live.whatIf = WhatIf()
            if live.policy == OptimalPolicy.name { live.policy = QemuPolicy.name }
            let recorded = try record(config: live, reader: &reader, to: path)
            guard let report = try replay(recorded.recording, configs: [config], logs: [log], timelines: [memoryTimeline]).first?.report
            else {
                throw SimulationError.image("\(path): the replay of the recording through the configuration diverged", 69)
            }
            return (report, recorded.recording)
        }
        let source = BoxedSource(reader)
        defer { reader = source.reader }
        let sink = RecordingSink(path: path, tap: tap)
        let visitor = Runner(config: config, log: log, misEvict: nil, timeline: memoryTimeline, source: source, record: sink)
        guard let report = try PolicyRegistry.open(config.policy, visitor) else {
            throw SimulationError.usage(
                "unknown policy '\(config.policy)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
        }
        guard let r = sink.recording else { throw SimulationError.usage("the run recorded nothing") }
        let recording = OpRecording(
            path: path, geometries: r.geometries, l2EntrySizes: r.l2EntrySizes, operations: r.operations, bytes: r.bytes,
            liveReport: report, streamKey: r.streamKey)
        return (report, recording)
    }

    /// Runs `config` live, as `run` does, handing every batch of the trace session's operations
    /// to `tap` as the cache layer consumes it, and records nothing: `mrc`'s stack pass when no
    /// point needs a replay (no file written, none read back).
    ///
    /// - Returns: the live report (that of `run`).
    static func run<R: TraceReader>(
        config: SimulationConfig, reader: inout R, tap: @escaping (UnsafeMutableBufferPointer<MetadataOp>) -> Void
    ) throws -> SimulationReport {
        precondition(config.policy != OptimalPolicy.name && config.whatIf.isEmpty, "Simulation.run(tap:): a live policy without what-ifs")
        let source = BoxedSource(reader)
        defer { reader = source.reader }
        let visitor = Runner(
            config: config, log: nil, misEvict: nil, timeline: nil, source: source, record: RecordingSink(path: nil, tap: tap))
        guard let report = try PolicyRegistry.open(config.policy, visitor) else {
            throw SimulationError.usage(
                "unknown policy '\(config.policy)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
        }
        return report
    }

    /// Replays `recording` through every configuration of `configs` in one pass over the file
    /// (`jobs` > 1: that many passes in parallel threads, each over a share of the
    /// configurations). Each configuration must have the recording's stream key: the same
    /// chain, image options, cache mode, discard options and L2 entry size per image; they may
    /// differ in cache sizes, `cache-clean-interval` and policy.
    ///
    /// - Parameters:
    ///   - logs: an event log per configuration (or empty); request marks carry no location.
    /// - Returns: one outcome per configuration, in order; reports equal a live run's.
    /// - Throws: `SimulationError.usage` (exit 64) for a configuration whose stream key differs
    ///   or whose options are invalid, `SimulationError.image` for a damaged recording.
    public static func replay(
        _ recording: OpRecording, configs: [SimulationConfig], logs: [EventLog?] = [], timelines: [MemoryTimeline?] = [],
        jobs: Int = 1
    ) throws -> [ReplayOutcome] {
        guard let live = recording.liveReport else {
            throw SimulationError.usage("\(recording.path): a recording opened from a file has no live report to replay against")
        }
        var layers: [AnyCacheLayer] = []
        // Belady's MIN needs the stream's future: read once, shared by every `opt` configuration.
        var oracle: NextUseOracle?
        for (n, given) in configs.enumerated() {
            // What-ifs: percentages become QEMU options, a shared cache a topology (`WhatIf`).
            let config = try resolvingPercentages(given, geometries: recording.geometries)
            let (sizings, key) = try streamKey(config, geometries: recording.geometries)
            guard key == recording.streamKey else {
                throw SimulationError.usage(
                    "configuration \(n + 1) does not share the recording's operation stream (\(describeDifference(key, recording.streamKey))): it needs its own recording"
                )
            }
            let log = n < logs.count ? logs[n] : nil
            let timeline = n < timelines.count ? timelines[n] : nil
            let topology = try config.whatIf.topology(sizings)
            if config.policy == OptimalPolicy.name {
                if oracle == nil { oracle = try NextUseOracle(recording: recording) }
                if let oracle {
                    let system = CacheSystem<OptimalPolicy>(sizings: sizings, topology: topology, log: log, timeline: timeline)
                    layers.append(AnyCacheLayer(OptimalLayer(system: system, oracle: oracle)))
                }
                continue
            }
            let maker = LayerMaker(sizings: sizings, topology: topology, log: log, timeline: timeline)
            guard let layer = try PolicyRegistry.open(config.policy, maker)
            else {
                throw SimulationError.usage(
                    "unknown policy '\(config.policy)' (expected one of: \(PolicyRegistry.names.joined(separator: ", ")))")
            }
            layers.append(layer)
        }
        let t0 = monotonicSeconds()
        let groups = max(1, min(jobs, layers.count))
        if groups == 1 {
            try drive(recording, layers)
        } else {
            // Configuration j goes to pass j mod groups: deterministic whatever the scheduling.
            let failures = FailureBox()
            let shared = Shared(layers)
            DispatchQueue.concurrentPerform(iterations: groups) { g in
                let mine = stride(from: g, to: shared.value.count, by: groups).map { shared.value[$0] }
                do { try drive(recording, mine) } catch { failures.set(error) }
            }
            if let e = failures.error { throw e }
        }
        let seconds = monotonicSeconds() - t0
        return zip(configs, layers).map { config, layer in
            let problems = layer.finish()
            precondition(problems.isEmpty, "simulator invariant violated: \(problems.joined(separator: "; "))")
            if let d = layer.divergedAt() { return ReplayOutcome(report: nil, divergedAtRequest: d) }
            var report = live
            report.policy = config.policy
            report.whatIf = config.whatIf.settings
            report.setupSeconds = 0
            report.replaySeconds = seconds
            for k in report.images.indices {
                let c = layer.counters(k)
                report.images[k].sizing = c.sizing
                report.images[k].l2 = c.l2
                report.images[k].refcount = c.refcount
                report.images[k].image.cleanTicks = c.cleanTicks
                report.images[k].image.cleanTicksEvaluated = c.cleanTicksEvaluated
            }
            return ReplayOutcome(report: report, divergedAtRequest: nil)
        }
    }

    /// Feeds every operation of `recording` to `layers`, batch by batch.
    private static func drive(_ recording: OpRecording, _ layers: [AnyCacheLayer]) throws {
        let reader = try OpFileReader(path: recording.path)
        let (geometries, _, _) = try reader.header()
        let batch = UnsafeMutableBufferPointer<MetadataOp>.allocate(capacity: 4096)
        batch.initialize(repeating: MetadataOp(.endRequest))
        defer { batch.deallocate() }
        var total: UInt64 = 0
        while true {
            let n = try reader.next(into: batch, images: geometries.count)
            if n == 0 { break }
            total += UInt64(n)
            let part = UnsafeMutableBufferPointer(rebasing: batch[0..<n])
            for layer in layers { layer.consume(part) }
        }
        guard total == recording.operations else {
            throw SimulationError.image(
                "\(recording.path): error: the recording holds \(total) operations, its end marker says \(recording.operations)", 65)
        }
    }

    /// The sizings of `config` over a chain of `geometries`, and its stream key: every option
    /// that changes the model's operations.
    static func streamKey(_ config: SimulationConfig, geometries: [Geometry]) throws -> ([CacheSizing], String) {
        let depth = geometries.count
        let options: [CacheOptions]
        do {
            options = try config.driveOptions.images(depth: depth)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
        var sizings: [CacheSizing] = []
        var key = [
            "image=\(config.imageFile ?? "-")", "chain=\(config.chainLength)", "size=\(config.virtualSize)",
            "create=\(config.createOptions)", "layers=\(config.layers.keys.sorted().map { "\($0):\(String(describing: config.layers[$0]))" })",
            "populate=\(config.populate)", "mode=\(config.populateMode)", "preparation=\(config.preparation.count):\(config.preparation.map { $0.records.count })",
            "writethrough=\(config.cacheMode.writethrough)", "readonly=\(config.readOnly)", "unmap=\(config.discardUnmap)",
            "qemu=\(config.qemuVersion)", "reverse-tasks=\(config.debugReverseTaskResumption)",
        ]
        for (k, g) in geometries.enumerated() {
            let o = options[depth - 1 - k]
            do {
                sizings.append(try CacheSizing(geometry: g, options: o))
            } catch {
                throw SimulationError.usage("--drive: \(error.message)")
            }
            key.append("image \(k): l2-entry=\(sizings[k].l2EntrySize) discard-no-unref=\(o.discardNoUnref)")
        }
        return (sizings, key.joined(separator: "; "))
    }

    private static func describeDifference(_ a: String, _ b: String) -> String {
        let x = a.components(separatedBy: "; "), y = b.components(separatedBy: "; ")
        for (p, q) in zip(x, y) where p != q { return "\(p) instead of \(q)" }
        return "\(a) instead of \(b)"
    }
}

/// Makes a cache layer of the visited policy.
private struct LayerMaker: PolicyVisitor {
    let sizings: [CacheSizing]
    let topology: CacheTopology
    let log: EventLog?
    let timeline: MemoryTimeline?
    func visit<P: EvictionPolicy>(_ policy: P.Type) throws -> AnyCacheLayer {
        AnyCacheLayer(
            topology == .perImage
                ? CacheSystem<P>(sizings: sizings, log: log, timeline: timeline)
                : CacheSystem<P>(sizings: sizings, topology: topology, log: log, timeline: timeline))
    }
}

/// Layers handed to parallel passes: each pass touches only its own share.
private final class Shared: @unchecked Sendable {
    let value: [AnyCacheLayer]
    init(_ value: [AnyCacheLayer]) { self.value = value }
}

/// The first error of parallel passes.
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    func set(_ e: Error) {
        lock.lock()
        if error == nil { error = e }
        lock.unlock()
    }
}

/// Where a recording run leaves its recording.
final class RecordingSink {
    /// The recording's file (nil: the tap only, nothing recorded).
    let path: String?
    /// Sees every batch the recorder writes, in order, as the live run hands it over (`mrc`'s
    /// stack pass: no read-back of the file).
    let tap: ((UnsafeMutableBufferPointer<MetadataOp>) -> Void)?
    var recording: (geometries: [Geometry], l2EntrySizes: [UInt64], operations: UInt64, bytes: UInt64, streamKey: String)?
    init(path: String?, tap: ((UnsafeMutableBufferPointer<MetadataOp>) -> Void)? = nil) {
        self.path = path
        self.tap = tap
    }
}

import Foundation

/// One image's counts, simulated next to QEMU's.
public struct ImageComparison: Equatable, Sendable, Codable {
    /// Chain position (0 = base).
    public var image: Int
    /// File name of the real image.
    public var name: String
    /// Counts from the simulator's events.
    public var simulated: ImageCounts
    /// Counts from QEMU's events.
    public var qemu: ImageCounts
    /// The simulated cache geometry, when known.
    public var cacheSizes: ImageCacheSizes?
}

/// How the multi-segment requests fared (§13).
public struct MultiSegmentSummary: Equatable, Sendable, Codable {
    /// Requests checked as interleavings.
    public var requests: Int
    /// Of those, how many passed (identical order or a valid interleaving).
    public var passed: Int
    /// Of those, how many had the very same global order.
    public var identicalOrder: Int
    /// Multi-segment writes whose order is not an interleaving of their coroutines: divergences.
    public var flaggedWrites: Int
    /// Multi-segment reads whose order is not an interleaving: divergences.
    public var failedReads: Int
    /// One entry per checked request.
    public var checks: [InterleavingCheck]
}

/// QEMU's process measurements.
public struct QemuRunStats: Equatable, Sendable, Codable {
    /// Wall time of the replaying process (including open, close and image I/O).
    public var wallSeconds: Double
    /// Replayed requests per second of wall time.
    public var opsPerSecond: Double?
    /// Peak resident set size of the QEMU process (`VmHWM`).
    public var peakResidentBytes: UInt64?
}

/// What a validation found (README "validate outcomes").
public enum ValidationOutcome: String, Equatable, Sendable, Codable {
    /// Every compared event matched, in order (exit 0).
    case identical
    /// Every request's events are a valid interleaving of the coroutines QEMU runs concurrently
    /// for it (§13) and every count is equal, but some requests' order differs (exit 3).
    case equivalent
    /// Events or counts differ (exit 1).
    case divergent
    /// QEMU's side only (`--qemu-only`; exit 0).
    case notCompared = "not compared"
}

/// The outcome of `qcow2sim validate`, and its `--format json` document (README, "The JSON
/// reports"): `json()` adds the derived `outcome` and `exitCode`; `JSONDecoder` reads it back.
///
/// Versioning as `SimulationDocument`'s: `schemaVersion` (`schema_version`) is raised when a
/// field is removed or renamed or changes its type or meaning, not when one is added.
public struct ValidationReport: Equatable, Sendable, Codable {
    /// The schema version this code writes (1: the first with `schema_version`; the cache
    /// counts are `Metrics`, spelled as in `simulate`'s report).
    public static let currentSchemaVersion = 1

    /// `schema_version`.
    public var schemaVersion = Self.currentSchemaVersion
    /// Whether a simulated log was compared (false for a QEMU-only run).
    public var compared: Bool
    /// Every compared event matched, in order.
    public var identical: Bool
    /// Requests (0-based) QEMU ran in another valid concurrent order (`equivalent`).
    public var equivalentRequests: [Int] = []
    /// The trace location of each of `equivalentRequests`.
    public var equivalentLocations: [String] = []
    /// `--strict`: an `equivalent` run fails (exit 1) like a divergent one.
    public var strict = false
    /// `qemu-io` or `qemu-system`.
    public var tool: String
    /// QEMU's argv.
    public var argv: [String]
    /// File AIO engine.
    public var aio: String
    /// Records in the trace.
    public var requests: Int
    /// Records actually sent to QEMU (zero-length ones are skipped).
    public var replayedRequests: Int
    /// Events in the simulated log.
    public var simulatedEvents: Int
    /// Cache events QEMU printed.
    public var qemuEvents: Int
    /// Whether the close tail was compared.
    public var closeCompared: Bool
    /// Spans (open, requests, close) that differ.
    public var divergentSpans: Int
    /// The first divergence.
    public var firstDivergence: Divergence?
    /// Multi-segment requests.
    public var multiSegment: MultiSegmentSummary
    /// Per image, per cache, side by side.
    public var images: [ImageComparison]
    /// QEMU's wall time, throughput and memory.
    public var qemu: QemuRunStats
    /// Simulated cache table memory over all images.
    public var simulatedCacheBytes: UInt64?
    /// Where the images and logs were kept.
    public var keptDirectory: String?
    /// Remarks (what was not compared, classification disagreements).
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case compared, identical, equivalentRequests, equivalentLocations, strict, tool, argv, aio, requests
        case replayedRequests, simulatedEvents, qemuEvents, closeCompared, divergentSpans, firstDivergence
        case multiSegment, images, qemu, simulatedCacheBytes, keptDirectory, notes
    }

    /// identical, equivalent, divergent or not compared.
    public var outcome: ValidationOutcome {
        if !compared { return .notCompared }
        if identical { return .identical }
        if firstDivergence == nil && !equivalentRequests.isEmpty { return .equivalent }
        return .divergent
    }

    /// The exit status: 0 identical (or not compared), 3 equivalent (1 with `strict`),
    /// 1 divergent (like `diff`).
    public var exitCode: Int32 {
        switch outcome {
        case .identical, .notCompared: 0
        case .equivalent: strict ? 1 : 3
        case .divergent: 1
        }
    }

    /// The equivalent requests as `request 12 (trace line 13)`, at most `limit` of them.
    func equivalentList(limit: Int = 10) -> String {
        var items: [String] = []
        for (k, r) in equivalentRequests.prefix(limit).enumerated() {
            let loc =
                k < equivalentLocations.count && !equivalentLocations[k].isEmpty ? " (trace line \(equivalentLocations[k]))" : ""
            items.append("request \(r)\(loc)")
        }
        if equivalentRequests.count > limit { items.append("… \(equivalentRequests.count - limit) more") }
        return items.joined(separator: ", ")
    }

    /// Pretty-printed JSON with sorted keys.
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        // The outcome and exit status are derived, not stored: add them to the object.
        guard var object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            return String(decoding: data, as: UTF8.self) + "\n"
        }
        object["outcome"] = outcome.rawValue
        object["exitCode"] = Int(exitCode)
        guard
            let full = try? JSONSerialization.data(
                withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        else { return String(decoding: data, as: UTF8.self) + "\n" }
        return String(decoding: full, as: UTF8.self) + "\n"
    }

    /// The human-readable report.
    public func text() -> String {
        var s = ""
        let scope = closeCompared ? "open, requests and close" : "open and requests (close not compared)"
        if !compared {
            s += "not compared: QEMU's side only, \(qemuEvents) cache events over \(requests) requests\n"
        } else if identical {
            s += "identical: QEMU's \(qemuEvents) cache events match the simulation over \(requests) requests (\(scope))\n"
        } else if outcome == .equivalent {
            s +=
                "equivalent\(strict ? " (a failure with --strict)" : ""): every request's events are a valid interleaving of QEMU's concurrent tasks and all counts are equal, "
                + "but \(equivalentRequests.count) multi-segment request(s) ran in another order than the simulation's (\(scope)): \(equivalentList())\n"
        } else {
            s += "divergent: \(divergentSpans) span(s) differ from the simulation (\(scope))\n"
        }
        s +=
            "replayed with \(tool) (aio \(aio)): \(replayedRequests) of \(requests) requests, simulated \(simulatedEvents) events, QEMU \(qemuEvents)\n"
        if let d = firstDivergence {
            var at = d.phase
            if let r = d.request { at = "request \(r)" }
            if let loc = d.traceLocation, !loc.isEmpty { at += " (trace line \(loc))" }
            s += "\nfirst divergence at \(at), event \(d.eventIndex)"
            if let l = d.qemuLogLine { s += ", QEMU log line \(l)" }
            s += ": \(d.reason)\n"
            let rows = max(d.expected.count, d.actual.count)
            s += "  expected (simulator):\n"
            for k in 0..<rows where k < d.expected.count {
                s += "   \(d.windowStart + k == d.eventIndex ? ">" : " ") \(d.windowStart + k): \(d.expected[k])\n"
            }
            s += "  actual (QEMU):\n"
            for k in 0..<rows where k < d.actual.count {
                s += "   \(d.windowStart + k == d.eventIndex ? ">" : " ") \(d.windowStart + k): \(d.actual[k])\n"
            }
        }
        let ms = multiSegment
        if ms.requests > 0 {
            s += "\nmulti-segment requests: \(ms.requests) checked as interleavings per image and coroutine: "
            s +=
                "\(ms.passed) passed (\(ms.identicalOrder) in identical order, \(ms.passed - ms.identicalOrder) in another valid order), \(ms.failedReads) reads and \(ms.flaggedWrites) writes failed\n"
            for c in ms.checks where !c.passed {
                s +=
                    "  request \(c.request)\(c.traceLocation.map { " (line \($0))" } ?? ""): \(c.write ? "write" : "read") not an interleaving\n"
            }
        }
        s += "\n"
        s += Self.pad("", 26) + Self.pad("simulated", 14, right: true) + Self.pad("qemu", 14, right: true) + "\n"
        for img in images {
            var title = "image \(img.image) (\(img.name))"
            if let sizes = img.cacheSizes {
                title +=
                    ": L2 \(sizes.l2Entries) x \(sizes.l2EntryBytes) B, refcount \(sizes.refcountEntries) x \(sizes.refcountEntryBytes) B"
            }
            s += title + "\n"
            for (label, sim, real) in [
                ("L2", img.simulated.l2, img.qemu.l2), ("refcount", img.simulated.refcount, img.qemu.refcount),
            ] {
                let rows: [(String, String, String)] = [
                    ("lookups", "\(sim.lookups)", "\(real.lookups)"),
                    ("hits", "\(sim.hits)", "\(real.hits)"),
                    ("misses", "\(sim.misses)", "\(real.misses)"),
                    ("evictions", "\(sim.evictions)", "\(real.evictions)"),
                    ("write-backs", "\(sim.writebacks)", "\(real.writebacks)"),
                    ("flushes", "\(sim.flushes)", "\(real.flushes)"),
                    ("bytes read", sim.bytesRead.map(String.init) ?? "-", real.bytesRead.map(String.init) ?? "-"),
                    ("bytes written", sim.bytesWritten.map(String.init) ?? "-", real.bytesWritten.map(String.init) ?? "-"),
                ]
                for (name, a, b) in rows {
                    let mark = a == b ? "" : "  <>"
                    s +=
                        Self.pad("  \(label) \(name)", 26) + Self.pad(a, 14, right: true) + Self.pad(b, 14, right: true) + mark
                        + "\n"
                }
            }
        }
        s += "\nQEMU wall time \(String(format: "%.3f", qemu.wallSeconds)) s"
        if let ops = qemu.opsPerSecond { s += ", \(String(format: "%.0f", ops)) requests/s" }
        if let rss = qemu.peakResidentBytes { s += ", peak RSS \(Self.mib(rss))" }
        if let mem = simulatedCacheBytes { s += "; simulated cache memory \(Self.mib(mem))" }
        s += "\n"
        for n in notes { s += "note: \(n)\n" }
        if let k = keptDirectory { s += "kept the images and QEMU's raw trace log (\(k)/qemu-trace.log) in \(k)\n" }
        return s
    }

    static func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return right ? fill + s : s + fill
    }

    static func mib(_ bytes: UInt64) -> String {
        String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }
}

import Foundation

/// Renders a `SimulationReport` as JSON (`SimulationDocument`, the command-line contract), CSV or text.
public enum ReportFormat {
    /// The JSON of `simulate --format json`: `SimulationDocument` encoded with sorted keys,
    /// pretty-printed, ending in a newline (README, "The JSON reports"). Throws only for a
    /// value JSON cannot hold (a non-finite number).
    public static func json(_ r: SimulationReport, config: SimulationConfig, cost: CostModel? = nil) throws -> String {
        try json(SimulationDocument(report: r, config: config, cost: cost))
    }

    /// `value` as the reports write JSON: sorted keys (readers go by key, and equal reports are
    /// equal text), pretty-printed, slashes unescaped, a final newline.
    public static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }

    /// One CSV row per image and cache; with a `prediction` (`--cost`), its two columns
    /// (`predicted_iops`, `predicted_latency_us`: the run's, on every row) at the end.
    public static func csv(_ r: SimulationReport, prediction: Prediction? = nil) -> String {
        var s =
            "image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,dirty_evictions,writebacks,flushes,bytes_read,bytes_written,memory_bytes,memory_peak_bytes,memory_mean_bytes,misses_cold,misses_evicted,misses_cleaned,misses_discarded\(r.whatIf.isEmpty ? "" : ",what_if")\(prediction == nil ? "" : ",predicted_iops,predicted_latency_us")\n"
        // What-ifs: one more column, the settings separated by spaces (no commas in them).
        var whatIf = r.whatIf.isEmpty ? "" : "," + r.whatIf.joined(separator: " ")
        if let prediction { whatIf += ",\(number(prediction.iops)),\(number(prediction.latencyUs))" }
        for im in r.images {
            for (name, st, size, n) in [
                ("l2", im.l2, im.sizing.l2EntrySize, im.sizing.l2Entries),
                ("refcount", im.refcount, im.sizing.refcountEntrySize, im.sizing.refcountEntries),
            ] {
                s +=
                    "\(im.index),\(name),\(size),\(n),\(st.lookups),\(st.hits),\(st.misses),\(number(st.hitRate)),\(st.evictions),\(st.dirtyEvictions),\(st.writebacks),\(st.flushes),\(st.bytesRead),\(st.bytesWritten),\(st.memoryBytes),\(st.memoryPeakBytes),\(number(SimulationReport.meanMemory(st, span: r.memorySpan))),\(st.missesCold),\(st.missesEvicted),\(st.missesCleaned),\(st.missesDiscarded)\(whatIf)\n"
            }
        }
        return s
    }

    /// A human-readable summary.
    public static func text(_ r: SimulationReport, config: SimulationConfig) -> String {
        var s = "requests: \(r.requests) (policy \(config.policy), \(config.cacheMode.rawValue))\n"
        if !r.whatIf.isEmpty { s += "what-if (not QEMU behaviour): \(r.whatIf.joined(separator: " "))\n" }
        if r.multiSegmentReads + r.multiSegmentWrites > 0 {
            s +=
                "multi-segment requests: \(r.multiSegmentReads) reads, \(r.multiSegmentWrites) writes (QEMU runs them as concurrent tasks)\n"
        }
        for im in r.images {
            let role = im.index == r.images.count - 1 ? "top" : (im.index == 0 ? "base" : "backing")
            s +=
                "\nimage \(im.index) (\(role)): cluster \(bytes(im.geometry.clusterSize))\(im.geometry.extendedL2 ? ", extended L2" : ""), L2 cache \(im.sizing.l2Entries) × \(bytes(im.sizing.l2EntrySize)), refcount cache \(im.sizing.refcountEntries) × \(bytes(im.sizing.refcountEntrySize))\n"
            s += "  cache      lookups       hits     misses  hit rate  evictions  write-backs   read      written   mem peak\n"
            for (name, st) in [("L2", im.l2), ("refcount", im.refcount)] {
                s +=
                    pad(name, 8) + pad("\(st.lookups)", 11, right: true) + pad("\(st.hits)", 11, right: true)
                    + pad("\(st.misses)", 11, right: true) + pad(String(format: "%.4f", st.hitRate), 10, right: true)
                    + pad("\(st.evictions)", 11, right: true) + pad("\(st.writebacks)", 13, right: true)
                    + pad(bytes(st.bytesRead), 10, right: true) + pad(bytes(st.bytesWritten), 11, right: true)
                    + pad(bytes(st.memoryPeakBytes), 11, right: true) + "\n"
            }
            // Why each miss happened: first loads, capacity, the clean timer, discards.
            for (name, st) in [("L2", im.l2), ("refcount", im.refcount)] where st.misses > 0 {
                s +=
                    "  \(name) misses: \(st.missesCold) cold, \(st.missesEvicted) evicted, \(st.missesCleaned) cleaned by the timer, \(st.missesDiscarded) discarded\n"
            }
            let i = im.image
            if i.clustersAllocated + i.l2TablesAllocated + i.cowBytesRead + i.cowBytesWritten + i.clustersFreed > 0 {
                s +=
                    "  allocated: \(i.clustersAllocated) clusters, \(i.l2TablesAllocated) L2 tables, \(i.refcountBlocksAllocated) refcount blocks; freed \(i.clustersFreed) clusters\n"
                s +=
                    "  COW: \(bytes(i.cowBytesRead)) read, \(bytes(i.cowBytesWritten)) written, \(i.cowSkipped) regions zeroed instead\n"
            }
            s += "  host file: \(bytes(im.hostLengthBytes)) long, \(bytes(im.hostAllocatedBytes)) allocated\n"
        }
        return s
    }

    /// Two caches' counters summed (memory too, so the mean is the chain's).
    public static func add(_ a: CacheStats, _ b: CacheStats) -> CacheStats {
        var t = a
        t.lookups += b.lookups; t.hits += b.hits; t.misses += b.misses; t.emptyGets += b.emptyGets
        t.evictions += b.evictions; t.dirtyEvictions += b.dirtyEvictions; t.writebacks += b.writebacks
        t.flushes += b.flushes; t.bytesRead += b.bytesRead; t.bytesWritten += b.bytesWritten; t.cleaned += b.cleaned
        t.memoryBytes += b.memoryBytes; t.memoryPeakBytes += b.memoryPeakBytes; t.memoryByteSeconds += b.memoryByteSeconds
        t.missesCold += b.missesCold; t.missesEvicted += b.missesEvicted; t.missesCleaned += b.missesCleaned
        t.missesDiscarded += b.missesDiscarded
        return t
    }

    /// `d` as the reports print it: a whole number exactly, anything else to 6 significant digits.
    static func number(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return String(format: "%.6g", d)
    }

    /// `d` to the precision `number` prints (a whole number exactly, else 6 significant
    /// digits), so that the JSON's rates and means keep the values the reports always had.
    public static func rounded(_ d: Double) -> Double {
        guard d.isFinite, d != d.rounded() || abs(d) >= 1e15 else { return d }
        return Double(String(format: "%.6g", d)) ?? d
    }

    /// `64K`, `1.5M`, `123 B`.
    public static func bytes(_ b: UInt64) -> String {
        let units = ["B", "K", "M", "G", "T"]
        var v = Double(b), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        if u == 0 { return "\(b) B" }
        return v == v.rounded() ? "\(Int(v))\(units[u])" : String(format: "%.1f%@", v, units[u])
    }

    private static func pad(_ s: String, _ w: Int, right: Bool = false) -> String {
        s.count >= w
            ? s + " " : (right ? String(repeating: " ", count: w - s.count) + s : s + String(repeating: " ", count: w - s.count))
    }
}

import Foundation

/// Renders a `SimulationReport` as JSON (the command-line contract), CSV or text.
public enum ReportFormat {
    /// The JSON object of `simulate --format json`:
    /// `{"config": {...}, "images": [{"index", "l2": {...}, "refcount": {...}, ...}], "totals": {...}, "requests": N}`.
    public static func json(_ r: SimulationReport, config: SimulationConfig) -> String {
        var images: [String] = []
        var totalL2 = CacheStats(), totalRC = CacheStats()
        var configImages: [String] = []
        for im in r.images {
            images.append(
                "{\"index\": \(im.index), \"l2\": \(cache(im.l2, span: r.memorySpan)), \"refcount\": \(cache(im.refcount, span: r.memorySpan)), "
                    + "\"clusters_allocated\": \(im.image.clustersAllocated), \"l2_tables_allocated\": \(im.image.l2TablesAllocated), "
                    + "\"refcount_blocks_allocated\": \(im.image.refcountBlocksAllocated), \"refcount_table_growths\": \(im.image.refcountTableGrowths), "
                    + "\"clusters_freed\": \(im.image.clustersFreed), "
                    + "\"cow_bytes_read\": \(im.image.cowBytesRead), \"cow_bytes_written\": \(im.image.cowBytesWritten), "
                    + "\"cow_skipped\": \(im.image.cowSkipped), "
                    + "\"guest_bytes_read\": \(im.image.guestBytesRead), \"guest_bytes_written\": \(im.image.guestBytesWritten), "
                    + "\"direct_metadata_bytes_written\": \(im.image.directMetadataBytesWritten), "
                    + "\"preallocation_probes\": \(im.image.preallocationProbes), "
                    + "\"host_length_bytes\": \(im.hostLengthBytes), \"host_allocated_bytes\": \(im.hostAllocatedBytes)}")
            configImages.append(
                "{\"index\": \(im.index), \"cluster_size\": \(im.geometry.clusterSize), \"extended_l2\": \(im.geometry.extendedL2), "
                    + "\"refcount_bits\": \(im.geometry.refcountBits), \"virtual_size\": \(im.geometry.virtualSize), "
                    + "\"l2_entry_size\": \(im.sizing.l2EntrySize), \"l2_entries\": \(im.sizing.l2Entries), "
                    + "\"l2_cache_bytes\": \(UInt64(im.sizing.l2Entries) * im.sizing.l2EntrySize), "
                    + "\"refcount_entry_size\": \(im.sizing.refcountEntrySize), \"refcount_entries\": \(im.sizing.refcountEntries), "
                    + "\"cache_clean_interval\": \(im.sizing.cleanInterval)}")
            totalL2 = add(totalL2, im.l2)
            totalRC = add(totalRC, im.refcount)
        }
        let ops = r.requestsByOp
        let byOp =
            "{\"read\": \(ops[.read] ?? 0), \"write\": \(ops[.write] ?? 0), \"discard\": \(ops[.discard] ?? 0), \"write_zeroes\": \(ops[.writeZeroes] ?? 0), \"flush\": \(ops[.flush] ?? 0)}"
        let cfg =
            "{\"policy\": \(quote(config.policy)), \"cache_mode\": \(quote(config.cacheMode.rawValue)), "
            + "\"create_options\": \(quote(config.createOptions)), \"drive_options\": \(quote(config.driveOptions)), "
            + "\"chain\": \(r.images.count), \"images\": [\(configImages.joined(separator: ", "))]}"
        // What-ifs (proposals QEMU does not implement), only when the run applied any.
        let whatIf =
            r.whatIf.isEmpty
            ? ""
            : "\"what_if\": {\(r.whatIf.map { s in let kv = s.split(separator: "=", maxSplits: 1); return "\(quote(String(kv[0]))): \(quote(kv.count > 1 ? String(kv[1]) : ""))" }.joined(separator: ", "))}, "
        return "{\"config\": \(cfg), \(whatIf)\"images\": [\(images.joined(separator: ", "))], "
            + "\"totals\": {\"l2\": \(cache(totalL2, span: r.memorySpan)), \"refcount\": \(cache(totalRC, span: r.memorySpan))}, "
            + "\"requests\": \(r.requests), \"requests_by_op\": \(byOp), "
            + "\"multi_segment_reads\": \(r.multiSegmentReads), \"multi_segment_writes\": \(r.multiSegmentWrites), "
            + "\"duration_seconds\": \(number(r.duration))}\n"
    }

    /// One CSV row per image and cache.
    public static func csv(_ r: SimulationReport) -> String {
        var s =
            "image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,dirty_evictions,writebacks,flushes,bytes_read,bytes_written,memory_bytes,memory_peak_bytes,memory_mean_bytes\(r.whatIf.isEmpty ? "" : ",what_if")\n"
        // What-ifs: one more column, the settings separated by spaces (no commas in them).
        let whatIf = r.whatIf.isEmpty ? "" : "," + r.whatIf.joined(separator: " ")
        for im in r.images {
            for (name, st, size, n) in [
                ("l2", im.l2, im.sizing.l2EntrySize, im.sizing.l2Entries),
                ("refcount", im.refcount, im.sizing.refcountEntrySize, im.sizing.refcountEntries),
            ] {
                s +=
                    "\(im.index),\(name),\(size),\(n),\(st.lookups),\(st.hits),\(st.misses),\(number(st.hitRate)),\(st.evictions),\(st.dirtyEvictions),\(st.writebacks),\(st.flushes),\(st.bytesRead),\(st.bytesWritten),\(st.memoryBytes),\(st.memoryPeakBytes),\(number(SimulationReport.meanMemory(st, span: r.memorySpan)))\(whatIf)\n"
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

    private static func cache(_ s: CacheStats, span: Double) -> String {
        "{\"lookups\": \(s.lookups), \"hits\": \(s.hits), \"misses\": \(s.misses), \"hit_rate\": \(number(s.hitRate)), "
            + "\"miss_rate\": \(number(s.missRate)), \"empty_gets\": \(s.emptyGets), "
            + "\"evictions\": \(s.evictions), \"dirty_evictions\": \(s.dirtyEvictions), \"writebacks\": \(s.writebacks), "
            + "\"flushes\": \(s.flushes), \"bytes_read\": \(s.bytesRead), \"bytes_written\": \(s.bytesWritten), "
            + "\"cleaned\": \(s.cleaned), \"memory_bytes\": \(s.memoryBytes), \"memory_peak_bytes\": \(s.memoryPeakBytes), "
            + "\"memory_mean_bytes\": \(number(SimulationReport.meanMemory(s, span: span)))}"
    }

    private static func add(_ a: CacheStats, _ b: CacheStats) -> CacheStats {
        var t = a
        t.lookups += b.lookups; t.hits += b.hits; t.misses += b.misses; t.emptyGets += b.emptyGets
        t.evictions += b.evictions; t.dirtyEvictions += b.dirtyEvictions; t.writebacks += b.writebacks
        t.flushes += b.flushes; t.bytesRead += b.bytesRead; t.bytesWritten += b.bytesWritten; t.cleaned += b.cleaned
        t.memoryBytes += b.memoryBytes; t.memoryPeakBytes += b.memoryPeakBytes; t.memoryByteSeconds += b.memoryByteSeconds
        return t
    }

    static func number(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return String(format: "%.6g", d)
    }

    private static func quote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
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

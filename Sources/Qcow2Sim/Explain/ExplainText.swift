import Foundation

extension ExplainReport {
    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// The JSON of `explain --format json`: this document with snake_case keys, sorted, pretty.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    /// The text of `explain` (the default format): the walk, the operations, the changes.
    public func text() -> String {
        var s = ""
        let loc = request.location.isEmpty ? "" : " (\(request.location))"
        let time = request.time.map { ", at \(ReportFormat.number($0)) s" } ?? ""
        s +=
            "request \(request.number) of \(trace)\(loc)\(time): \(request.op) \(Self.hex(request.offset)) +\(request.length) "
            + "(guest bytes [\(request.offset), \(request.offset + request.length)))\n\n"
        s += "Images (top first)\n"
        for im in images {
            s +=
                "  image \(im.index) (\(im.role)): \(ReportFormat.bytes(im.virtualSize)) disk, \(ReportFormat.bytes(im.clusterSize)) clusters"
                + (im.extendedL2 ? ", extended L2 (32 subclusters)" : "") + ", \(im.refcountBits)-bit refcounts; "
                + "L2 cache \(im.l2CacheEntries) × \(ReportFormat.bytes(im.l2CacheEntrySize)), refcount cache \(im.refcountCacheEntries) × \(ReportFormat.bytes(im.refcountCacheEntrySize)); policy \(im.policy)\n"
        }
        s += "\nAddress walk (entries as they were before the request; \"after:\" what it left)\n"
        if walk.isEmpty { s += "  (a flush touches no guest offset: it writes the caches back; DocC: the cache algorithm)\n" }
        for w in walk {
            s += "  guest [\(Self.hex(w.from)), \(Self.hex(w.to)))\n"
            for l in w.layers { s += layerText(l) }
        }
        if walkOmitted > 0 { s += "  … \(walkOmitted) more cluster\(walkOmitted == 1 ? "" : "s") of the request\n" }
        s += "\nCache operations, in QEMU's order\n"
        if operations.isEmpty { s += "  (none: this request touches no cached metadata)\n" }
        for o in operations { s += operationText(o) }
        if !cow.isEmpty || !cowOutcome.isEmpty {
            s += "\nCopy-on-write (DocC: the allocation path)\n"
            for c in cow {
                s +=
                    "  \(c.part) of guest cluster \(Self.hex(c.guestCluster)): [\(Self.hex(c.from)), \(Self.hex(c.to))), \(c.to - c.from) bytes: \(c.reason)\n"
            }
            for o in cowOutcome { s += "  \(o)\n" }
        }
        if !refcountChanges.isEmpty {
            s += "\nRefcount updates\n"
            for r in refcountChanges {
                s +=
                    "  image \(r.image) host cluster \(r.cluster) (\(Self.hex(r.hostOffset))): \(r.before) → \(r.after), \(r.what)\n"
            }
        }
        if !tableChanges.isEmpty {
            s += "\nL1 and refcount-table entries written\n"
            for t in tableChanges {
                s += "  image \(t.image) \(t.table == "l1" ? "L1" : "refcount table")[\(t.index)]: \(t.before) → \(t.after)\n"
            }
        }
        s += "\nEvents, in compact notation (--format json lists QEMU's qcow2_cache_* lines)\n"
        if listing.isEmpty { s += "  (none)\n" }
        for e in listing { s += "  \(e)\n" }
        if !notes.isEmpty {
            s += "\nNotes\n"
            for n in notes { s += "  - \(n)\n" }
        }
        return s
    }

    func entryText(_ e: Entry, l1: Bool) -> String {
        var flags: [String] = []
        if e.copied { flags.append("COPIED") }
        if e.compressed { flags.append("COMPRESSED") }
        if e.zeroFlag { flags.append("ZERO") }
        var s = e.word
        if l1 {
            s += e.offset == 0 ? " (no L2 table)" : " (\((flags + ["L2 table \(Self.hex(e.offset))"]).joined(separator: ", ")))"
            return s
        }
        if e.offset != 0 { flags.append("host cluster \(Self.hex(e.offset))") }
        flags.append(e.type)
        s += " (\(flags.joined(separator: ", ")))"
        if let a = e.allocBits, let z = e.zeroBits, let b = e.bitmap {
            s += "; bitmap \(b): alloc bits \(a), zero bits \(z) (subcluster 0 first)"
        }
        return s
    }

    func layerText(_ l: Layer) -> String {
        var s = "    image \(l.image): guest cluster \(l.guestCluster), offset \(Self.hex(l.offsetInCluster)) in it\n"
        let lo = UInt64(l.l1Index) * l.l1Span
        s +=
            "      L1[\(l.l1Index)] (covers guest [\(Self.hex(lo)), \(Self.hex(lo + l.l1Span)))): \(entryText(l.l1Entry, l1: true))\n"
        if let a = l.l1EntryAfter { s += "        after: \(entryText(a, l1: true))\n" }
        s += "      L2 index \(l.l2Index): slice \(l.slice) (\(l.sliceEntries) entries per slice), entry \(l.indexInSlice) of it"
        if let o = l.sliceOffset { s += "; the slice is at host \(Self.hex(o)), the L2 cache's key" }
        s += "\n"
        if let e = l.l2Entry { s += "      L2 entry: \(entryText(e, l1: false))\n" }
        if let a = l.l2EntryAfter { s += "        after: \(entryText(a, l1: false))\n" }
        if let sc = l.subclusters {
            let first = Int(sc.split(separator: "–").first ?? "") ?? 0
            s += "      subclusters \(sc)" + (l.subclusterTypes.map { ": " + Self.runs($0, first: first) } ?? "") + "\n"
        }
        s += "      → \(l.resolution)\n"
        return s
    }

    /// `0–1 normal, 2 unallocated_alloc, 3–31 zero_plain`: a type per run of subclusters.
    static func runs(_ types: [String], first: Int) -> String {
        var parts: [String] = []
        var i = 0
        while i < types.count {
            var j = i
            while j + 1 < types.count && types[j + 1] == types[i] { j += 1 }
            parts.append((i == j ? "\(first + i)" : "\(first + i)–\(first + j)") + " " + types[i])
            i = j + 1
        }
        // One run over the whole range: the type alone.
        if parts.count == 1, let t = types.first { return t }
        return parts.joined(separator: ", ")
    }

    func operationText(_ o: Operation) -> String {
        let step = String(repeating: " ", count: max(0, 4 - "\(o.step)".count)) + "\(o.step)"
        let who = images.count > 1 ? "image \(o.image) " : ""
        let cache = o.cache.map { $0 == "l2" ? "L2 " : "RC " } ?? ""
        var head: String
        switch o.op {
        case "get", "get_empty", "reget":
            head = "\(cache)get\(o.op == "get_empty" ? " empty" : "") \(o.offset.map(Self.hex) ?? "")"
            if o.count > 1 { head += " (x\(o.count))" }
            var state = o.result ?? ""
            if o.result == "miss" {
                state += " → slot \(o.slot ?? 0)" + (o.missClass.map { " (\($0) miss)" } ?? "")
            } else if let slot = o.slot {
                state += " slot \(slot)"
            }
            if let b = o.stampBefore { state += ", stamp \(b)" }
            if let a = o.stampAfter { state += " → \(a) at release" } else { state += ", still held" }
            if o.markedDirty { state += ", marked dirty" }
            head += ": \(state)"
        case "write": head = "flush \(cache.trimmingCharacters(in: .whitespaces))"
        case "put", "put_held":
            head = "\(cache)put \(o.offset.map(Self.hex) ?? "")"
            if let slot = o.slot { head += ": slot \(slot)" + (o.stampAfter.map { ", stamp → \($0)" } ?? ", still held") }
        case "mark_dirty": head = "\(cache)mark dirty \(o.offset.map(Self.hex) ?? "")"
        case "set_dependency": head = "\(cache)set dependency"
        case "depends_on_flush": head = "\(cache)depends on flush"
        case "free_cluster": head = "free cluster \(o.offset.map(Self.hex) ?? "")"
        default: head = o.op
        }
        var s = "\(step)  \(who)\(head)\n"
        if let t = o.table { s += "        \(t)\n" }
        if let v = o.victim {
            s += "        victim: start index \(v.startFormula); \(v.reason)"
            if let e = v.evictedOffset { s += "; evicts \(Self.hex(e))" + (v.evictedStamp.map { " (stamp \($0))" } ?? "") }
            s += "\n"
        }
        s += "        \(o.note)\n"
        if !o.events.isEmpty { s += "        events: \(o.events.joined(separator: "; "))\n" }
        return s
    }
}

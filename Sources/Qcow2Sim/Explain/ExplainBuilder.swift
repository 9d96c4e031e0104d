import TraceKit

/// Turns what `ExplainRunner` observed into an `ExplainReport`.
struct ExplainBuilder {
    let config: SimulationConfig
    let chain: [Qcow2Image]
    let sizings: [CacheSizing]
    let record: TraceRecord
    let number: Int
    let location: TraceLocation
    let trace: String
    let observer: ExplainObserver
    let before: [ImageSnapshot]
    let after: [ImageSnapshot]
    let cow: [(UInt64, [(start: UInt64, startBytes: UInt64, end: UInt64, endBytes: UInt64)])]

    var top: Int { chain.count - 1 }

    // MARK: - What to read

    /// The guest offsets of the clusters the walk shows (the top image's clusters, at most
    /// `walkLimit`, each the first byte of the request inside it).
    static func walkOffsets(_ rec: TraceRecord, chain: [Qcow2Image]) -> [UInt64] {
        guard let top = chain.last, rec.op != .flush, rec.length > 0 else { return [] }
        let g = top.geometry
        var out: [UInt64] = []
        var pos = rec.offset
        let end = rec.offset + rec.length
        while pos < end && pos < g.virtualSize && out.count < ExplainReport.walkLimit {
            out.append(pos)
            pos = g.clusterStart(pos) + g.clusterSize
        }
        return out
    }

    /// Host clusters whose refcount is read before the request: from the free-cluster index on
    /// (where allocations search, §4.2), and every cluster the walked entries and tables name
    /// (what a free or an overwrite would change).
    static func refcountWindow(_ rec: TraceRecord, chain: [Qcow2Image], walk: [UInt64]) -> [UInt64] {
        guard let top = chain.last else { return [] }
        let clusters = top.geometry.clusters(covering: rec.length + top.geometry.clusterSize)
        let width = min(4 * clusters + 64, 4096)
        var ks = Set((0..<width).map { top.freeClusterIndex + $0 })
        for image in chain { ks.formUnion(namedClusters(image: image, walk: walk)) }
        return Array(ks)
    }

    /// Clusters the image's metadata names for the walked offsets: L2 tables, data clusters, and
    /// every refcount block.
    static func namedClusters(image: Qcow2Image, walk: [UInt64]) -> [UInt64] {
        let g = image.geometry
        var ks: [UInt64] = []
        for o in walk where o < g.virtualSize {
            let t = image.inspectTable(o)
            if t != 0 { ks.append(g.hostCluster(t)) }
            if let e = image.inspectEntry(o), e.word & EntryBits.offsetMask != 0, e.word & EntryBits.compressed == 0 {
                ks.append(g.hostCluster(e.word & EntryBits.offsetMask))
            }
        }
        for b in image.reftable where b & EntryBits.reftableOffsetMask != 0 {
            ks.append(g.hostCluster(b & EntryBits.reftableOffsetMask))
        }
        return ks
    }

    // MARK: - The report

    mutating func build() -> ExplainReport {
        var r = ExplainReport(
            trace: trace, request: requestInfo(), images: imageInfos(), walk: [], walkOmitted: 0, operations: [], cow: [],
            cowOutcome: [], refcountChanges: [], tableChanges: [], events: [], listing: [], notes: [])
        r.walk = walk()
        let touched = record.op == .flush || record.length == 0 ? 0 : clustersTouched()
        r.walkOmitted = max(0, touched - r.walk.count)
        r.operations = operations()
        (r.cow, r.cowOutcome) = cowRegions()
        r.refcountChanges = refcountChanges()
        r.tableChanges = tableChanges()
        r.events = observer.allEvents.map { $0.line(includeImage: true) }
        r.listing = compact(observer.allEvents)
        r.notes = notes()
        return r
    }

    static func opName(_ r: TraceRecord) -> String {
        switch r.op {
        case .read: "read"
        case .write: "write"
        case .discard: "discard"
        case .writeZeroes: r.flags.contains(.unmap) ? "write_zeroes_unmap" : "write_zeroes"
        case .flush: "flush"
        }
    }

    func requestInfo() -> ExplainReport.Request {
        let loc: String
        switch location {
        case .line(let n): loc = "line \(n)"
        case .file: loc = ""
        case .record: loc = location.description
        }
        return ExplainReport.Request(
            number: number, op: Self.opName(record), offset: record.offset, length: record.length, location: loc,
            time: record.time)
    }

    func role(_ i: Int) -> String { i == top ? "top" : (i == 0 ? "base" : "backing") }

    func imageInfos() -> [ExplainReport.Image] {
        chain.indices.reversed().map { i in
            let g = chain[i].geometry, z = sizings[i]
            return ExplainReport.Image(
                index: i, role: role(i), virtualSize: g.virtualSize, clusterSize: g.clusterSize, extendedL2: g.extendedL2,
                refcountBits: g.refcountBits, l2CacheEntries: z.l2Entries, l2CacheEntrySize: z.l2EntrySize,
                refcountCacheEntries: z.refcountEntries, refcountCacheEntrySize: z.refcountEntrySize, policy: config.policy)
        }
    }

    func clustersTouched() -> Int {
        let g = chain[top].geometry
        let end = min(record.offset + record.length, g.virtualSize)
        guard end > record.offset else { return 0 }
        return Int(g.hostCluster(end - 1) - g.hostCluster(record.offset) + 1)
    }

    // MARK: Entries

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    static func typeName(_ t: ClusterType) -> String {
        switch t {
        case .unallocated: "unallocated"
        case .zeroPlain: "zero_plain"
        case .zeroAlloc: "zero_alloc"
        case .normal: "normal"
        case .compressed: "compressed"
        }
    }

    static func typeName(_ t: SubclusterType) -> String {
        switch t {
        case .unallocatedPlain: "unallocated_plain"
        case .unallocatedAlloc: "unallocated_alloc"
        case .zeroPlain: "zero_plain"
        case .zeroAlloc: "zero_alloc"
        case .normal: "normal"
        case .compressed: "compressed"
        case .invalid: "invalid"
        }
    }

    static func bits(_ v: UInt64) -> String { String((0..<32).map { v & (1 << UInt64($0)) != 0 ? "1" : "0" }) }

    func l2Entry(_ e: (word: UInt64, bitmap: UInt64), _ g: Geometry) -> ExplainReport.Entry {
        let w = e.word
        return ExplainReport.Entry(
            word: Self.hex(w), copied: w & EntryBits.copied != 0, compressed: w & EntryBits.compressed != 0,
            zeroFlag: !g.extendedL2 && w & EntryBits.zero != 0,
            offset: w & EntryBits.compressed != 0 ? 0 : w & EntryBits.offsetMask,
            type: Self.typeName(g.clusterType(w)), bitmap: g.extendedL2 ? Self.hex(e.bitmap) : nil,
            allocBits: g.extendedL2 ? Self.bits(e.bitmap & EntryBits.allocMask) : nil,
            zeroBits: g.extendedL2 ? Self.bits(e.bitmap >> 32) : nil)
    }

    func l1Entry(_ w: UInt64) -> ExplainReport.Entry {
        ExplainReport.Entry(
            word: Self.hex(w), copied: w & EntryBits.copied != 0, compressed: false, zeroFlag: false,
            offset: w & EntryBits.offsetMask, type: w & EntryBits.offsetMask == 0 ? "no_table" : "table", bitmap: nil,
            allocBits: nil, zeroBits: nil)
    }

    // MARK: Walk

    func walk() -> [ExplainReport.ClusterWalk] {
        let offsets = Self.walkOffsets(record, chain: chain)
        let tg = chain[top].geometry
        return offsets.map { o in
            let to = min(tg.clusterStart(o) + tg.clusterSize, record.offset + record.length)
            var layers: [ExplainReport.Layer] = []
            var k = top
            while k >= 0 {
                let (layer, next) = self.layer(k, from: o, to: to)
                layers.append(layer)
                guard next else { break }
                k -= 1
            }
            return ExplainReport.ClusterWalk(from: o, to: to, layers: layers)
        }
    }

    /// Image `k`'s step of the walk of `[from, to)`; `next` is true when the bytes are not here
    /// and the backing image is visited.
    func layer(_ k: Int, from: UInt64, to: UInt64) -> (ExplainReport.Layer, next: Bool) {
        var (layer, next) = entryLayer(k, from: from, to: to)
        // What a write left in the top image's entry.
        let g = chain[k].geometry
        if k == top, let e = after[k].entries[g.clusterStart(from)] ?? nil, layer.l2EntryAfter != nil,
            g.clusterType(e.word) == .normal
        {
            let host = e.word & EntryBits.offsetMask
            layer.resolution +=
                "; after the request: host offset \(Self.hex(host + g.offsetInCluster(from))) (host cluster \(Self.hex(host)))"
        }
        return (layer, next)
    }

    func entryLayer(_ k: Int, from: UInt64, to: UInt64) -> (ExplainReport.Layer, next: Bool) {
        let image = chain[k]
        let g = image.geometry
        let l1i = g.l1Index(from)
        let span = UInt64(g.l2Entries) << UInt64(g.clusterBits)
        let sliceEntries = Int(sizings[k].l2EntrySize / g.l2EntrySize)
        let l2i = g.l2Index(from)
        var layer = ExplainReport.Layer(
            image: k, guestCluster: g.hostCluster(from), offsetInCluster: g.offsetInCluster(from), l1Index: l1i, l1Span: span,
            l1Entry: l1Entry(0), l1EntryAfter: nil, l2Index: l2i, slice: l2i / sliceEntries, sliceEntries: sliceEntries,
            indexInSlice: l2i % sliceEntries, sliceOffset: nil, l2Entry: nil, l2EntryAfter: nil, subclusters: nil,
            subclusterTypes: nil, resolution: "")
        let hasBacking = k > 0
        let below = hasBacking ? "falls through to image \(k - 1) (the backing file)" : "reads as zeroes (no backing file)"
        guard from < g.virtualSize else {
            layer.resolution = "beyond this image's end (\(Self.hex(g.virtualSize))): reads as zeroes"
            return (layer, false)
        }
        let b = before[k], a = after[k]
        let l1Before = l1i < b.l1.count ? b.l1[l1i] : 0
        let l1After = l1i < a.l1.count ? a.l1[l1i] : 0
        layer.l1Entry = l1Entry(l1Before)
        if l1After != l1Before { layer.l1EntryAfter = l1Entry(l1After) }
        let cs = g.clusterStart(from)
        let eAfter = a.entries[cs] ?? nil
        if let e = eAfter, (b.entries[cs] ?? nil).map({ $0 != e }) ?? true {
            layer.l2EntryAfter = l2Entry(e, g)
        }
        let table = l1Before & EntryBits.offsetMask
        let tableAfter = l1After & EntryBits.offsetMask
        let sliceTable = table != 0 ? table : tableAfter
        if sliceTable != 0 {
            layer.sliceOffset = sliceTable + g.l2EntrySize * UInt64(l2i - l2i % sliceEntries)
        }
        let firstSc = g.subclusterIndex(from), lastSc = g.subclusterIndex(to - 1)
        if g.extendedL2 { layer.subclusters = firstSc == lastSc ? "\(firstSc)" : "\(firstSc)–\(lastSc)" }
        guard table != 0, let e = b.entries[cs] ?? nil else {
            layer.resolution = "no L2 table for this L1 entry: unallocated, " + below
            if g.extendedL2 { layer.subclusterTypes = Array(repeating: "unallocated_plain", count: lastSc - firstSc + 1) }
            return (layer, hasBacking)
        }
        layer.l2Entry = l2Entry(e, g)
        let types = (firstSc...lastSc).map { g.subclusterType(e.word, e.bitmap, $0) }
        if g.extendedL2 { layer.subclusterTypes = types.map(Self.typeName) }
        let t = types[0]
        let mixed = Set(types).count > 1 ? " (the touched subclusters differ: see their types)" : ""
        switch t {
        case .normal:
            let host = e.word & EntryBits.offsetMask
            layer.resolution =
                "data at host offset \(Self.hex(host + g.offsetInCluster(from))) (host cluster \(Self.hex(host)) + \(Self.hex(g.offsetInCluster(from))))"
                + mixed
            return (layer, false)
        case .compressed:
            layer.resolution = "a compressed cluster (decompressed on read)"
            return (layer, false)
        case .zeroPlain, .zeroAlloc:
            layer.resolution = (g.extendedL2 ? "zero bit set" : "zero flag set") + ": reads as zeroes" + mixed
            return (layer, false)
        case .unallocatedPlain, .unallocatedAlloc:
            layer.resolution = "unallocated here: " + below + mixed
            return (layer, hasBacking)
        case .invalid:
            layer.resolution = "invalid entry (a subcluster both allocated and zero): QEMU marks the image corrupt"
            return (layer, false)
        }
    }

    // MARK: Operations

    /// What a table offset is, from the images' metadata after the request.
    func describe(image k: Int, kind: CacheKind, offset: UInt64) -> String {
        let image = chain[k]
        let g = image.geometry
        let a = after[k]
        if kind == .refcount {
            let cluster = g.hostCluster(offset)
            if let t = a.reftable.firstIndex(where: { $0 & EntryBits.reftableOffsetMask == offset }) {
                let first = UInt64(t) << UInt64(g.refblockBits)
                return "refcount block \(t) at \(Self.hex(offset)): host clusters \(first)–\(first + g.refblockEntries - 1)"
            }
            return "refcount block at \(Self.hex(offset)) (host cluster \(cluster))"
        }
        let table = g.clusterStart(offset)
        let sliceBytes = sizings[k].l2EntrySize
        let slice = (offset - table) / sliceBytes
        let slices = g.clusterSize / sliceBytes
        var s = "L2 table \(Self.hex(table))" + (slices > 1 ? " slice \(slice) of \(slices)" : "")
        if let i = a.l1.firstIndex(where: { $0 & EntryBits.offsetMask == table }) {
            let span = UInt64(g.l2Entries) << UInt64(g.clusterBits)
            let sliceSpan = span / slices
            let lo = UInt64(i) * span + slice * sliceSpan
            s += ": guest [\(Self.hex(lo)), \(Self.hex(lo + sliceSpan))) (L1 index \(i))"
        }
        return s
    }

    static func cacheName(_ k: CacheKind) -> String { k == .l2 ? "L2" : "RC" }

    /// The events in the spec's compact notation (qcow2-model.md §16), `[image N]` in a chain.
    func compact(_ events: [CacheEvent]) -> [String] {
        var items: [String] = []
        var i = 0
        let prefix = { (e: CacheEvent) in chain.count > 1 ? "[image \(e.image)] " : "" }
        while i < events.count {
            let e = events[i]
            let c = Self.cacheName(e.isL2 ? .l2 : .refcount)
            switch e.kind {
            case .get:
                let empty = e.readFromDisk ? "" : " empty"
                let same = { (k: Int, kind: CacheEvent.Kind) in
                    k < events.count && events[k].kind == kind && events[k].image == e.image && events[k].isL2 == e.isL2
                }
                if same(i + 1, .getDone) {
                    items.append(prefix(e) + "\(c) get \(Self.hex(e.offset))\(empty) hit \(events[i + 1].index)")
                    i += 2
                    continue
                }
                if same(i + 1, .replaceEntry) {
                    var j = i + 2
                    var inner: [CacheEvent] = []
                    while j < events.count && !same(j, .getRead) {
                        inner.append(events[j])
                        j += 1
                    }
                    let index = events[i + 1].index
                    let braces = inner.isEmpty ? "" : " {" + compact(inner).joined(separator: "; ") + "}"
                    if same(j + 1, .getDone) {
                        items.append(prefix(e) + "\(c) get \(Self.hex(e.offset))\(empty) miss \(index)\(braces)")
                        i = j + 2
                    } else {
                        // A backing task waits in its read: its get_done comes later (§13).
                        items.append(prefix(e) + "\(c) get \(Self.hex(e.offset))\(empty) miss \(index)\(braces) (get_done later)")
                        i = j + 1
                    }
                    continue
                }
                items.append(prefix(e) + e.line(includeImage: false))
            case .getDone: items.append(prefix(e) + "\(c) get_done \(e.index)")
            case .flush: items.append(prefix(e) + "flush \(c)")
            case .entryFlush: items.append(prefix(e) + "wb \(c) \(e.index)")
            default: items.append(prefix(e) + e.line(includeImage: false))
            }
            i += 1
        }
        // `(xN)` for repeats.
        var out: [String] = []
        var n = 0
        for (k, s) in items.enumerated() {
            n += 1
            if k + 1 < items.count && items[k + 1] == s { continue }
            out.append(n > 1 ? "\(s) (x\(n))" : s)
            n = 0
        }
        return out
    }

    func writebacks(_ events: [CacheEvent]) -> [String] {
        events.filter { $0.kind == .entryFlush }.map {
            (chain.count > 1 ? "image \($0.image) " : "") + "\($0.isL2 ? "L2" : "refcount") slot \($0.index)"
        }
    }

    func victim(_ before: CacheState, key: UInt64, slot v: Int, offset: UInt64) -> ExplainReport.Victim {
        let n = before.count
        let start = before.startIndex(key)
        let formula = "(\(Self.hex(key)) / \(before.tableSize) × 4) mod \(n) = \(start)"
        let empties = before.offsets.filter { $0 == 0 }.count
        let pinned = before.pins.filter { $0 > 0 }.count
        var firstEmpty: Int?
        for i in 0..<n where before.offsets[(start + i) % n] == 0 {
            firstEmpty = (start + i) % n
            break
        }
        var qemu: Int?
        for i in 0..<n {
            let j = (start + i) % n
            if before.pins[j] == 0 && (qemu.map { before.stamps[j] < before.stamps[$0] } ?? true) { qemu = j }
        }
        let old = before.offsets[v]
        var reason: String
        if let e = firstEmpty {
            reason =
                start == e
                ? "slot \(e), the start index, is empty: QEMU's scan from there takes it (an empty slot has stamp 0, the smallest)"
                : "the scan starts at slot \(start), which holds a table; slot \(e) is the first empty slot after it (stamp 0, the smallest; ties go to the first visited)"
            if e != v { reason += "; policy \(config.policy) chose slot \(v) instead" }
        } else {
            let unpinned = n - pinned
            let q = qemu ?? v
            reason =
                "no slot is empty; scanning all \(n) slots from slot \(start), slot \(q) has the smallest stamp (\(before.stamps[q])) of the \(unpinned) unpinned ones: the table released longest ago"
                + (pinned > 0 ? " (\(pinned) pinned slot\(pinned == 1 ? "" : "s") skipped)" : "")
                + (n <= 16
                    ? "; stamps in scan order: "
                        + (0..<n).map { i -> String in
                            let j = (start + i) % n
                            return "slot \(j) \(before.pins[j] > 0 ? "pinned" : "\(before.stamps[j])")"
                        }.joined(separator: ", ") : "")
            if q != v {
                reason =
                    "no slot is empty; policy \(config.policy) chose slot \(v) (QEMU's scan would take slot \(q), stamp \(before.stamps[q]))"
            }
        }
        if old != 0 && before.dirty[v] { reason += "; it was dirty, so it is written back before the new table is read" }
        return ExplainReport.Victim(
            startIndex: start, startFormula: formula, slot: v, evictedOffset: old == 0 ? nil : old & ((1 << 56) - 1),
            evictedStamp: old == 0 ? nil : before.stamps[v], evictedDirty: old != 0 && before.dirty[v], emptySlots: empties,
            pinnedSlots: pinned, reason: reason)
    }

    static let missClassNames = ["cold", "evicted", "cleaned", "discarded"]

    func operations() -> [ExplainReport.Operation] {
        var out: [ExplainReport.Operation] = []
        let steps = observer.steps
        var i = 0
        while i < steps.count {
            let s = steps[i]
            let op = s.op
            let image = Int(op.image)
            let cacheName = op.kind == .l2 ? "l2" : "refcount"
            var o = ExplainReport.Operation(
                step: 0, image: image, cache: nil, op: "", offset: nil, table: nil, result: nil, missClass: nil, slot: nil,
                count: 1,
                stampBefore: nil, stampAfter: nil, lruClock: s.after?.lruClock, markedDirty: false, victim: nil, writebacks: [],
                note: "", events: [])
            var events = s.events
            switch op.code {
            case .get, .regetIfDropped:
                if op.code == .regetIfDropped && events.isEmpty {
                    i += 1
                    continue
                }
                let kind: CacheKind = op.code == .get ? op.kind : .refcount
                o.cache = kind == .l2 ? "l2" : "refcount"
                o.op = op.code == .get ? (op.flag != 0 ? "get" : "get_empty") : "reget"
                o.offset = op.offset
                o.table = describe(image: image, kind: kind, offset: op.offset)
                guard let b = s.before, let a = s.after else { break }
                // Hit or miss from the slot state (a backing task's events may be held back).
                let key = a.offsets.first { $0 & ((1 << 56) - 1) == op.offset } ?? op.offset
                let slot = a.slot(of: key) ?? events.last { $0.kind == .getDone }?.index ?? 0
                o.slot = slot
                o.stampBefore = b.stamps[slot]
                if b.slot(of: key) == nil {
                    o.result = "miss"
                    o.victim = victim(b, key: key, slot: slot, offset: op.offset)
                    for (c, name) in zip(0..<4, Self.missClassNames) where a.missClasses[c] > b.missClasses[c] {
                        o.missClass = name
                    }
                } else {
                    o.result = "hit"
                }
                // The GET's own PUT and MARK_DIRTY, when they follow at once.
                var j = i + 1
                while j < steps.count, steps[j].op.image == op.image, steps[j].op.kind == kind,
                    steps[j].op.offset == op.offset,
                    steps[j].op.code == .markDirty || steps[j].op.code == .put
                        || steps[j].op.code == .putHeld
                {
                    if steps[j].op.code == .markDirty { o.markedDirty = true }
                    events += steps[j].events
                    if steps[j].op.code != .markDirty {
                        if let after = steps[j].after, after.pins[slot] == 0 { o.stampAfter = after.stamps[slot] }
                        o.lruClock = steps[j].after?.lruClock
                        j += 1
                        break
                    }
                    j += 1
                }
                i = j - 1
                o.note = getNote(kind: kind, empty: op.code == .get && op.flag == 0, dirty: o.markedDirty, image: image)
            case .repeatGet:
                o.cache = cacheName
                o.op = "get"
                o.offset = op.offset
                o.table = describe(image: image, kind: op.kind, offset: op.offset)
                o.result = "hit"
                o.count = Int(op.count)
                if let b = s.before, let slot = b.slot(of: s.after?.offsets.first { $0 & ((1 << 56) - 1) == op.offset } ?? 0) {
                    o.slot = slot
                    o.stampBefore = b.stamps[slot]
                    if let a = s.after, a.pins[slot] == 0 { o.stampAfter = a.stamps[slot] }
                }
                o.note = getNote(kind: op.kind, empty: false, dirty: false, image: image)
            case .put, .putHeld:
                o.cache = op.code == .put ? cacheName : "refcount"
                o.op = op.code == .put ? "put" : "put_held"
                o.offset = op.offset
                if let b = s.before, let a = s.after,
                    let slot = b.offsets.firstIndex(where: { $0 & ((1 << 56) - 1) == op.offset })
                {
                    o.slot = slot
                    o.stampBefore = b.stamps[slot]
                    if a.pins[slot] == 0 { o.stampAfter = a.stamps[slot] }
                }
                o.note =
                    o.stampAfter != nil
                    ? "PUT: the last user releases the table; its stamp becomes the LRU clock (DocC: the cache algorithm)"
                    : "PUT: one user fewer; the table stays pinned (its stamp is taken when the last user releases it; DocC: the cache algorithm)"
            case .markDirty:
                o.cache = cacheName
                o.op = "mark_dirty"
                o.offset = op.offset
                o.markedDirty = true
                o.note =
                    "MARK_DIRTY: the held table was changed; it must be written back before its slot is reused (DocC: the cache algorithm)"
            case .writeCache:
                o.cache = cacheName
                o.op = "write"
                o.note = writeNote(kind: op.kind, events: events, image: image)
            case .setDependency:
                o.cache = cacheName
                o.op = "set_dependency"
                o.note =
                    op.kind == .l2
                    ? "SET_DEP(L2, refcount): before linking new clusters, L2 slots may be written back only after the refcount cache is flushed (DocC: the cache algorithm)"
                    : "SET_DEP(refcount, L2): a refcount decrease; refcount blocks may be written back only after the L2 cache is flushed (DocC: the cache algorithm)"
                if !events.isEmpty { o.note += "; the other direction was pending, so that cache is flushed now" }
            case .dependsOnFlush:
                o.cache = cacheName
                o.op = "depends_on_flush"
                o.note =
                    "after a copy-on-write: the host file is flushed before the next L2 write-back (no event; DocC: the cache algorithm)"
            case .freeCluster:
                o.cache = "refcount"
                o.op = "free_cluster"
                o.offset = op.offset
                o.note =
                    "host cluster \(Self.hex(op.offset)) reached refcount 0: a cached table at that offset is discarded (DocC: the cache algorithm)"
            case .task:
                if events.isEmpty {
                    i += 1
                    continue
                }
                o.op = "task"
                o.note = "events of a task of the request's task pool (DocC: where QEMU differs)"
            default:
                if events.isEmpty {
                    i += 1
                    continue
                }
                o.op = "held_events"
                o.note = "events of a backing task, printed where QEMU prints them (DocC: where QEMU differs)"
            }
            o.events = compact(events)
            o.writebacks = writebacks(events)
            o.step = out.count + 1
            // Repeated plain hits of one table (refcount probes) are one line.
            if let last = out.last, last.result == "hit", o.result == "hit", last.image == o.image, last.cache == o.cache,
                last.offset == o.offset, last.slot == o.slot, !last.markedDirty, !o.markedDirty, last.op == "get", o.op == "get",
                last.stampAfter != nil, o.stampAfter != nil
            {
                var merged = last
                merged.count += o.count
                merged.stampAfter = o.stampAfter ?? merged.stampAfter
                merged.lruClock = o.lruClock
                merged.events = compact(expandHits(merged, count: merged.count))
                out[out.count - 1] = merged
            } else {
                out.append(o)
            }
            i += 1
        }
        return out
    }

    /// The events of `count` hits of `o`'s table (for a merged line).
    func expandHits(_ o: ExplainReport.Operation, count: Int) -> [CacheEvent] {
        let isL2 = o.cache == "l2"
        let get = CacheEvent(kind: .get, image: o.image, isL2: isL2, offset: o.offset ?? 0)
        let done = CacheEvent(kind: .getDone, image: o.image, isL2: isL2, index: o.slot ?? 0)
        return Array(repeating: [get, done], count: count).flatMap { $0 }
    }

    func getNote(kind: CacheKind, empty: Bool, dirty: Bool, image: Int) -> String {
        let whose = image == top ? "" : " on backing image \(image)"
        if kind == .l2 {
            if empty {
                return
                    "get empty: a slice of a new L2 table, zero-filled instead of read (ALLOCATE_L2; DocC: the allocation path)"
                    + whose
            }
            return dirty
                ? "LOAD_SLICE, then the entries are changed and the slice marked dirty (LINK, or discard / write-zeroes; DocC: the allocation path)"
                    + whose
                : "LOAD_SLICE: the slice holding the entry is looked up and only read (MAP, KEEP_EXISTING / ALLOCATE_NEW, or the zero-COW probe; DocC: the L1/L2 walk, the allocation path)"
                    + whose
        }
        if empty {
            return "get empty: a new refcount block, zero-filled instead of read (REFBLOCK_FOR; DocC: the allocation path)"
                + whose
        }
        return dirty
            ? "UPDATE: the refcount block is looked up, a refcount changed and the block marked dirty (DocC: the allocation path)"
                + whose
            : "GET_REFCOUNT: the refcount of one cluster is read (a FIND_FREE probe, or the one-time preallocation probe; DocC: the allocation path, where QEMU differs)"
                + whose
    }

    func writeNote(kind: CacheKind, events: [CacheEvent], image: Int) -> String {
        let name = kind == .l2 ? "L2" : "refcount"
        let own = events.filter { $0.kind == .entryFlush && $0.isL2 == (kind == .l2) }.map { "\($0.index)" }
        let other = events.contains { $0.kind == .flush && $0.isL2 != (kind == .l2) }
        var s = "WRITE / FLUSH of the \(name) cache: every dirty slot in index order (DocC: the cache algorithm)"
        s +=
            own.isEmpty
            ? "; nothing was dirty" : "; written back: slot\(own.count == 1 ? "" : "s") \(own.joined(separator: ", "))"
        if other {
            s +=
                "; a dirty \(name) slot depended on the \(kind == .l2 ? "refcount" : "L2") cache, so that cache was flushed first, in the middle (DocC: the cache algorithm)"
        }
        return s
    }

    // MARK: COW, refcounts, tables

    func cowRegions() -> ([ExplainReport.CowRegion], [String]) {
        var regions: [ExplainReport.CowRegion] = []
        guard record.op == .write else { return ([], []) }
        let g = chain[top].geometry
        for (cluster, metas) in cow {
            let e = before[top].entries[cluster] ?? nil
            // The subcluster type at the region's edge decides its extent (COW_META).
            func why(_ edge: UInt64, head: Bool) -> String {
                let sc = g.subclusterIndex(edge)
                let t = e.map { g.subclusterType($0.word, $0.bitmap, sc) } ?? .unallocatedPlain
                if g.extendedL2 {
                    return
                        "subcluster \(sc), where the write \(head ? "starts" : "ends"), is \(Self.typeName(t)): copied from the \(head ? "start of its subcluster" : "end of the write to the next subcluster boundary") (\(g.subclusterSize)-byte subclusters)"
                }
                return
                    "the entry is \(Self.typeName(t)): the write needs a new cluster, so its untouched \(head ? "start" : "end") is copied (old data through the read path, or zeroes)"
            }
            for m in metas {
                if m.startBytes > 0 {
                    regions.append(
                        ExplainReport.CowRegion(
                            guestCluster: cluster, part: "head", from: cluster + m.start, to: cluster + m.start + m.startBytes,
                            reason: why(cluster + m.start + m.startBytes, head: true)))
                }
                if m.endBytes > 0 {
                    regions.append(
                        ExplainReport.CowRegion(
                            guestCluster: cluster, part: "tail", from: cluster + m.end, to: cluster + m.end + m.endBytes,
                            reason: why(cluster + m.end - 1, head: false)))
                }
            }
        }
        var outcome: [String] = []
        let sb = before[top].stats, sa = after[top].stats
        let skipped = sa.cowSkipped - sb.cowSkipped
        let read = sa.cowBytesRead - sb.cowBytesRead
        let written = sa.cowBytesWritten - sb.cowBytesWritten
        if regions.isEmpty {
            outcome.append(
                "no copy-on-write: the write covers whole clusters (or subclusters), or overwrites clusters the image owns (DocC: the allocation path)"
            )
        }
        if skipped > 0 {
            outcome.append(
                "the zero-COW probe (block status down the chain; DocC: where QEMU differs, copies may be skipped) found \(skipped == 1 ? "the regions" : "\(skipped) allocations' regions") zero: one host zero-range write instead of a copy (qcow2_skip_cow)"
            )
        }
        if read > 0 {
            outcome.append(
                "copied: \(read) bytes read through this image's read path (MAP, then the backing file where unallocated) and \(written) bytes written (COPY_ON_WRITE; DocC: the allocation path)"
            )
        }
        if !regions.isEmpty && skipped == 0 && read == 0 {
            outcome.append("the regions were neither probed zero nor read")
        }
        return (regions, outcome)
    }

    func refcountChanges() -> [ExplainReport.RefcountChange] {
        var out: [ExplainReport.RefcountChange] = []
        for k in chain.indices {
            let g = chain[k].geometry
            let a = after[k], b = before[k]
            for (cluster, v) in a.refcounts.sorted(by: { $0.key < $1.key }) {
                let old = b.refcounts[cluster] ?? 0
                guard old != v else { continue }
                out.append(
                    ExplainReport.RefcountChange(
                        image: k, cluster: cluster, hostOffset: cluster << UInt64(g.clusterBits), before: old, after: v,
                        what: what(image: k, cluster: cluster)))
            }
        }
        return out
    }

    /// What host cluster `cluster` of image `k` holds after the request.
    func what(image k: Int, cluster: UInt64) -> String {
        let g = chain[k].geometry
        let off = cluster << UInt64(g.clusterBits)
        let a = after[k]
        if let i = a.l1.firstIndex(where: { $0 & EntryBits.offsetMask == off }) { return "L2 table of L1 index \(i)" }
        if let t = a.reftable.firstIndex(where: { $0 & EntryBits.reftableOffsetMask == off }) { return "refcount block \(t)" }
        for (gc, e) in a.entries {
            if let e, e.word & EntryBits.offsetMask == off { return "data of guest cluster \(Self.hex(gc))" }
        }
        for (gc, e) in before[k].entries {
            if let e, e.word & EntryBits.offsetMask == off { return "was data of guest cluster \(Self.hex(gc))" }
        }
        return "host cluster \(cluster)"
    }

    func tableChanges() -> [ExplainReport.TableChange] {
        var out: [ExplainReport.TableChange] = []
        for k in chain.indices {
            let a = after[k], b = before[k]
            for i in 0..<max(a.l1.count, b.l1.count) {
                let x = i < b.l1.count ? b.l1[i] : 0, y = i < a.l1.count ? a.l1[i] : 0
                if x != y {
                    out.append(
                        ExplainReport.TableChange(image: k, table: "l1", index: i, before: Self.hex(x), after: Self.hex(y)))
                }
            }
            for i in 0..<max(a.reftable.count, b.reftable.count) {
                let x = i < b.reftable.count ? b.reftable[i] : 0, y = i < a.reftable.count ? a.reftable[i] : 0
                if x != y {
                    out.append(
                        ExplainReport.TableChange(
                            image: k, table: "refcount_table", index: i, before: Self.hex(x), after: Self.hex(y)))
                }
            }
        }
        return out
    }

    func notes() -> [String] {
        var n: [String] = []
        for k in chain.indices where k < observer.atStart.count && k < observer.beforeStart.count {
            let dl2 = observer.atStart[k].l2.cleaned - observer.beforeStart[k].l2.cleaned
            let drc = observer.atStart[k].rc.cleaned - observer.beforeStart[k].rc.cleaned
            if dl2 + drc > 0 {
                n.append(
                    "the cache-clean timer ran before this request and dropped \(dl2) L2 and \(drc) refcount entr\(dl2 + drc == 1 ? "y" : "ies") of image \(k) (DocC: the cache algorithm)"
                )
            }
        }
        if let first = observer.steps.first(where: { $0.op.code == .task || $0.op.code == .deferBegin }) {
            _ = first
            n.append(
                "QEMU runs this request as a task pool (several segments; DocC: where QEMU differs): the order between its tasks may differ in QEMU; each image's own order is as shown"
            )
        }
        n.append(
            "stamps are QEMU's LRU counters: a slot's stamp is the cache's clock when its last user released it (DocC: the cache algorithm); the victim of a miss is the first empty slot, else the unpinned slot with the smallest stamp, scanning from the start index (DocC: the cache algorithm)"
        )
        return n
    }
}

import Foundation

/// Per-volume counts of a trace, from one pass over records tagged with their volumes
/// (``TraceOptions/tagVolumes``): what `trace info` lists and what `--per-volume` sizes each
/// volume's disk from.
///
/// The footprint is counted two ways: ``Volume/maxEnd``, the highest request end (what a
/// virtual disk must hold), and ``Volume/footprintBytes``, the distinct bytes data requests
/// touched (reads, writes, discards, write-zeroes; ranges merged, so memory follows the number
/// of distinct requests). The second is kept only when asked (`footprint: true`).
public struct VolumeIndex: Sendable {
    /// One volume's counts.
    public struct Volume: Sendable, Equatable {
        /// The volume's name, as `--device` takes it.
        public var name: String
        /// Records (every op, flushes included).
        public var records = 0
        /// Reads.
        public var reads = 0
        /// Writes (not write-zeroes).
        public var writes = 0
        /// Discards, write-zeroes and flushes.
        public var others = 0
        /// The earliest and latest timestamps (as the reader delivered them), nil without times.
        public var firstTime: Double?
        /// The latest timestamp.
        public var lastTime: Double?
        /// Highest request end (offset + length) + 0, in bytes.
        public var maxEnd: UInt64 = 0
        /// Distinct bytes touched by data requests (nil when the index was built without it).
        public var footprintBytes: UInt64?
    }

    private var byID: [Volume] = []
    private var footprints: [IntervalSet] = []
    private let footprint: Bool
    private var last: UInt32 = 0
    private var closed: Set<UInt32> = []
    /// Records without a volume (a format without a volume field).
    public private(set) var untagged = 0
    /// Whether every volume's records came as one contiguous run (the trace is grouped by
    /// volume), so a per-volume run needs only one volume resident at a time.
    public private(set) var grouped = true

    /// An empty index; `footprint` keeps the distinct-byte footprint per volume.
    public init(footprint: Bool) {
        self.footprint = footprint
    }

    /// Adds one record whose volume `names` names (``AnyTraceReader/volumeNames``).
    public mutating func add(_ r: TraceRecord, names: [String]) {
        let id = r.volume
        guard id != 0 else {
            untagged += 1
            return
        }
        if id != last {
            if last != 0 { closed.insert(last) }
            if closed.contains(id) { grouped = false }
            last = id
        }
        let k = Int(id) - 1
        while byID.count <= k {
            byID.append(Volume(name: names[byID.count]))
            if footprint { footprints.append(IntervalSet()) }
        }
        var v = byID[k]
        v.records += 1
        switch r.op {
        case .read: v.reads += 1
        case .write: v.writes += 1
        default: v.others += 1
        }
        if let t = r.time {
            v.firstTime = Swift.min(v.firstTime ?? t, t)
            v.lastTime = Swift.max(v.lastTime ?? t, t)
        }
        if r.op != .flush && r.length > 0 {
            let (sum, overflow) = r.offset.addingReportingOverflow(r.length)
            let end = overflow ? UInt64.max : sum
            v.maxEnd = Swift.max(v.maxEnd, end)
            if footprint { footprints[k].insert(r.offset..<end) }
        }
        byID[k] = v
    }

    /// The volumes in per-volume order (``VolumeTable/sorted(_:)``), footprints filled in.
    public var volumes: [Volume] {
        let order = VolumeTable.sorted(byID.map(\.name))
        var at: [String: Int] = [:]
        for (k, v) in byID.enumerated() { at[v.name] = k }
        // A volume interned but left without records (all dropped by --beyond clip) is not listed.
        return order.compactMap { name in
            guard let k = at[name], byID[k].records > 0 else { return nil }
            var v = byID[k]
            if footprint { v.footprintBytes = footprints[k].count }
            return v
        }
    }

    /// Reads `reader` to the end into an index.
    public static func build(_ reader: inout AnyTraceReader, footprint: Bool) throws -> VolumeIndex {
        var index = VolumeIndex(footprint: footprint)
        while let r = try reader.next() {
            if r.volume != 0 && Int(r.volume) > index.byID.count {
                index.add(r, names: reader.volumeNames)
            } else {
                index.add(r, names: [])
            }
        }
        return index
    }

    /// The table `trace info` prints: one line per volume.
    public func text() -> String {
        let vs = volumes
        var s = "volumes        \(vs.count) (records per volume, time span, highest request end, distinct bytes touched)\n"
        let w = max(6, vs.map(\.name.count).max() ?? 0)
        func pad(_ x: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - x.count)) + x }
        s += "  " + pad("volume", w) + "  " + pad("records", 9) + "  " + pad("reads", 9) + "  " + pad("writes", 9) + "  "
            + pad("first_time", 14) + "  " + pad("last_time", 14) + "  " + pad("max_end", 16) + "  " + pad("footprint", 16) + "\n"
        for v in vs {
            s += "  " + pad(v.name, w) + "  " + pad("\(v.records)", 9) + "  " + pad("\(v.reads)", 9) + "  " + pad("\(v.writes)", 9)
                + "  " + pad(Self.number(v.firstTime), 14) + "  " + pad(Self.number(v.lastTime), 14) + "  "
                + pad("\(v.maxEnd)", 16) + "  " + pad(v.footprintBytes.map { "\($0)" } ?? "-", 16) + "\n"
        }
        return s
    }

    /// The volumes as a JSON array (one object per volume, in per-volume order).
    public func jsonArray(indent: String) -> String {
        let rows = volumes.map { v in
            "\(indent)  {\"volume\": \(jsonQuoted(v.name)), \"records\": \(v.records), \"reads\": \(v.reads), \"writes\": \(v.writes), "
                + "\"first_time\": \(Self.number(v.firstTime, null: "null")), \"last_time\": \(Self.number(v.lastTime, null: "null")), "
                + "\"max_offset_end\": \(v.maxEnd), \"footprint_bytes\": \(v.footprintBytes.map { "\($0)" } ?? "null")}"
        }
        return rows.isEmpty ? "[]" : "[\n" + rows.joined(separator: ",\n") + "\n\(indent)]"
    }

    static func number(_ d: Double?, null: String = "-") -> String {
        guard let d else { return null }
        return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
    }
}

/// `s` as a JSON string literal (also `SweepOutput.jsonString`'s, for every JSON the tool writes
/// by hand).
public func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// QEMU's own trace log (the `log` backend, `-trace 'blk_co_*'` or qemu-io `-T 'blk_co_*'`):
/// the requests a BlockBackend received from the guest, before any image format saw them.
///
/// ```
/// 4242@1700000000.123456:blk_co_pwritev blk 0x55… bs 0x55… offset 0 bytes 4096 flags 0x2
/// blk_co_preadv blk 0x55… bs 0x55… offset 0 bytes 512 flags 0x0
/// ```
///
/// The `PID@SECONDS:` prefix appears with `-msg timestamp=on` style logging and gives the time.
/// QEMU 7.2 (`block/trace-events`) defines only `blk_co_preadv` and `blk_co_pwritev` at this
/// layer; a write-zeroes request is `blk_co_pwritev` with `BDRV_REQ_ZERO_WRITE` (0x2) in flags,
/// `BDRV_REQ_MAY_UNMAP` (0x4) and `BDRV_REQ_FUA` (0x10) give `.unmap` and `.fua`. Later QEMUs'
/// `blk_co_pdiscard` and `blk_co_flush` lines are accepted in the same key/value shape. Lines of
/// other events and other output are skipped. ``TraceOptions/device`` keeps one `blk` pointer.
struct QemuTraceLogFormat: LineFormat {
    static let separator: UInt8? = nil
    private let blk: [UInt8]?

    init(options: TraceOptions) throws {
        blk = options.device.map { Array($0.lowercased().utf8) }
    }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        guard f.count >= 1 else { return nil }
        var name = f.fields[0]
        var time: Double?
        // Optional `PID@SEC.USEC:` prefix glued to the event name.
        if let colon = f.p[name].lastIndex(of: UInt8(ascii: ":")) {
            if let at = f.p[name.lowerBound..<colon].firstIndex(of: UInt8(ascii: "@")),
                case .value(let t) = Scan.decimal(f.p, (at + 1)..<colon)
            {
                time = t
            }
            name = (colon + 1)..<name.upperBound
        }
        let op: TraceRecord.Op
        if Scan.equalsIgnoringCase(f.p, name, "blk_co_preadv") {
            op = .read
        } else if Scan.equalsIgnoringCase(f.p, name, "blk_co_pwritev") {
            op = .write
        } else if Scan.equalsIgnoringCase(f.p, name, "blk_co_pdiscard") {
            op = .discard
        } else if Scan.equalsIgnoringCase(f.p, name, "blk_co_flush") {
            op = .flush
        } else {
            return nil
        }
        var offset: UInt64?
        var bytes: UInt64?
        var flagBits: UInt64 = 0
        var i = 1
        while i + 1 < f.count {
            let key = f.fields[i]
            let v = i + 1
            if Scan.equalsIgnoringCase(f.p, key, "offset") {
                offset = try f.unsigned(v, "offset")
            } else if Scan.equalsIgnoringCase(f.p, key, "bytes") {
                bytes = try f.unsigned(v, "bytes")
            } else if Scan.equalsIgnoringCase(f.p, key, "flags") {
                flagBits = try f.hex(v, "flags")
            } else if Scan.equalsIgnoringCase(f.p, key, "blk"), let blk {
                let r = f.fields[v]
                guard r.count == blk.count, zip(f.p[r], blk).allSatisfy({ ($0 | 0x20) == ($1 | 0x20) }) else { return nil }
            }
            i += 2
        }
        if op == .flush { return TraceRecord(time: time, op: .flush, offset: 0, length: 0) }
        guard let offset else { throw f.error("'\(Scan.text(f.p, name))' has no 'offset N' field") }
        guard let bytes else { throw f.error("'\(Scan.text(f.p, name))' has no 'bytes N' field") }
        try f.checkEnd(offset, bytes)
        var flags: TraceRecord.Flags = []
        if flagBits & 0x10 != 0 { flags.insert(.fua) }
        if flagBits & 0x4 != 0 { flags.insert(.unmap) }
        let kind: TraceRecord.Op = op == .write && flagBits & 0x2 != 0 ? .writeZeroes : op
        return TraceRecord(time: time, op: kind, offset: offset, length: bytes, flags: flags)
    }

    /// The `blk` pointer (lowercased, as `--device` compares it); 0 for an event without one.
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        var i = 1
        while i + 1 < f.count {
            if Scan.equalsIgnoringCase(f.p, f.fields[i], "blk") {
                return table.intern(text: f.p[f.fields[i + 1]].map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 })
            }
            i += 2
        }
        return 0
    }
}

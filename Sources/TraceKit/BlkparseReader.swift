/// Reads blkparse's default text output (`blkparse -i dev -o out.txt`), one event per line:
///
/// ```
/// 259,0    1        6     0.000001676 21279  D  RA 2348060440 + 8 [(null)]
/// ```
///
/// Fields: `MAJ,MIN CPU SEQ SECONDS PID ACTION RWBS [SECTOR + SECTORS] …`. The same selection
/// rules as ``BlktraceReader`` apply (one record per I/O at the chosen action, requeues
/// de-duplicated, `A` remaps applied, device filter). RWBS follows blkparse's `fill_rwbs`: an
/// optional leading `F` (flush), then `D` discard, `W` write, `R` read or `N` none, then `F` for
/// FUA. Reading stops cleanly at the per-CPU summary block (`CPU1 (259,0):`) that follows the
/// events.
public struct BlkparseReader: TraceReader {
    private var scanner: LineScanner
    private var words: [Range<Int>] = []
    private let selected: UInt8
    private let deviceFilter: UInt32?
    private var partitionOffset: [UInt32: (disk: UInt32, delta: Int64)] = [:]
    /// Where records' volumes are interned (nil: records are not tagged): the whole disk
    /// (`MAJ,MIN` after remapping), as `--device` names it.
    var volumes: VolumeTable?
    /// The device of the event being processed.
    private var lastDevice: UInt32 = 0
    private var requeued: Set<Key> = []
    private var emitted = 0
    private var finished = false
    private var line = 0
    /// The file name used in error messages.
    public let fileName: String

    private struct Key: Hashable {
        var device: UInt32
        var sector: UInt64
    }

    init(input: ByteInput, options: TraceOptions) throws {
        scanner = LineScanner(input)
        fileName = input.fileName
        selected = options.event.rawValue.utf8.first ?? UInt8(ascii: "D")
        deviceFilter = try Blktrace.deviceFilter(options)
        words.reserveCapacity(16)
    }

    /// Reads text already in memory.
    public init(bytes: [UInt8], fileName: String = "<memory>", options: TraceOptions = TraceOptions()) throws {
        try self.init(input: ByteInput(bytes: bytes, fileName: fileName), options: options)
    }

    /// `.line(n)` of the last record.
    public var location: TraceLocation { .line(line) }

    private func error(_ m: String) -> TraceError {
        TraceError(file: fileName, location: .line(scanner.lineNumber), message: m)
    }

    /// The next request, or `nil` at the summary block or end of input.
    public mutating func next() throws -> TraceRecord? {
        while !finished, let range = try scanner.nextLine() {
            let parsed = try scanner.input.buffer.withUnsafeBufferPointer { p in try parse(p, range) }
            if var rec = parsed {
                if let volumes {
                    let d = lastDevice
                    rec.volume = volumes.intern(key: UInt64(d)) { Blktrace.deviceName(d) }
                }
                emitted += 1
                line = scanner.lineNumber
                return rec
            }
        }
        finished = true
        if emitted == 0 {
            if scanner.lineNumber == 0 { throw TraceError(file: fileName, location: .file, message: "empty trace (no records)") }
            throw TraceError(
                file: fileName, location: .file,
                message: "no '\(Character(Unicode.Scalar(selected)))' events in the trace (try --event Q, D or C)")
        }
        return nil
    }

    @inline(__always)
    private mutating func parse(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) throws -> TraceRecord? {
        if Scan.isBlankOrComment(p, range) { return nil }
        if let bad = Scan.firstBinaryByte(p, range) {
            throw error(
                String(
                    format: "binary data in a text trace (byte 0x%02x at column %d); use --trace-format to pick the right format",
                    p[bad], bad - range.lowerBound + 1))
        }
        Scan.words(p, range, into: &words)
        let first = words[0]
        if Scan.hasPrefix(p, first, "CPU") || Scan.hasPrefix(p, first, "Total") {
            finished = true
            return nil
        }
        guard words.count >= 7, let comma = p[first].firstIndex(of: UInt8(ascii: ",")) else {
            throw error(
                "expected a blkparse event 'MAJ,MIN CPU SEQ TIME PID ACTION RWBS ...', found '\(Scan.text(p, Scan.trim(p, range)))'"
            )
        }
        let dev: UInt32
        switch (Scan.unsigned(p, first.lowerBound..<comma), Scan.unsigned(p, (comma + 1)..<first.upperBound)) {
        case (.value(let ma), .value(let mi)) where ma < 4096 && mi < (1 << 20): dev = UInt32(ma) << 20 | UInt32(mi)
        default: throw error("invalid device '\(Scan.text(p, first))' (expected MAJOR,MINOR)")
        }
        let action = words[5]
        guard action.count <= 2 else {
            throw error("invalid action '\(Scan.text(p, action))' (expected a blkparse action letter such as Q, D or C)")
        }
        let a = p[action.lowerBound]
        let isRemap = a == UInt8(ascii: "A") && action.count == 1
        let isRequeue = a == UInt8(ascii: "R") && action.count == 1
        guard (a == selected && action.count == 1) || isRemap || isRequeue else { return nil }
        // Sector and size: `SECTOR + SECTORS` right after RWBS (absent for data-less requests).
        var sector: UInt64 = 0
        var sectors: UInt64 = 0
        if words.count >= 10 && p[words[8].lowerBound] == UInt8(ascii: "+") && words[8].count == 1 {
            guard case .value(let s) = Scan.unsigned(p, words[7]) else {
                throw error("invalid sector '\(Scan.text(p, words[7]))' (expected a decimal sector number)")
            }
            guard case .value(let n) = Scan.unsigned(p, words[9]), n < (1 << 40) else {
                throw error("invalid sector count '\(Scan.text(p, words[9]))' (expected a decimal number of sectors)")
            }
            sector = s
            sectors = n
        }
        var device = dev
        if isRemap {
            // `A  RA 2348060440 + 8 <- (259,3) 2345510680`
            if words.count >= 13, words[11].count >= 5, p[words[11].lowerBound] == UInt8(ascii: "("),
                p[words[11].upperBound - 1] == UInt8(ascii: ")"),
                let c = p[(words[11].lowerBound + 1)..<(words[11].upperBound - 1)].firstIndex(of: UInt8(ascii: ",")),
                case .value(let ma) = Scan.unsigned(p, (words[11].lowerBound + 1)..<c),
                case .value(let mi) = Scan.unsigned(p, (c + 1)..<(words[11].upperBound - 1)),
                case .value(let from) = Scan.unsigned(p, words[12]), ma < 4096, mi < (1 << 20)
            {
                let fromDev = UInt32(ma) << 20 | UInt32(mi)
                if fromDev != dev { partitionOffset[fromDev] = (dev, Int64(bitPattern: sector &- from)) }
            }
            return nil
        }
        if !partitionOffset.isEmpty, let m = partitionOffset[device] {
            device = m.disk
            sector = UInt64(bitPattern: Int64(bitPattern: sector) &+ m.delta)
        }
        if isRequeue {
            if selected != UInt8(ascii: "Q") { requeued.insert(Key(device: device, sector: sector)) }
            if a != selected { return nil }
        }
        lastDevice = device
        if let f = deviceFilter, f != device && f != dev { return nil }
        if selected == UInt8(ascii: "D") && !requeued.isEmpty, requeued.remove(Key(device: device, sector: sector)) != nil {
            return nil
        }
        let time: Double
        switch Scan.decimal(p, words[3]) {
        case .value(let t): time = t
        case .negative: throw error("time '\(Scan.text(p, words[3]))' is negative")
        case .invalid: throw error("invalid time '\(Scan.text(p, words[3]))' (expected seconds as a decimal number)")
        }
        // RWBS per blkparse fill_rwbs: [F] (D|W|R|N) [F] [A] [S] [M]
        let rwbs = words[6]
        var i = rwbs.lowerBound
        var flush = false
        if i < rwbs.upperBound && p[i] == UInt8(ascii: "F") { flush = true; i += 1 }
        guard i < rwbs.upperBound else {
            if flush { return TraceRecord(time: time, op: .flush, offset: 0, length: 0) }
            throw error("invalid rwbs '\(Scan.text(p, rwbs))' (expected R, W, D or N with optional F, A, S, M)")
        }
        let kind = p[i]
        i += 1
        var flags: TraceRecord.Flags = []
        if i < rwbs.upperBound && p[i] == UInt8(ascii: "F") { flags.insert(.fua) }
        let length = sectors &* 512
        let op: TraceRecord.Op
        switch kind {
        case UInt8(ascii: "D"): op = .discard
        case UInt8(ascii: "W"):
            if flush && length == 0 { return TraceRecord(time: time, op: .flush, offset: 0, length: 0, flags: flags) }
            if flush { flags.insert(.preflush) }
            op = .write
        case UInt8(ascii: "R"): op = .read
        case UInt8(ascii: "N"):
            if flush { return TraceRecord(time: time, op: .flush, offset: 0, length: 0, flags: flags) }
            return nil
        default:
            throw error("invalid rwbs '\(Scan.text(p, rwbs))' (expected R, W, D or N with optional F, A, S, M)")
        }
        // A sector past 2^55 (or a partition offset that wrapped it) has no byte offset.
        let (offset, o) = sector.multipliedReportingOverflow(by: 512)
        if o { throw error("offset of sector \(sector) overflows 64 bits") }
        if offset.addingReportingOverflow(length).overflow {
            throw error("request at offset \(offset) with length \(length) ends beyond 2^64 bytes")
        }
        return TraceRecord(time: time, op: op, offset: offset, length: length, flags: flags)
    }
}

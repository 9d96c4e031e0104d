/// fio iolog, versions 2 and 3 (`write_iolog=` / `read_iolog=`), whitespace-separated:
///
/// - v2 (`fio version 2 iolog`): `FILE ACTION [OFFSET LENGTH]`; `FILE wait USEC` delays the
///   following requests, which is how v2 carries time.
/// - v3 (`fio version 3 iolog`): `USEC FILE ACTION [OFFSET LENGTH]`, microseconds since the
///   start of the run.
///
/// Actions `read`, `write`, `trim` (discard), `sync`/`datasync` (flush) become records;
/// `add`, `open`, `close` are skipped. ``TraceOptions/device`` keeps one file's requests.
struct FioIologFormat: LineFormat {
    static let separator: UInt8? = nil
    private var version = 0
    private var waited: UInt64 = 0
    private let file: [UInt8]?

    init(options: TraceOptions) throws {
        file = options.device.map { Array($0.utf8) }
    }

    mutating func isHeader(_ f: inout FieldCursor) -> Bool { false }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        if version == 0 {
            guard f.count == 4, f.equals(0, "fio"), f.equals(1, "version"), f.equals(3, "iolog") else {
                throw f.error(
                    "expected the header 'fio version 2 iolog' or 'fio version 3 iolog', found '\(Scan.text(f.p, Scan.trim(f.p, f.whole)))'"
                )
            }
            if f.equals(2, "2") {
                version = 2
            } else if f.equals(2, "3") {
                version = 3
            } else {
                throw f.error("unsupported fio iolog version '\(f.text(2))' (expected 2 or 3)")
            }
            return nil
        }
        let base = version == 3 ? 1 : 0
        guard f.count >= base + 2 else {
            throw f.error(
                "expected \(version == 3 ? "TIME FILE ACTION" : "FILE ACTION") [OFFSET LENGTH], found \(f.count) fields")
        }
        let time: Double?
        if version == 3 {
            time = Double(try f.unsigned(0, "timestamp")) / 1e6
        } else {
            time = Double(waited) / 1e6
        }
        let act = base + 1
        if let file {
            let r = f.fields[base]
            guard r.count == file.count, zip(f.p[r], file).allSatisfy({ $0 == $1 }) else { return nil }
        }
        let op: TraceRecord.Op
        if f.equals(act, "read") {
            op = .read
        } else if f.equals(act, "write") {
            op = .write
        } else if f.equals(act, "trim") {
            op = .discard
        } else if f.equals(act, "sync") || f.equals(act, "datasync") {
            return TraceRecord(time: time, op: .flush, offset: 0, length: 0)
        } else if f.equals(act, "wait") && version == 2 {
            guard f.count >= 3 else { throw f.error("expected FILE wait USEC, found \(f.count) fields") }
            let (v, o) = waited.addingReportingOverflow(try f.unsigned(2, "wait"))
            if o { throw f.error("wait '\(f.text(2))' overflows 64 bits") }
            waited = v
            return nil
        } else if f.equals(act, "add") || f.equals(act, "open") || f.equals(act, "close") {
            return nil
        } else {
            throw f.error(
                "invalid action '\(f.text(act))' (expected read, write, trim, sync, datasync, wait, add, open or close)")
        }
        guard f.count == act + 3 else {
            throw f.error("expected \(act + 3) fields for '\(f.text(act))', found \(f.count)")
        }
        let offset = try f.bytes(act + 1, "offset")
        let length = try f.bytes(act + 2, "length")
        try f.checkEnd(offset, length)
        return TraceRecord(time: time, op: op, offset: offset, length: length)
    }

    /// The file name, as `--device` takes it.
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        table.intern(text: f.p[f.fields[version == 3 ? 1 : 0]])
    }
}

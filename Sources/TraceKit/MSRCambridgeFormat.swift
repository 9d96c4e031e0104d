/// MSR Cambridge (SNIA IOTTA) CSV, no header:
/// `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime` with Timestamp in Windows
/// FILETIME (100 ns ticks since 1601), Type `Read` or `Write`, Offset and Size in bytes.
/// ``TraceOptions/device`` selects `HOST` or `HOST:DISK`. Times are reported relative to the
/// first selected row, subtracted in integer ticks so no precision is lost to the 1.3·10¹⁷
/// epoch; that row's reading is ``timeOrigin`` (the mapping stage rebases or adds it back).
struct MSRCambridgeFormat: LineFormat {
    static let separator: UInt8? = UInt8(ascii: ",")
    private let host: [UInt8]?
    private let disk: UInt64?
    private var originTicks: UInt64?
    private(set) var timeOrigin = TraceTimeOrigin.zero

    init(options: TraceOptions) throws {
        if let d = options.device {
            let parts = d.split(separator: ":", omittingEmptySubsequences: false)
            host = Array(parts[0].utf8)
            if parts.count == 2, let n = UInt64(parts[1]) {
                disk = n
            } else if parts.count == 1 {
                disk = nil
            } else {
                throw TraceError(
                    file: "--device", location: .file,
                    message: "invalid device '\(d)' (expected HOST or HOST:DISK such as hm:0)", exitCode: 64)
            }
        } else {
            host = nil
            disk = nil
        }
    }

    func isHeader(_ f: inout FieldCursor) -> Bool { f.count >= 1 && f.equals(0, "Timestamp") }

    mutating func record(_ f: inout FieldCursor) throws -> TraceRecord? {
        try f.expectFields(7...7, "Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime")
        let ticks = try f.unsigned(0, "timestamp")
        let diskNumber = try f.unsigned(2, "disk number")
        let op: TraceRecord.Op
        if f.equals(3, "Read") {
            op = .read
        } else if f.equals(3, "Write") {
            op = .write
        } else {
            throw f.error("invalid type '\(f.text(3))' (expected Read or Write)")
        }
        let offset = try f.bytes(4, "offset")
        let size = try f.bytes(5, "size")
        try f.checkEnd(offset, size)
        if let host {
            let r = f.fields[1]
            guard r.count == host.count, zip(f.p[r], host).allSatisfy({ $0 == $1 }) else { return nil }
            if let disk, disk != diskNumber { return nil }
        }
        let origin = originTicks ?? ticks
        if originTicks == nil {
            originTicks = ticks
            timeOrigin = TraceTimeOrigin(ticks: ticks, ticksPerSecond: 10_000_000)
        }
        // A Double of ~1.3·10¹⁷ ticks steps by 16 ticks; the difference of two readings is exact.
        let delta = ticks >= origin ? Double(ticks - origin) : -Double(origin - ticks)
        return TraceRecord(time: delta / 1e7, op: op, offset: offset, length: size)
    }

    /// `HOST:DISK`, as `--device` takes it.
    func volume(_ f: inout FieldCursor, _ table: VolumeTable) -> UInt32 {
        var name = Array(f.p[f.fields[1]])
        name.append(UInt8(ascii: ":"))
        guard case .value(let n) = Scan.unsigned(f.p, f.fields[2]) else { return 0 }
        name += Array(String(n).utf8)
        return table.intern(text: name)
    }
}

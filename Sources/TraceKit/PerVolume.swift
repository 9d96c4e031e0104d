import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One volume of a multi-volume trace as a unit of work for `--per-volume` runs: its name, the
/// virtual size its disk gets, and its records, in the order and with the times `--device NAME`
/// would give them.
public struct VolumeWork: Sendable {
    /// The volume's name (what `--device` takes).
    public let name: String
    /// The virtual disk size, bytes.
    public let size: UInt64
    /// The trace file the records came from (error messages name it, with the record's line).
    public let fileName: String
    /// Records of this volume.
    public var count: Int { records.count }
    let records: VolumeRecords

    /// A fresh reader over the volume's records (each call starts again from the first).
    public func reader() throws -> VolumeReader { try VolumeReader(records, fileName: fileName) }
}

/// How each volume's virtual size is chosen.
public enum VolumeSizing: Sendable {
    /// The volume's highest request end rounded up to `cluster` bytes (at least one cluster).
    case highestEnd(cluster: UInt64)
    /// The same size for every volume (`--size`).
    case uniform(UInt64)
    /// From a `--volume-sizes` file; a volume the file does not list is an error.
    case table(VolumeSizeTable)
}

/// A `--volume-sizes` file: CSV lines `volume,size` (size in bytes, K/M/G/T suffixes; an
/// optional `volume,size` header, `#` comments and blank lines).
public struct VolumeSizeTable: Sendable {
    /// The file as given.
    public let file: String
    /// Sizes by volume name.
    public let sizes: [String: UInt64]

    /// Parses `text` read from `file`; errors are located at their line (exit 65).
    public init(text: String, file: String) throws {
        self.file = file
        var sizes: [String: UInt64] = [:]
        var firstLine: [String: Int] = [:]
        var sawContent = false
        // `\r\n` is one Character (a newline), so CRLF lines split like LF ones.
        for (k, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let n = k + 1
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            func fail(_ m: String) -> TraceError { TraceError(file: file, location: .line(n), message: m) }
            guard fields.count == 2 else {
                throw fail("expected 2 fields (volume,size), found \(fields.count)")
            }
            if !sawContent {
                sawContent = true
                if fields[0].lowercased() == "volume" && fields[1].lowercased() == "size" { continue }
            }
            guard !fields[0].isEmpty else { throw fail("empty volume name") }
            guard let size = ByteCount.parse(fields[1]) else {
                throw fail("invalid size '\(fields[1])' (expected bytes, optionally with a K, M, G or T suffix)")
            }
            guard size > 0, size % 512 == 0 else {
                throw fail("invalid size '\(fields[1])' for volume '\(fields[0])' (expected a positive multiple of 512 bytes)")
            }
            if let first = firstLine[fields[0]] {
                throw fail("volume '\(fields[0])' listed again (first on line \(first))")
            }
            firstLine[fields[0]] = n
            sizes[fields[0]] = size
        }
        guard !sizes.isEmpty else { throw TraceError(file: file, location: .file, message: "no volume sizes (expected volume,size lines)") }
        self.sizes = sizes
    }

    /// Reads and parses `path` (exit 66 when it cannot be read).
    public static func load(_ path: String) throws -> VolumeSizeTable {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot read" : "No such file or directory"
            throw TraceError(file: path, location: .file, message: "cannot open: \(reason)", exitCode: 66)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TraceError(file: path, location: .file, message: "not UTF-8 text (expected volume,size lines)")
        }
        return try VolumeSizeTable(text: text, file: path)
    }
}

/// Splits a multi-volume trace into per-volume work and runs it on worker threads.
///
/// One pass over the trace when it is grouped by volume (each volume's records contiguous, as
/// `generate --volumes` writes them): a volume's records are held in memory from its first
/// record to its last, then handed to a worker, and at most `jobs + 1` volumes are resident.
/// A trace whose volumes interleave (the public cloud traces) is detected at the first record
/// of a volume that already ended; it is then read again from the start and demultiplexed into
/// one spill file per volume in `directory` (48 bytes a record, removed at the end), so memory
/// stays at 64 KiB of buffer per volume plus the volumes being run, whatever the trace length.
///
/// Per volume, records come in the mapped order (the reorder window works over the whole
/// trace) and times are rebased to the volume's first record, as `--device NAME` rebases them,
/// so each volume's run equals `simulate --device NAME --size SIZE`. A volume's result never
/// depends on which other volumes ran, or on `jobs`; results come back sorted by volume
/// (``VolumeTable/sorted(_:)``), the deterministic list of work units a shard can split.
public enum PerVolume {
    /// Runs `work` on every volume of `path`; returns (volume name, result) sorted by volume.
    /// `started(n)` is told the number of volumes once it is known (spill mode) or as each is
    /// dispatched (grouped mode, with n = 0).
    public static func run<Result: Sendable>(
        path: String, format: TraceFormat?, options: TraceOptions, sizing: VolumeSizing, jobs: Int,
        directory: String = NSTemporaryDirectory(), work: @escaping @Sendable (VolumeWork) throws -> Result
    ) throws -> [(name: String, result: Result)] {
        if let grouped = try runGrouped(path: path, format: format, options: options, sizing: sizing, jobs: jobs, work: work) {
            return grouped
        }
        return try runSpilled(
            path: path, format: format, options: options, sizing: sizing, jobs: jobs, directory: directory, work: work)
    }

    /// The demultiplexing reader: tagged, absolute times (each volume is rebased on its own).
    static func open(path: String, format: TraceFormat?, options: TraceOptions) throws -> (AnyTraceReader, Rebase) {
        var o = options
        o.tagVolumes = true
        o.rebaseTime = false
        o.timeScale = 1
        let reader = try TraceFile.open(path: path, format: format, options: o)
        let rebase = Rebase(on: options.rebaseTime ?? reader.format.hasAbsoluteTime, scale: options.timeScale)
        return (reader, rebase)
    }

    /// A volume's clock, as the mapping stage would set it had only that volume been selected.
    struct Rebase {
        let on: Bool
        let scale: Double
        @inline(__always)
        func apply(_ t: Double, first: Double) -> Double {
            on ? (t - first) * scale : (scale != 1 ? t * scale : t)
        }
    }

    static func noVolume(_ reader: AnyTraceReader) -> TraceError {
        let why =
            reader.format.isNative
            ? "this native trace has no volume column (time,op,offset,length,volume)"
            : "\(reader.format.rawValue) traces carry no volume field"
        return TraceError(
            file: reader.fileName, location: reader.location,
            message:
                "record without a volume: \(why), and --per-volume needs one (formats with volumes: tencent, alibaba, msr, systor, spc, fio, native with a volume column)"
        )
    }

    static func size(of name: String, maxEnd: UInt64, sizing: VolumeSizing, trace: String) throws -> UInt64 {
        switch sizing {
        case .uniform(let s): return s
        case .table(let t):
            guard let s = t.sizes[name] else {
                throw TraceError(
                    file: t.file, location: .file, message: "no size for volume '\(name)', which \(trace) has records for")
            }
            return s
        case .highestEnd(let cluster):
            let rounded = maxEnd / cluster * cluster + (maxEnd % cluster == 0 ? 0 : cluster)
            return max(cluster, rounded)
        }
    }

    private static func runGrouped<Result: Sendable>(
        path: String, format: TraceFormat?, options: TraceOptions, sizing: VolumeSizing, jobs: Int,
        work: @escaping @Sendable (VolumeWork) throws -> Result
    ) throws -> [(name: String, result: Result)]? {
        var (reader, rebase) = try open(path: path, format: format, options: options)
        let pool = WorkerPool<Result>(threads: max(1, jobs), capacity: max(1, jobs))
        var seen = Set<UInt32>()
        var current: UInt32 = 0
        var records: [TraceRecord] = []
        var locations: [TraceLocation] = []
        var maxEnd: UInt64 = 0
        var first: Double?
        func dispatch() throws {
            guard current != 0 else { return }
            let name = reader.volumeNames[Int(current) - 1]
            let unit = VolumeWork(
                name: name, size: try size(of: name, maxEnd: maxEnd, sizing: sizing, trace: reader.fileName),
                fileName: reader.fileName, records: VolumeRecords(memory: records, locations: locations))
            pool.submit(name: name) { try work(unit) }
            records = []
            locations = []
            maxEnd = 0
            first = nil
        }
        do {
            while var r = try reader.next() {
                guard r.volume != 0 else { throw noVolume(reader) }
                if r.volume != current {
                    if seen.contains(r.volume) {
                        // Interleaved: what ran is incomplete; the spill pass starts over.
                        pool.cancel()
                        return nil
                    }
                    try dispatch()
                    seen.insert(r.volume)
                    current = r.volume
                }
                if let t = r.time {
                    let f = first ?? t
                    first = f
                    r.time = rebase.apply(t, first: f)
                }
                if r.op != .flush { maxEnd = max(maxEnd, r.offset.addingReportingOverflow(r.length).overflow ? .max : r.offset + r.length) }
                r.volume = 0
                records.append(r)
                locations.append(reader.location)
            }
            try dispatch()
        } catch {
            pool.cancel()
            throw error
        }
        return try pool.finish()
    }

    private static func runSpilled<Result: Sendable>(
        path: String, format: TraceFormat?, options: TraceOptions, sizing: VolumeSizing, jobs: Int, directory: String,
        work: @escaping @Sendable (VolumeWork) throws -> Result
    ) throws -> [(name: String, result: Result)] {
        var (reader, rebase) = try open(path: path, format: format, options: options)
        let dir = (directory as NSString).appendingPathComponent("qcow2sim-volumes-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw TraceError(file: dir, location: .file, message: "cannot create the spill directory: \(error.localizedDescription)", exitCode: 73)
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var spills: [SpillWriter] = []
        var firsts: [Double?] = []
        while var r = try reader.next() {
            guard r.volume != 0 else { throw noVolume(reader) }
            let k = Int(r.volume) - 1
            while spills.count <= k {
                spills.append(SpillWriter(path: (dir as NSString).appendingPathComponent("\(spills.count + 1).spill")))
                firsts.append(nil)
            }
            if let t = r.time {
                let f = firsts[k] ?? t
                firsts[k] = f
                r.time = rebase.apply(t, first: f)
            }
            try spills[k].append(r, reader.location)
        }
        for s in spills { try s.close() }
        let names = reader.volumeNames
        var byName: [String: Int] = [:]
        for (k, n) in names.enumerated() where k < spills.count && spills[k].count > 0 { byName[n] = k }
        let pool = WorkerPool<Result>(threads: max(1, jobs), capacity: max(1, jobs))
        do {
            for name in VolumeTable.sorted(Array(byName.keys)) {
                guard let k = byName[name] else { continue }
                let unit = VolumeWork(
                    name: name, size: try size(of: name, maxEnd: spills[k].maxEnd, sizing: sizing, trace: reader.fileName),
                    fileName: reader.fileName, records: VolumeRecords(spill: spills[k].path, count: spills[k].count))
                pool.submit(name: name) { try work(unit) }
            }
        } catch {
            pool.cancel()
            throw error
        }
        return try pool.finish()
    }
}

/// A volume's records: in memory (grouped mode) or in a spill file.
final class VolumeRecords: @unchecked Sendable {
    let memory: [TraceRecord]
    let locations: [TraceLocation]
    let spill: String?
    let count: Int

    init(memory: [TraceRecord], locations: [TraceLocation]) {
        self.memory = memory
        self.locations = locations
        spill = nil
        count = memory.count
    }

    init(spill: String, count: Int) {
        memory = []
        locations = []
        self.spill = spill
        self.count = count
    }
}

/// Spill record layout (native byte order, private to one process): time bits (ffff… none),
/// offset, length, op | flags << 8 | location kind << 16, location a, location b.
private enum Spill {
    static let recordSize = 48
}

/// Appends one volume's records to its spill file in 64 KiB chunks (open, append, close: a
/// fleet has more volumes than a process has file descriptors).
final class SpillWriter {
    let path: String
    private var buffer: [UInt8] = []
    private(set) var count = 0
    private(set) var maxEnd: UInt64 = 0

    init(path: String) { self.path = path }

    func append(_ r: TraceRecord, _ loc: TraceLocation) throws {
        if r.op != .flush {
            let (e, o) = r.offset.addingReportingOverflow(r.length)
            maxEnd = max(maxEnd, o ? .max : e)
        }
        var kind: UInt64 = 0
        var a: UInt64 = 0
        var b: UInt64 = 0
        switch loc {
        case .line(let n): kind = 1; a = UInt64(n)
        case .record(let off, let i): kind = 2; a = off; b = UInt64(i)
        case .file: kind = 0
        }
        let words: [UInt64] = [
            r.time?.bitPattern ?? UInt64.max, r.offset, r.length,
            UInt64(r.op.rawValue) | UInt64(r.flags.rawValue) << 8 | kind << 16, a, b,
        ]
        words.withUnsafeBytes { buffer.append(contentsOf: $0) }
        count += 1
        if buffer.count >= 1 << 16 { try flush() }
    }

    func close() throws { try flush() }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw TraceError(file: path, location: .file, message: "cannot create: \(String(cString: strerror(errno)))", exitCode: 73)
        }
        defer { Glibc.close(fd) }
        if let code = buffer.withUnsafeBytes({ OutputFile.writeAll(fd, $0) }) {
            throw TraceError(file: path, location: .file, message: "\(String(cString: strerror(code)))", exitCode: 74)
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads one volume's records, from memory or its spill file (1 MiB reads), with the location
/// each record had in the original trace.
public struct VolumeReader: TraceReader {
    private let records: VolumeRecords
    private var position = 0
    private var last: TraceLocation = .file
    private var handle: FileHandle?
    private var chunk: [UInt8] = []
    private var chunkPosition = 0
    /// The original trace's name.
    public let fileName: String

    init(_ records: VolumeRecords, fileName: String) throws {
        self.records = records
        self.fileName = fileName
        if let spill = records.spill {
            guard let h = FileHandle(forReadingAtPath: spill) else {
                throw TraceError(file: spill, location: .file, message: "cannot open the spill file", exitCode: 74)
            }
            handle = h
        }
    }

    /// The record's location in the original trace.
    public var location: TraceLocation { last }

    /// The next record, or nil after the volume's last.
    public mutating func next() throws -> TraceRecord? {
        guard position < records.count else {
            try? handle?.close()
            handle = nil
            return nil
        }
        defer { position += 1 }
        guard let handle else {
            last = records.locations[position]
            return records.memory[position]
        }
        if chunkPosition + Spill.recordSize > chunk.count {
            let rest = Array(chunk[chunkPosition...])
            let more = (try? handle.read(upToCount: 1 << 20)) ?? nil
            chunk = rest + (more.map { [UInt8]($0) } ?? [])
            chunkPosition = 0
            guard chunk.count >= Spill.recordSize else {
                throw TraceError(file: records.spill ?? "", location: .file, message: "spill file ends early", exitCode: 74)
            }
        }
        let at = chunkPosition
        chunkPosition += Spill.recordSize
        return chunk.withUnsafeBytes { raw -> TraceRecord in
            func word(_ i: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: at + 8 * i, as: UInt64.self) }
            let tb = word(0)
            let tail = word(3)
            let kind = (tail >> 16) & 0xFF
            switch kind {
            case 1: last = .line(Int(word(4)))
            case 2: last = .record(byteOffset: word(4), index: Int(word(5)))
            default: last = .file
            }
            return TraceRecord(
                time: tb == UInt64.max ? nil : Double(bitPattern: tb), op: TraceRecord.Op(rawValue: UInt8(tail & 0xFF)) ?? .read,
                offset: word(1), length: word(2), flags: TraceRecord.Flags(rawValue: UInt8((tail >> 8) & 0xFF)))
        }
    }
}

/// Worker threads running submitted jobs, at most `capacity` waiting; results by name, the
/// first failure (in volume order) rethrown by ``finish()``.
final class WorkerPool<Result: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [(String, () throws -> Result)] = []
    private var results: [String: Result] = [:]
    private var failures: [String: Error] = [:]
    private var cancelled = false
    private var closed = false
    private var running = 0
    private let capacity: Int
    private var threads: [Thread] = []
    private let done = DispatchGroup()

    init(threads n: Int, capacity: Int) {
        self.capacity = capacity
        for _ in 0..<n {
            done.enter()
            let t = Thread { [self] in
                loop()
                done.leave()
            }
            // The main thread's 8 MiB: a worker runs the same code.
            t.stackSize = 8 << 20
            t.start()
        }
    }

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty && !closed { condition.wait() }
            if queue.isEmpty {
                condition.unlock()
                return
            }
            let (name, job) = queue.removeFirst()
            let skip = cancelled || !failures.isEmpty
            running += 1
            condition.broadcast()
            condition.unlock()
            var outcome: Swift.Result<Result, Error>?
            if !skip { outcome = Swift.Result { try job() } }
            condition.lock()
            running -= 1
            switch outcome {
            case .success(let r): results[name] = r
            case .failure(let e): failures[name] = e
            case nil: break
            }
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Queues a job; blocks while `capacity` jobs are waiting (the bound on resident volumes).
    func submit(name: String, _ job: @escaping () throws -> Result) {
        condition.lock()
        while queue.count >= capacity { condition.wait() }
        queue.append((name, job))
        condition.broadcast()
        condition.unlock()
    }

    /// Drops the waiting jobs and waits for the running ones.
    func cancel() {
        condition.lock()
        cancelled = true
        queue.removeAll()
        closed = true
        condition.broadcast()
        condition.unlock()
        done.wait()
    }

    /// Waits for every job; the results sorted by volume, or the first volume's failure.
    func finish() throws -> [(name: String, result: Result)] {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
        done.wait()
        if let name = VolumeTable.sorted(Array(failures.keys)).first, let e = failures[name] { throw e }
        return VolumeTable.sorted(Array(results.keys)).compactMap { n in results[n].map { (n, $0) } }
    }
}

import Foundation
import TraceKit

#if canImport(Glibc)
    import Glibc
#endif

/// Progress of a long run on standard error (issue 10, item 4): records done, rate and ETA. On a
/// terminal, one line rewritten in place four times a second and cleared at the end; elsewhere
/// only with `--progress`, as a line every 5 seconds and a last line at the end. `--quiet`
/// turns it off. Standard output is never touched.
final class Progress: @unchecked Sendable {
    /// The flags every command with progress takes.
    static let flags: Set<String> = ["--progress", "--quiet"]

    /// Help lines for the flags.
    static let help = """
          --progress            progress on standard error even when it is not a terminal
                                (then a line every 5 s and one at the end)
          --quiet               no progress (by default it shows on a terminal: records done,
                                rate, ETA, on one line updated in place)
        """

    /// The progress the flags ask for, or nil (off). Starts the ticking thread.
    static func start(_ a: Arguments, command: String, points: Int) throws -> Progress? {
        if a.has("--quiet") && a.has("--progress") {
            throw UsageError("--progress and --quiet cannot be combined")
        }
        if a.has("--quiet") { return nil }
        let terminal = isatty(2) == 1
        guard terminal || a.has("--progress") else { return nil }
        return Progress(command: command, points: points, terminal: terminal)
    }

    private let command: String
    private let points: Int
    private let terminal: Bool
    private let started = Date()
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var records = 0
    private var pointsDone = 0
    private var totalRecords: Int?
    private var estimating: (traces: [String], perTrace: Int)?
    private var stopping = false
    private var running = true

    private init(command: String, points: Int, terminal: Bool) {
        self.command = command
        self.points = points
        self.terminal = terminal
        let t = Thread { [self] in tick() }
        t.start()
    }

    /// Estimates the total records in the background: each trace's records (counted from its
    /// lines, or its size for the binary format; none for compressed input) times the points
    /// run on it.
    func estimate(traces: [String], pointsPerTrace: Int) {
        condition.lock()
        estimating = (traces, pointsPerTrace)
        condition.signal()
        condition.unlock()
    }

    /// Adds `n` records done.
    func add(records n: Int) {
        condition.lock()
        records += n
        condition.unlock()
    }

    /// Adds `n` points done.
    func add(points n: Int) {
        condition.lock()
        pointsDone += n
        condition.unlock()
    }

    /// Stops the ticking; clears the line on a terminal, else writes the last line. Safe to call
    /// twice.
    func finish() {
        condition.lock()
        guard !stopping else {
            condition.unlock()
            return
        }
        stopping = true
        condition.broadcast()
        while running { condition.wait() }
        let line = terminal ? nil : summary(final: true)
        condition.unlock()
        write(line.map { $0 + "\n" } ?? "\r\u{1B}[K")
    }

    private func tick() {
        let interval = terminal ? 0.25 : 5.0
        condition.lock()
        var next = Date().addingTimeInterval(interval)
        while !stopping {
            if let e = estimating {
                estimating = nil
                condition.unlock()
                let counts = e.traces.map(Self.estimateRecords)
                condition.lock()
                if counts.allSatisfy({ $0 != nil }) { totalRecords = counts.reduce(0) { $0 + ($1 ?? 0) } * e.perTrace }
                continue
            }
            if !condition.wait(until: next) {
                let line = summary(final: false)
                condition.unlock()
                write(terminal ? "\r" + line + "\u{1B}[K" : line + "\n")
                condition.lock()
                next = Date().addingTimeInterval(interval)
            }
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }

    /// The progress line (caller holds the lock).
    private func summary(final: Bool) -> String {
        let elapsed = max(Date().timeIntervalSince(started), 1e-9)
        var parts: [String] = []
        if points > 1 { parts.append("\(pointsDone)/\(points) points") }
        var done = "\(records) records"
        if let total = totalRecords, total > 0, !final {
            done += " (\(min(99, records * 100 / total))%)"
        }
        parts.append(done)
        if final {
            parts.append(String(format: "%.1f s", elapsed))
            return "\(command): " + parts.joined(separator: ", ")
        }
        let rate = Double(records) / elapsed
        parts.append("\(Int(rate)) records/s")
        var eta: Double?
        if let total = totalRecords, rate > 0 {
            eta = Double(max(0, total - records)) / rate
        } else if points > 1 && pointsDone > 0 {
            eta = elapsed * Double(points - pointsDone) / Double(pointsDone)
        }
        parts.append("ETA " + (eta.map(Self.clock) ?? "?"))
        return "\(command): " + parts.joined(separator: ", ")
    }

    /// `m:ss`, or `h:mm:ss` from an hour.
    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded(.up))
        return s >= 3600
            ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        // Best effort: progress that cannot be written is dropped.
        _ = bytes.withUnsafeBytes { OutputFile.writeAll(2, $0) }
    }

    /// The records a trace file holds, roughly: its lines (a header or comment line counts too;
    /// past 64 MiB, extrapolated from the first 64 MiB),
    /// or (size − 32) / 32 for the binary native format; nil for compressed or unreadable
    /// input, standard input and directories.
    static func estimateRecords(_ path: String) -> Int? {
        guard path != "-" else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var lines = 0
        var first = true
        // A big file is sampled: its first 64 MiB of lines, scaled to its size (an ETA needs no
        // more, and reading a whole large trace twice would cost real I/O).
        let sample = 64 << 20
        var scanned = 0
        while scanned < sample {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            if first {
                first = false
                let head = Array(buffer.prefix(min(n, 8)))
                if head.starts(with: NativeBinaryTrace.magic.prefix(4)) { return max(0, (Int(st.st_size) - 32) / 32) }
                let compressed: [[UInt8]] = [
                    [0x1F, 0x8B], [0x42, 0x5A, 0x68], [0xFD, 0x37, 0x7A, 0x58], [0x28, 0xB5, 0x2F, 0xFD],
                ]
                if compressed.contains(where: { head.starts(with: $0) }) { return nil }
            }
            scanned += n
            buffer.withUnsafeBytes { raw in
                var p = raw.baseAddress
                var left = n
                while left > 0, let base = p, let hit = memchr(base, 0x0A, left) {
                    lines += 1
                    let used = base.distance(to: UnsafeRawPointer(hit)) + 1
                    left -= used
                    p = base + used
                }
            }
        }
        let size = Int(st.st_size)
        return scanned < size && scanned > 0 ? Int(Double(lines) * Double(size) / Double(scanned)) : lines
    }
}

/// A reader that counts the records it passes on into a ``Progress`` (in steps of 4096, so
/// the lock is taken rarely).
struct CountingReader<Base: TraceReader>: TraceReader {
    private var base: Base
    private let progress: Progress
    private var pending = 0

    init(_ base: Base, _ progress: Progress) {
        self.base = base
        self.progress = progress
    }

    mutating func next() throws -> TraceRecord? {
        guard let r = try base.next() else {
            progress.add(records: pending)
            pending = 0
            return nil
        }
        pending += 1
        if pending == 4096 {
            progress.add(records: pending)
            pending = 0
        }
        return r
    }

    var location: TraceLocation { base.location }
    var fileName: String { base.fileName }
    var timeOrigin: TraceTimeOrigin { base.timeOrigin }
}

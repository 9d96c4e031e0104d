/// One guest block request, as every trace reader produces it and the simulator consumes it.
///
/// Offsets and lengths are in bytes on the guest's virtual disk. `time` is in seconds on the
/// trace's own clock; `TraceFile`'s mapping stage rebases absolute clocks so the first record is
/// at 0 (unless ``TraceOptions/rebaseTime`` is `false`). It is `nil` for traces without timestamps.
public struct TraceRecord: Equatable, Hashable, Sendable {
    /// The kind of request.
    public enum Op: UInt8, Sendable, CaseIterable {
        /// Read `length` bytes (`R`).
        case read
        /// Write `length` bytes (`W`).
        case write
        /// Discard / TRIM / UNMAP (`D`).
        case discard
        /// Write zeroes (`Z`; `ZU` with ``Flags/unmap``, qemu-io `write -z -u`).
        case writeZeroes
        /// Flush the disk's volatile cache (`F`); offset and length are 0.
        case flush

        /// The letter used by the native trace format.
        public var letter: Character {
            switch self {
            case .read: "R"
            case .write: "W"
            case .discard: "D"
            case .writeZeroes: "Z"
            case .flush: "F"
            }
        }
    }

    /// Modifier flags carried by some formats (blktrace, QEMU's own trace log).
    public struct Flags: OptionSet, Hashable, Sendable {
        /// The flag bits.
        public let rawValue: UInt8
        /// Flags from their bits.
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Force unit access: the write must be durable when it completes.
        public static let fua = Flags(rawValue: 1 << 0)
        /// A write-zeroes request that may deallocate (qemu-io `write -z -u`, BLKDEV_ZERO_UNMAP).
        public static let unmap = Flags(rawValue: 1 << 1)
        /// A flush precedes the request (REQ_PREFLUSH).
        public static let preflush = Flags(rawValue: 1 << 2)
    }

    /// Seconds since the start of the trace, or `nil` when the trace carries no time.
    public var time: Double?
    /// The request kind.
    public var op: Op
    /// Guest byte offset.
    public var offset: UInt64
    /// Length in bytes (0 for flushes).
    public var length: UInt64
    /// Modifier flags.
    public var flags: Flags
    /// The volume (device, LUN, host:disk, ASU, file) the request went to, as an ID in its
    /// reader's ``VolumeTable`` (``AnyTraceReader/volumeNames``); 0 = not tagged: the format
    /// carries no volume field, or the reader was opened without ``TraceOptions/tagVolumes``.
    public var volume: UInt32

    /// Creates a record.
    public init(time: Double? = nil, op: Op, offset: UInt64, length: UInt64, flags: Flags = [], volume: UInt32 = 0) {
        self.time = time
        self.op = op
        self.offset = offset
        self.length = length
        self.flags = flags
        self.volume = volume
    }
}

/// Where in its input a record (or an error) was found.
public enum TraceLocation: Equatable, Sendable, CustomStringConvertible {
    /// A 1-based line of a text file.
    case line(Int)
    /// A byte offset and 0-based record index in a binary file.
    case record(byteOffset: UInt64, index: Int)
    /// The file as a whole (empty files, unreadable files).
    case file

    /// `12` for lines, `byte 4096 (record 128)` for binary input, empty for the whole file.
    public var description: String {
        switch self {
        case .line(let n): "\(n)"
        case .record(let off, let i): "byte \(off) (record \(i))"
        case .file: ""
        }
    }
}

/// A located error in trace input, printed compiler-style:
/// `trace.csv:1842: error: expected 3 fields, found 5`.
public struct TraceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file name as the user gave it.
    public var file: String
    /// Where in the file.
    public var location: TraceLocation
    /// Lowercase message quoting what was found and saying what was expected.
    public var message: String

    /// Creates an error.
    public init(file: String, location: TraceLocation, message: String) {
        self.file = file
        self.location = location
        self.message = message
    }

    /// `file:line: error: message`, `file: byte N (record I): error: message` or `file: error: message`.
    public var description: String {
        switch location {
        case .line(let n): "\(file):\(n): error: \(message)"
        case .record: "\(file): \(location): error: \(message)"
        case .file: "\(file): error: \(message)"
        }
    }

    /// The sysexits status for this error: 65 EX_DATAERR (the input data was incorrect) unless
    /// the error says otherwise (66 cannot open, 69 decompressor missing, 74 read failure).
    public internal(set) var exitCode: Int32 = 65

    /// Creates an error with a specific sysexits status.
    public init(file: String, location: TraceLocation, message: String, exitCode: Int32) {
        self.init(file: file, location: location, message: message)
        self.exitCode = exitCode
    }
}

/// A streaming source of trace records: pulls one record at a time, in constant memory.
///
/// Readers are value types opened once; the simulator runs generic code over them so no
/// existential sits in the per-request loop.
public protocol TraceReader {
    /// The next record, or `nil` at the end of the input. Throws `TraceError` for bad input.
    mutating func next() throws -> TraceRecord?
    /// The location of the record most recently returned by `next()`.
    var location: TraceLocation { get }
    /// The file name used in error messages.
    var fileName: String { get }
    /// The absolute clock reading that `time == 0` stands for in this reader's records.
    ///
    /// A reader of a clock too large for a `Double` to keep its resolution (FILETIME ticks,
    /// epoch microseconds) reports times relative to its first row, subtracted in integers, and
    /// exposes that row's reading here; the mapping stage adds it back when rebasing is off.
    /// The default, ``TraceTimeOrigin/zero``, says `time` is the clock itself.
    var timeOrigin: TraceTimeOrigin { get }
    /// Reads records into `buffer` (initialized memory) as long as `filter` admits each; returns
    /// how many, and why the batch ended. A record `filter` refuses ends it
    /// (``BatchEnd/refused(_:)``) with `location` still at that record, so the caller handles it
    /// as if `next()` had returned it; an error ends it after the records before it
    /// (``BatchEnd/failed(_:)``). The default calls `next()` per record, in the reader's own
    /// specialized code: one call per batch for a caller holding the reader behind a type-erased
    /// box.
    mutating func next(into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads) -> (
        count: Int, end: BatchEnd
    )
}

extension TraceReader {
    /// `time` is the trace's clock itself (no origin to add back).
    public var timeOrigin: TraceTimeOrigin { .zero }

    /// Witness of the requirement: `next()` per record.
    @inlinable
    public mutating func next(into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads) -> (
        count: Int, end: BatchEnd
    ) {
        filter.fill(buffer) { try next() }
    }
}

extension PlainReads {
    /// The body of every ``TraceReader/next(into:admitting:)``: the records `next` returns, into
    /// `buffer`, for as long as this filter admits each.
    @inlinable @inline(__always)
    public func fill(_ buffer: UnsafeMutableBufferPointer<TraceRecord>, from next: () throws -> TraceRecord?) -> (
        count: Int, end: BatchEnd
    ) {
        var n = 0
        do {
            while n < buffer.count {
                guard let r = try next() else { return (n, .ended) }
                guard admits(r) else { return (n, .refused(r)) }
                buffer[n] = r
                n &+= 1
            }
        } catch {
            return (n, .failed(error))
        }
        return (n, .full)
    }
}

/// The records a batch (``TraceReader/next(into:admitting:)``) may hold: reads (and, with
/// `writes`, writes) of at most `maxLength` bytes lying inside a disk of `size` bytes, untimed
/// or at a valid trace time (``TraceRecord/timeProblem(_:)`` is nil). Every other record ends
/// the batch.
public struct PlainReads: Sendable {
    /// The virtual disk's size in bytes.
    public let size: UInt64
    /// The longest request admitted.
    public let maxLength: UInt64
    /// Writes are admitted too.
    public let writes: Bool

    /// A filter for reads (and writes, if `writes`) of at most `maxLength` bytes inside `size`
    /// bytes.
    public init(size: UInt64, maxLength: UInt64, writes: Bool = false) {
        self.size = size
        self.maxLength = maxLength
        self.writes = writes
    }

    /// Whether `r` is such a request.
    @inlinable @inline(__always)
    public func admits(_ r: TraceRecord) -> Bool {
        guard
            (r.op == .read || (writes && r.op == .write)) && r.length <= maxLength && r.offset <= size
                && r.length <= size &- r.offset
        else {
            return false
        }
        guard let t = r.time else { return true }
        // `timeProblem(t) == nil`, without building its message.
        return t.isFinite && t >= 0 && t <= TraceRecord.maxTime
    }
}

/// What a batch admits of untimed records that the mapping leaves as they are: `filter`, and
/// the mapper's disk bound, folded with the filter's size into one limit for the binary reader's
/// decoding loop.
struct UntimedAdmission {
    let filter: PlainReads
    /// The lesser of the filter's size and the disk's: a record must end at or before it.
    let limit: UInt64

    /// `filter` with records also ending inside `diskSize` bytes.
    init(_ filter: PlainReads, diskSize: UInt64) {
        self.filter = filter
        limit = min(filter.size, diskSize)
    }

    /// Whether the untimed record `r` is admitted (`filter` bounds its end, so the sum cannot wrap).
    @inline(__always)
    func admits(_ r: TraceRecord) -> Bool { filter.admits(r) && r.offset &+ r.length <= limit }
}

/// Why a batch of records ended (``TraceReader/next(into:admitting:)``).
public enum BatchEnd {
    /// The buffer is full.
    case full
    /// The input ended.
    case ended
    /// This record, read next, is not admitted; the reader's location is at it.
    case refused(TraceRecord)
    /// Reading the next record threw this error.
    case failed(any Error)
}

/// An absolute clock reading kept exact: whole seconds plus a fraction in `0..<1`.
///
/// A `Double` of 1.3·10¹⁰ s (FILETIME) or 1.6·10⁹ s (the Unix epoch) resolves only about
/// 2·10⁻⁶ or 2·10⁻⁷ s, so readers keep their origin split and records small and relative.
public struct TraceTimeOrigin: Sendable, Equatable {
    /// Whole seconds.
    public var seconds: UInt64
    /// The fraction of a second, `0..<1`.
    public var fraction: Double

    /// The clock's own zero.
    public static let zero = TraceTimeOrigin(seconds: 0, fraction: 0)

    /// An origin of `seconds` plus `fraction`.
    public init(seconds: UInt64, fraction: Double) {
        self.seconds = seconds
        self.fraction = fraction
    }

    /// An integer clock reading of `ticks` units of `1/ticksPerSecond` s, split exactly.
    public init(ticks: UInt64, ticksPerSecond: UInt64) {
        seconds = ticks / ticksPerSecond
        fraction = Double(ticks % ticksPerSecond) / Double(ticksPerSecond)
    }

    /// The absolute time of a record `time` seconds after the origin (the small parts are added
    /// first, so the sum loses only what a `Double` of its size cannot hold).
    @inline(__always)
    public func absolute(_ time: Double) -> Double { Double(seconds) + (fraction + time) }
}

/// A reader over records already in memory (generators, tests, benchmarks).
public struct ArrayTraceReader: TraceReader {
    private let records: [TraceRecord]
    private var position = 0
    /// The file name reported in errors and locations.
    public let fileName: String

    /// Reads `records` in order.
    public init(_ records: [TraceRecord], fileName: String = "<memory>") {
        self.records = records
        self.fileName = fileName
    }

    /// The next record or `nil`.
    public mutating func next() throws -> TraceRecord? {
        guard position < records.count else { return nil }
        position += 1
        return records[position - 1]
    }

    /// `.line(n)` where n is the 1-based position of the last record returned.
    public var location: TraceLocation { .line(position) }
}

extension TraceRecord {
    /// The largest accepted timestamp: 2^52 s (about 143 million years). Below it every whole
    /// second is an exact `Double`, and so is every cache-clean tick `k × interval` (intervals
    /// are whole seconds below 2^32, qcow2-model.md §3.7), so tick times never round. A larger
    /// value is almost always a clock in micro- or nanoseconds read as seconds.
    public static let maxTime: Double = 0x1p52

    /// Why `time` cannot be a trace time (not finite, negative, or above ``maxTime``); nil if it
    /// can.
    public static func timeProblem(_ time: Double) -> String? {
        if !time.isFinite { return "time \(time) is not a finite number of seconds" }
        if time < 0 { return "time \(time) is negative" }
        if time > maxTime {
            return
                "time \(time) s is beyond the limit of 4503599627370496 s (2^52; a clock in micro- or nanoseconds read as seconds? scale it with --time-scale)"
        }
        return nil
    }
}

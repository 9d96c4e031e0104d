import Foundation

/// Constants of Linux's `include/uapi/linux/blktrace_api.h` (blktrace format version 7).
enum Blktrace {
    /// `BLK_IO_TRACE_MAGIC`: the top 24 bits of `magic`; the low 8 bits are the version.
    static let magic: UInt32 = 0x6561_7400
    /// `BLK_IO_TRACE_VERSION`, the only version blkparse 1.2 accepts.
    static let version: UInt32 = 7
    /// `sizeof(struct blk_io_trace)`.
    static let headerSize = 48
    /// `BLK_TC_SHIFT`: category bits sit above the 16-bit action code.
    static let categoryShift: UInt32 = 16

    // enum blktrace_cat
    static let tcRead: UInt32 = 1 << 0
    static let tcWrite: UInt32 = 1 << 1
    static let tcFlush: UInt32 = 1 << 2
    static let tcPC: UInt32 = 1 << 9
    static let tcNotify: UInt32 = 1 << 10
    static let tcDiscard: UInt32 = 1 << 13
    static let tcFUA: UInt32 = 1 << 15

    // enum blktrace_act
    static let taQueue: UInt32 = 1
    static let taRequeue: UInt32 = 6
    static let taIssue: UInt32 = 7
    static let taComplete: UInt32 = 8
    static let taRemap: UInt32 = 15

    /// `MAJOR()`/`MINOR()` of the kernel's internal dev_t (20-bit minor), as blkparse prints.
    static func deviceName(_ dev: UInt32) -> String { "\(dev >> 20),\(dev & 0xFFFFF)" }

    /// Parses `MAJ,MIN` into the kernel dev_t encoding.
    /// The `--device MAJOR,MINOR` filter of `options` (nil: every device), or a usage error.
    static func deviceFilter(_ options: TraceOptions) throws -> UInt32? {
        guard let d = options.device else { return nil }
        guard let dev = parseDevice(d) else {
            throw TraceError(
                file: "--device", location: .file,
                message: "invalid device '\(d)' (expected MAJOR,MINOR such as 8,0)", exitCode: 64)
        }
        return dev
    }

    static func parseDevice(_ s: String) -> UInt32? {
        let parts = s.split(separator: ",")
        guard parts.count == 2, let ma = UInt32(parts[0].trimmingCharacters(in: .whitespaces)),
            let mi = UInt32(parts[1].trimmingCharacters(in: .whitespaces)), ma < 4096, mi < (1 << 20)
        else { return nil }
        return ma << 20 | mi
    }
}

/// One decoded `struct blk_io_trace` (fields the readers need).
struct BlktraceEvent {
    var time: UInt64
    var sector: UInt64
    var bytes: UInt32
    var action: UInt32
    var device: UInt32
    var remapFrom: UInt32 = 0
    var remapSectorFrom: UInt64 = 0
    var byteOffset: UInt64
    var index: Int
}

/// One record's fixed header (`struct blk_io_trace`, 48 bytes) in the file's byte order.
struct BlktraceHeader {
    let p: UnsafeRawPointer
    let bigEndian: Bool

    @inline(__always) func u16(_ o: Int) -> UInt16 {
        let v = p.loadUnaligned(fromByteOffset: o, as: UInt16.self)
        return bigEndian ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
    }

    @inline(__always) func u32(_ o: Int) -> UInt32 {
        let v = p.loadUnaligned(fromByteOffset: o, as: UInt32.self)
        return bigEndian ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
    }

    @inline(__always) func u64(_ o: Int) -> UInt64 {
        let v = p.loadUnaligned(fromByteOffset: o, as: UInt64.self)
        return bigEndian ? UInt64(bigEndian: v) : UInt64(littleEndian: v)
    }

    /// `magic` (with the version in its low byte).
    @inline(__always) var magic: UInt32 { u32(0) }
    /// `pdu_len`: the payload's bytes after the header.
    @inline(__always) var pduLength: Int { Int(u16(46)) }

    /// The event the header describes: `time`, `sector`, `bytes`, `action`, `device`.
    @inline(__always) func event(byteOffset: UInt64, index: Int) -> BlktraceEvent {
        BlktraceEvent(
            time: u64(8), sector: u64(16), bytes: u32(24), action: u32(28), device: u32(36), byteOffset: byteOffset,
            index: index)
    }
}

/// Decodes one per-CPU blktrace file, record by record, in either byte order.
///
/// Once the byte order is known (from the first record), the records already buffered are
/// decoded in batches: one pass over the input's buffer per batch instead of one access (and its
/// exclusivity check and retain) per record. A batch stops before any record it cannot take
/// whole and valid; that record goes through ``nextSlow()``, which fills the buffer and reports
/// errors, so records and errors are the same either way.
struct BlktraceStream {
    let input: ByteInput
    private var bigEndian: Bool?
    private(set) var index = 0
    /// Decoded events: `batch[position..<count]` are yet to be returned. Allocated once, at
    /// ``batchSize``, and overwritten in place (no append's uniqueness and capacity checks).
    private var batch: [BlktraceEvent] = []
    private var count = 0
    private var position = 0

    /// Events decoded per pass: 48 KiB of input, a 56 KiB array of events.
    static let batchSize = 1024

    init(_ input: ByteInput) { self.input = input }

    private func error(_ off: UInt64, _ i: Int, _ m: String) -> TraceError {
        TraceError(file: input.fileName, location: .record(byteOffset: off, index: i), message: m)
    }

    /// The next event, or `nil` at a clean end of file.
    @inline(__always)
    mutating func next() throws -> BlktraceEvent? {
        if position < count {
            position += 1
            return batch[position - 1]
        }
        return try refill()
    }

    private mutating func refill() throws -> BlktraceEvent? {
        if let be = bigEndian {
            decodeBatch(bigEndian: be)
            if count > 0 {
                position = 1
                return batch[0]
            }
        }
        return try nextSlow()
    }

    /// Decodes up to ``batchSize`` whole, valid records from the bytes already buffered, in the
    /// byte order of the first record, and consumes them.
    private mutating func decodeBatch(bigEndian be: Bool) {
        if batch.isEmpty {
            batch = Array(repeating: BlktraceEvent(time: 0, sector: 0, bytes: 0, action: 0, device: 0, byteOffset: 0, index: 0), count: Self.batchSize)
        }
        position = 0
        var k = 0
        let s = input.start
        let n = input.available
        let base0 = input.offset
        let first = index
        let size = Blktrace.headerSize
        var used = 0
        batch.withUnsafeMutableBufferPointer { out in input.buffer.withUnsafeBytes { raw in
            let b = raw.baseAddress.unsafelyUnwrapped + s
            while k < out.count && n - used >= size {
                let p = b + used
                let h = BlktraceHeader(p: p, bigEndian: be)
                // The checks of nextSlow(): a record failing them is left for it to report.
                guard h.magic == Blktrace.magic | Blktrace.version else { break }
                let pduLen = h.pduLength
                guard n - used - size >= pduLen else { break }
                var ev = h.event(byteOffset: base0 + UInt64(used), index: first + k)
                if ev.action & 0xFFFF == Blktrace.taRemap && pduLen >= 16 {
                    // struct blk_io_trace_remap is always big-endian (__be32, __be32, __be64).
                    ev.remapFrom = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: size, as: UInt32.self))
                    ev.remapSectorFrom = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: size + 8, as: UInt64.self))
                }
                out[k] = ev
                k += 1
                used += size + pduLen
            }
        } }
        count = k
        input.start += used
        index += k
    }

    /// The next event, read one record at a time (filling the buffer as needed), or `nil` at a
    /// clean end of file.
    private mutating func nextSlow() throws -> BlktraceEvent? {
        let offset = input.offset
        guard try input.ensure(Blktrace.headerSize) else {
            if input.available == 0 {
                if index == 0 {
                    throw TraceError(file: input.fileName, location: .file, message: "empty trace (no records)")
                }
                return nil
            }
            throw error(
                offset, index, "truncated record: \(input.available) bytes left, expected a \(Blktrace.headerSize)-byte header")
        }
        let s = input.start
        var ev = try input.buffer.withUnsafeBytes { raw -> BlktraceEvent in
            let p = raw.baseAddress.unsafelyUnwrapped + s
            let rawMagic = p.loadUnaligned(as: UInt32.self)
            let be: Bool
            if let known = bigEndian {
                be = known
            } else if UInt32(littleEndian: rawMagic) & 0xFFFF_FF00 == Blktrace.magic {
                be = false
            } else if UInt32(bigEndian: rawMagic) & 0xFFFF_FF00 == Blktrace.magic {
                be = true
            } else {
                throw error(
                    offset, index,
                    String(format: "bad magic 0x%08x (expected 0x656174xx, a blktrace record)", UInt32(littleEndian: rawMagic)))
            }
            let h = BlktraceHeader(p: p, bigEndian: be)
            let magic = h.magic
            guard magic & 0xFFFF_FF00 == Blktrace.magic else {
                throw error(offset, index, String(format: "bad magic 0x%08x (expected 0x656174xx, a blktrace record)", magic))
            }
            guard magic & 0xFF == Blktrace.version else {
                throw error(offset, index, "unsupported blktrace version \(magic & 0xFF) (expected \(Blktrace.version))")
            }
            bigEndian = be
            var ev = h.event(byteOffset: offset, index: index)
            // The payload's length, until the payload is read (below).
            ev.remapFrom = UInt32(h.pduLength)
            return ev
        }
        let pduLen = Int(ev.remapFrom)
        ev.remapFrom = 0
        guard try input.ensure(Blktrace.headerSize + pduLen) else {
            throw error(
                offset, index,
                "truncated record: payload of \(pduLen) bytes but only \(input.available - Blktrace.headerSize) left")
        }
        if ev.action & 0xFFFF == Blktrace.taRemap && pduLen >= 16 {
            // struct blk_io_trace_remap is always big-endian (__be32, __be32, __be64).
            let s2 = input.start + Blktrace.headerSize
            input.buffer.withUnsafeBytes { raw in
                let p = raw.baseAddress.unsafelyUnwrapped + s2
                ev.remapFrom = UInt32(bigEndian: p.loadUnaligned(as: UInt32.self))
                ev.remapSectorFrom = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
        }
        input.start += Blktrace.headerSize + pduLen
        index += 1
        return ev
    }
}

/// Reads a blktrace recording: one or more per-CPU binary files (`dev.blktrace.0`, `.1`, …)
/// merged by time, in either byte order, format version 7.
///
/// One record per I/O, taken at the selected action (``TraceOptions/event``: `D` issue by
/// default, `Q` queue or `C` complete). A request that is requeued (`R`) and issued again yields
/// one record. `A` (remap) events teach the partition offsets so that requests traced on a
/// partition are reported in whole-disk sectors; notify records and SCSI pass-through (`PC`)
/// requests are skipped. The `cpu` field and the file-name suffix are not trusted to agree.
///
/// Flags: `BLK_TC_FLUSH` with no data is a flush, with data a write with `.preflush`;
/// `BLK_TC_FUA` gives `.fua`; `BLK_TC_DISCARD` a discard. Version 7 has no write-zeroes
/// category: the kernel reports REQ_OP_WRITE_ZEROES as a data-less write, which is read as a
/// write of the given length.
public struct BlktraceReader: TraceReader {
    private var streams: [BlktraceStream]
    private var heads: [BlktraceEvent?]
    private let selected: UInt32
    private let deviceFilter: UInt32?
    private var partitionOffset: [UInt32: (disk: UInt32, delta: Int64)] = [:]
    /// Where records' volumes are interned (nil: records are not tagged): the whole disk
    /// (`MAJ,MIN` after remapping), as `--device` names it.
    var volumes: VolumeTable?
    /// The device of the event being processed.
    private var lastDevice: UInt32 = 0
    private var requeued: Set<RequestKey> = []
    private var lastStream = 0
    /// Where the event that produced the last record is (`.file` before the first record).
    private var lastLocation: TraceLocation = .file
    private var emitted = 0
    private var genesis: UInt64 = 0

    private struct RequestKey: Hashable {
        var device: UInt32
        var sector: UInt64
    }

    /// The name of the file the last record came from.
    public private(set) var fileName: String

    /// Opens the files of one recording (already-open inputs, one per CPU).
    init(inputs: [ByteInput], options: TraceOptions) throws {
        streams = inputs.map(BlktraceStream.init)
        heads = []
        fileName = inputs.first?.fileName ?? "<blktrace>"
        switch options.event {
        case .queue: selected = Blktrace.taQueue
        case .issue: selected = Blktrace.taIssue
        case .complete: selected = Blktrace.taComplete
        }
        deviceFilter = try Blktrace.deviceFilter(options)
        for i in streams.indices { heads.append(try streams[i].next()) }
        // Like blkparse, count time from the first event of the recording (any CPU, any
        // action), in integer nanoseconds so no precision is lost to the uptime clock.
        genesis = heads.compactMap { $0?.time }.min() ?? 0
    }

    /// Reads bytes already in memory as a single per-CPU file.
    public init(bytes: [UInt8], fileName: String = "<memory>", options: TraceOptions = TraceOptions()) throws {
        try self.init(inputs: [ByteInput(bytes: bytes, fileName: fileName)], options: options)
    }

    /// Opens every per-CPU file of the recording `path` belongs to (see ``TraceFile/blktraceFiles(for:)``).
    public init(path: String, options: TraceOptions = TraceOptions()) throws {
        let files = try TraceFile.blktraceFiles(for: path)
        try self.init(inputs: files.map { try TraceFile.openInput(path: $0, decompress: true) }, options: options)
    }

    /// `byte N (record I)` of the event that produced the last record, in ``fileName``.
    public var location: TraceLocation {
        lastLocation
    }

    /// The next request, or `nil` when every file is exhausted.
    public mutating func next() throws -> TraceRecord? {
        if heads.count == 1 { return try nextSingle() }
        while true {
            // k-way merge on time; k is the number of CPUs, so a linear scan is cheapest.
            var best = -1
            var bestTime = UInt64.max
            for i in heads.indices {
                if let h = heads[i], best < 0 || h.time < bestTime { best = i; bestTime = h.time }
            }
            guard best >= 0, let ev = heads[best] else {
                if emitted == 0 {
                    throw TraceError(
                        file: fileName, location: .file,
                        message: "no '\(Self.actionLetter(selected))' events in the trace (try --event Q, D or C)")
                }
                return nil
            }
            heads[best] = try streams[best].next()
            if var rec = try process(ev, stream: best) {
                if let volumes {
                    let d = lastDevice
                    rec.volume = volumes.intern(key: UInt64(d)) { Blktrace.deviceName(d) }
                }
                lastLocation = .record(byteOffset: ev.byteOffset, index: ev.index)
                // `fileName` is always the name of `lastStream`'s file: reassigned (a String's
                // retain and release) only when the stream changes.
                if best != lastStream {
                    lastStream = best
                    fileName = streams[best].input.fileName
                }
                emitted += 1
                return rec
            }
        }
    }

    /// ``next()`` for a recording of one file: the merge without its scan, same order of reads
    /// (the next event is read before the current one is processed) and so the same errors.
    private mutating func nextSingle() throws -> TraceRecord? {
        while true {
            guard let ev = heads[0] else {
                if emitted == 0 {
                    throw TraceError(
                        file: fileName, location: .file,
                        message: "no '\(Self.actionLetter(selected))' events in the trace (try --event Q, D or C)")
                }
                return nil
            }
            heads[0] = try streams[0].next()
            if var rec = try process(ev, stream: 0) {
                if let volumes {
                    let d = lastDevice
                    rec.volume = volumes.intern(key: UInt64(d)) { Blktrace.deviceName(d) }
                }
                lastLocation = .record(byteOffset: ev.byteOffset, index: ev.index)
                emitted += 1
                return rec
            }
        }
    }

    private static func actionLetter(_ a: UInt32) -> String {
        a == Blktrace.taQueue ? "Q" : a == Blktrace.taIssue ? "D" : "C"
    }

    @inline(__always)
    private mutating func process(_ ev: BlktraceEvent, stream: Int) throws -> TraceRecord? {
        let category = ev.action >> Blktrace.categoryShift
        let act = ev.action & 0xFFFF
        if category & Blktrace.tcNotify != 0 { return nil }
        if act == Blktrace.taRemap {
            if ev.remapFrom != 0 && ev.remapFrom != ev.device {
                partitionOffset[ev.remapFrom] = (ev.device, Int64(bitPattern: ev.sector &- ev.remapSectorFrom))
            }
            return nil
        }
        var device = ev.device
        var sector = ev.sector
        if !partitionOffset.isEmpty, let m = partitionOffset[device] {
            device = m.disk
            sector = UInt64(bitPattern: Int64(bitPattern: sector) &+ m.delta)
        }
        if act == Blktrace.taRequeue {
            if selected != Blktrace.taQueue { requeued.insert(RequestKey(device: device, sector: sector)) }
            return nil
        }
        guard act == selected else { return nil }
        if category & Blktrace.tcPC != 0 { return nil }
        lastDevice = device
        if let f = deviceFilter, f != device && f != ev.device { return nil }
        if selected == Blktrace.taIssue && !requeued.isEmpty,
            requeued.remove(RequestKey(device: device, sector: sector)) != nil
        {
            return nil
        }
        var flags: TraceRecord.Flags = []
        if category & Blktrace.tcFUA != 0 { flags.insert(.fua) }
        let op: TraceRecord.Op
        if category & Blktrace.tcDiscard != 0 {
            op = .discard
        } else if category & Blktrace.tcFlush != 0 && ev.bytes == 0 {
            return TraceRecord(time: Double(ev.time &- genesis) / 1e9, op: .flush, offset: 0, length: 0, flags: flags)
        } else if category & Blktrace.tcWrite != 0 {
            op = .write
            if category & Blktrace.tcFlush != 0 { flags.insert(.preflush) }
        } else if category & Blktrace.tcRead != 0 || ev.bytes > 0 {
            op = .read
        } else {
            return nil
        }
        // A sector past 2^55 (or a partition offset that wrapped it) has no byte offset.
        let (offset, o) = sector.multipliedReportingOverflow(by: 512)
        if o || offset.addingReportingOverflow(UInt64(ev.bytes)).overflow {
            throw TraceError(
                file: streams[stream].input.fileName, location: .record(byteOffset: ev.byteOffset, index: ev.index),
                message: o
                    ? "offset of sector \(sector) overflows 64 bits"
                    : "request at offset \(offset) with length \(ev.bytes) ends beyond 2^64 bytes")
        }
        return TraceRecord(time: Double(ev.time &- genesis) / 1e9, op: op, offset: offset, length: UInt64(ev.bytes), flags: flags)
    }
}

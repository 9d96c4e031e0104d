import Foundation

/// The layout of qcow2sim's binary native trace format: fixed-size little-endian records after a
/// fixed-size header, so a reader decodes a record with four loads and no parsing.
///
/// ```
/// header, 32 bytes
///   0   8  magic          89 51 32 53 54 52 0a 00   ("\x89Q2STR\n\0")
///   8   4  version        u32, 1
///  12   4  record size    u32, 32
///  16   8  record count   u64; ffffffffffffffff = not known when written (streamed to a pipe):
///                          the records then run to the end of the file
///  24   8  reserved       zero
/// record, 32 bytes
///   0   8  time           f64 (IEEE 754) seconds since the start of the trace;
///                          ffffffffffffffff (a NaN) = the record has no time
///   8   8  offset         u64, guest bytes
///  16   8  length         u64, bytes (0 for flushes)
///  24   1  op             0 R, 1 W, 2 D (discard), 3 Z (write-zeroes),
///                          4 ZU (write-zeroes that may unmap), 5 F (flush)
///  25   1  flags          bit 0 FUA, bit 2 preflush, bit 3 the record has a volume;
///                          every other bit zero
///  26   2  reserved       zero
///  28   4  volume         u32, the volume number when flag bit 3 is set, else zero
///                          (files written before volumes existed have zeros here: readable)
/// ```
///
/// The magic's first byte has the high bit set and its last is NUL, so no text trace starts with
/// it and a transfer that strips the eighth bit or rewrites line ends is caught.
public enum NativeBinaryTrace {
    /// The eight bytes every binary trace starts with.
    public static let magic: [UInt8] = [0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0A, 0x00]
    /// The magic as one little-endian word, for the per-file check.
    static let magicWord: UInt64 = magic.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    /// The only version written and read.
    public static let version: UInt32 = 1
    /// Bytes in the header.
    public static let headerSize = 32
    /// Bytes in one record.
    public static let recordSize = 32
    /// The record count of a file written without knowing how many records would follow.
    public static let unknownCount = UInt64.max
    /// The time field of a record without a time.
    static let noTime = UInt64.max
    /// Flag bits a record may carry (the unmap flag is op code 4, not a flag bit).
    static let allowedFlags = TraceRecord.Flags.fua.rawValue | TraceRecord.Flags.preflush.rawValue
    /// Flag bit 3: bytes 28–31 hold the record's volume number.
    static let volumeFlag: UInt8 = 1 << 3

    /// The volume number `--device` names for a native trace (0 to 2^32 − 2), or a usage error.
    static func volumeNumber(_ device: String) throws -> UInt64 {
        guard let n = UInt64(device), n < UInt64(UInt32.max) else {
            throw TraceError(
                file: "--device", location: .file,
                message: "invalid volume '\(device)' (expected a decimal volume number from 0 to 4294967294)", exitCode: 64)
        }
        return n
    }

    /// Op codes in record order; the index is the code.
    static let opNames = "0 R, 1 W, 2 D, 3 Z, 4 ZU or 5 F"

    /// Whether `head` starts with the binary trace magic.
    public static func hasMagic(_ head: ArraySlice<UInt8>) -> Bool {
        head.count >= magic.count && head.prefix(magic.count).elementsEqual(magic)
    }

    /// The 32-byte header announcing `count` records.
    public static func header(count: UInt64) -> [UInt8] {
        var h = magic
        h.reserveCapacity(headerSize)
        withUnsafeBytes(of: version.littleEndian) { h += $0 }
        withUnsafeBytes(of: UInt32(recordSize).littleEndian) { h += $0 }
        withUnsafeBytes(of: count.littleEndian) { h += $0 }
        h += repeatElement(0, count: 8)
        return h
    }

    /// Encodes `r` into the 32 bytes at `p`.
    @inline(__always)
    static func encode(_ r: TraceRecord, into p: UnsafeMutableRawPointer, volume: UInt32? = nil) {
        let code: UInt8
        switch r.op {
        case .read: code = 0
        case .write: code = 1
        case .discard: code = 2
        case .writeZeroes: code = r.flags.contains(.unmap) ? 4 : 3
        case .flush: code = 5
        }
        p.storeBytes(of: (r.time?.bitPattern ?? noTime).littleEndian, as: UInt64.self)
        p.storeBytes(of: r.offset.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: r.length.littleEndian, toByteOffset: 16, as: UInt64.self)
        // Byte 24 is the op, 25 the flags, 26–31 reserved: one little-endian word.
        var flags = UInt64(r.flags.rawValue & allowedFlags)
        if volume != nil { flags |= UInt64(volumeFlag) }
        let v = UInt64(volume ?? 0) << 32
        p.storeBytes(of: (UInt64(code) | flags << 8 | v).littleEndian, toByteOffset: 24, as: UInt64.self)
    }
}

/// Writes records in the binary native trace format (see ``NativeBinaryTrace``), buffering them
/// for the caller to flush in chunks like ``NativeTraceWriter``.
public struct NativeBinaryTraceWriter {
    /// Formatted output not yet taken by the caller (starts with the header).
    public private(set) var bytes: [UInt8]
    /// Records appended so far.
    public private(set) var count: UInt64 = 0

    /// A writer whose header announces `count` records, or ``NativeBinaryTrace/unknownCount``
    /// when the number is not known yet (the caller may patch the header's count at the end,
    /// see ``NativeBinaryTrace/header(count:)``).
    public init(count: UInt64 = NativeBinaryTrace.unknownCount) {
        bytes = NativeBinaryTrace.header(count: count)
        bytes.reserveCapacity(1 << 20)
    }

    /// Appends one record; with `volume`, the record carries that volume number.
    @inline(__always)
    public mutating func append(_ r: TraceRecord, volume: UInt32? = nil) {
        let at = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: NativeBinaryTrace.recordSize))
        bytes.withUnsafeMutableBytes { raw in
            guard let b = raw.baseAddress else { return }
            NativeBinaryTrace.encode(r, into: b + at, volume: volume)
        }
        count += 1
    }

    /// Returns and clears the buffered output.
    public mutating func take() -> [UInt8] {
        defer { bytes.removeAll(keepingCapacity: true) }
        return bytes
    }

    /// Writes `records` to `path` through ``OutputFile`` (a regular file is replaced atomically),
    /// streaming in 1 MiB chunks; `-` writes to standard output. The header's record count is exact when `count` is given
    /// and the sequence delivers that many records, or when the output can be rewritten in
    /// place; a pipe keeps ``NativeBinaryTrace/unknownCount``. Returns the number of records.
    public static func write<S: Sequence>(_ records: S, count: UInt64? = nil, to path: String) throws -> Int
    where S.Element == TraceRecord {
        var writer = NativeBinaryTraceWriter(count: count ?? NativeBinaryTrace.unknownCount)
        let out = try OutputFile(path: path)
        do {
            for r in records {
                writer.append(r)
                if writer.bytes.count >= 1 << 20 { try out.write(writer.take()) }
            }
            try out.write(writer.take())
            try writer.finish(out, path: path, announced: count)
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return Int(writer.count)
    }

    /// Makes the header's count agree with the records written: rewrites it in place when it
    /// was unknown or differs; a pipe (no rewriting) keeps ``NativeBinaryTrace/unknownCount``,
    /// and an announced count that cannot be corrected is an internal error (exit 70).
    public func finish(_ out: OutputFile, path: String, announced: UInt64?) throws {
        if announced == count { return }
        let fixed = NativeBinaryTrace.header(count: count)
        if try out.rewrite(fixed, at: 0) { return }
        if announced == nil { return }
        throw TraceError(
            file: path, location: .file,
            message: "wrote \(count) records but the header announced \(announced ?? 0) and cannot be rewritten", exitCode: 70)
    }
}

/// Reads the binary native trace format (see ``NativeBinaryTrace``) with large reads (1 MiB
/// chunks), from a file, a decompressor's pipe or memory, in constant memory.
///
/// Every record is checked: op code, flag bits, reserved bytes, time (finite and non-negative,
/// or none) and that offset + length fits in 64 bits. Errors are located by byte offset and
/// 0-based record index; header errors name the file.
public struct NativeBinaryTraceReader: TraceReader {
    private let input: ByteInput
    private var index = 0
    private var announced: UInt64 = 0
    private var headerRead = false
    /// Decoded records: the first `batchCount` of `batchSize` are valid.
    private var batch: [TraceRecord] = []
    private var batchCount = 0
    private var position = 0
    /// Where volume numbers are interned (nil: records are not tagged).
    private var volumes: VolumeTable?
    /// `--device`: only records of this volume number.
    private var selected: UInt64?
    /// The file name used in error messages.
    public let fileName: String

    /// Tags records with their volumes in `volumes` and keeps only volume `device` (a decimal
    /// number) when given; a usage error (exit 64) for a device that is not a number.
    mutating func select(_ device: String?, volumes: VolumeTable?) throws {
        self.volumes = volumes
        if let device { selected = try NativeBinaryTrace.volumeNumber(device) }
    }

    /// Opens `path` for streaming (compressed files are decompressed by the system's tools).
    public init(path: String) throws {
        self.init(input: try TraceFile.openInput(path: path, decompress: true))
    }

    /// Reads bytes already in memory (tests, fuzzing, benchmarks).
    public init(bytes: [UInt8], fileName: String = "<memory>") {
        self.init(input: ByteInput(bytes: bytes, fileName: fileName))
    }

    init(input: ByteInput) {
        self.input = input
        fileName = input.fileName
    }

    /// `byte N (record I)` of the record most recently returned.
    public var location: TraceLocation {
        // Records are fixed-size, so the offset follows from the index.
        index == 0
            ? .file
            : .record(
                byteOffset: UInt64(NativeBinaryTrace.headerSize) + UInt64(index - 1) * UInt64(NativeBinaryTrace.recordSize),
                index: index - 1)
    }

    private func fileError(_ m: String) -> TraceError { TraceError(file: fileName, location: .file, message: m) }

    private func recordError(_ offset: UInt64, _ i: Int, _ m: String) -> TraceError {
        TraceError(file: fileName, location: .record(byteOffset: offset, index: i), message: m)
    }

    private mutating func readHeader() throws {
        let size = NativeBinaryTrace.headerSize
        guard try input.ensure(size) else {
            if input.available == 0 { throw fileError("empty trace (no records)") }
            throw fileError("truncated header: \(input.available) bytes, expected a \(size)-byte qcow2sim binary trace header")
        }
        let s = input.start
        let (word, version, recordSize, count, reserved) = input.buffer.withUnsafeBytes { raw in
            let p = raw.baseAddress.unsafelyUnwrapped + s
            return (
                UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
            )
        }
        guard word == NativeBinaryTrace.magicWord else {
            let found = input.buffer[s..<s + 8].map { String(format: "%02x", $0) }.joined(separator: " ")
            let expected = NativeBinaryTrace.magic.map { String(format: "%02x", $0) }.joined(separator: " ")
            throw fileError("bad magic \(found) (expected \(expected), a qcow2sim binary trace)")
        }
        guard version == NativeBinaryTrace.version else {
            throw fileError("unsupported binary trace version \(version) (expected \(NativeBinaryTrace.version))")
        }
        guard recordSize == NativeBinaryTrace.recordSize else {
            throw fileError("unsupported record size \(recordSize) (expected \(NativeBinaryTrace.recordSize))")
        }
        guard reserved == 0 else { throw fileError("header bytes 24 to 31 are reserved and must be zero") }
        announced = count
        headerRead = true
        input.start += size
    }

    /// The next record, or `nil` at the end of the input.
    @inline(__always)
    public mutating func next() throws -> TraceRecord? {
        guard volumes != nil else {
            guard var r = try nextRecord() else { return nil }
            r.volume = 0
            return r
        }
        while var r = try nextRecord() {
            // The raw number travels in `volume` (+1, so 0 stays "none") until interned here.
            let raw = r.volume
            if let selected, raw == 0 || UInt64(raw - 1) != selected { continue }
            r.volume = raw == 0 ? 0 : volumes?.intern(number: UInt64(raw - 1)) ?? 0
            return r
        }
        return nil
    }

    /// Moves into `buffer`, from index `n` on, the records that follow for as long as each has no
    /// time and `admission` admits it (with its volume 0, as `next()` returns it); returns how
    /// many. Each is consumed as if `next()` had returned it: first what is left of the current
    /// decoded batch, then records decoded straight from the input's buffer (one pass, no copy
    /// through the batch, the input refilled as it runs out). Stops at the first record that is
    /// timed, refused, flagged or invalid, and at the end of the input or the header's count, so
    /// `next()` meets each of those as before; throws what reading on would (a read error, a
    /// truncated record, a count mismatch), as `next()` would at the same record. None when
    /// records carry volumes (`select`) or before the header is read.
    @inline(__always)
    mutating func takeUntimed(
        into buffer: UnsafeMutableBufferPointer<TraceRecord>, from n: Int, admitting admission: UntimedAdmission
    ) throws -> Int {
        guard volumes == nil, headerRead else { return 0 }
        var k = n
        if position < batchCount {
            let start = position
            let end = batchCount
            var p = start
            batch.withUnsafeBufferPointer { b in
                while k < buffer.count && p < end {
                    var r = b[p]
                    guard r.time == nil, admission.admits(r) else { break }
                    r.volume = 0
                    buffer[k] = r
                    k &+= 1
                    p &+= 1
                }
            }
            position = p
            index += p - start
            if p < end { return k - n }
        }
        // Records came from the batch: what is buffered follows them, without a refill (which
        // may throw: the next call makes it, before any record of its own).
        if k > n { return k - n + decodeUntimed(into: buffer, from: k, admitting: admission) }
        // `more()` as `nextBatch` calls it (the batch is used up here too): refills the input,
        // ends cleanly or throws at the record `next()` would throw at.
        guard try more() else { return 0 }
        return decodeUntimed(into: buffer, from: k, admitting: admission)
    }

    /// The direct part of `takeUntimed`: decodes from the input's buffer while each record is an
    /// untimed read (or write, when admitted) without flags or volume that `admission` admits;
    /// every other record, valid or not, is left for `nextBatch`, whose checks and errors apply.
    @inline(__always)
    private mutating func decodeUntimed(
        into buffer: UnsafeMutableBufferPointer<TraceRecord>, from n: Int, admitting admission: UntimedAdmission
    ) -> Int {
        let size = NativeBinaryTrace.recordSize
        var m = min(input.available / size, buffer.count - n)
        if announced != NativeBinaryTrace.unknownCount { m = Int(min(UInt64(m), announced &- UInt64(index))) }
        guard m > 0 else { return 0 }
        let s = input.start
        let limit = admission.limit
        let maxLength = admission.filter.maxLength
        // The tail word (op, flags, reserved, volume) of a plain read is 0, of a plain write 1.
        let maxTail: UInt64 = admission.filter.writes ? 1 : 0
        let k = input.buffer.withUnsafeBytes { raw in
            let base = raw.baseAddress.unsafelyUnwrapped + s
            var k = 0
            while k < m {
                let p = base + k &* size
                let timeBits = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
                let offset = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                let length = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                let tail = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
                // offset <= limit and length <= limit - offset: inside the disk, no wrap.
                guard timeBits == NativeBinaryTrace.noTime, tail <= maxTail, length <= maxLength, offset <= limit,
                    length <= limit &- offset
                else { break }
                buffer[n &+ k] = TraceRecord(op: tail == 0 ? .read : .write, offset: offset, length: length)
                k &+= 1
            }
            return k
        }
        input.start += k &* size
        index += k
        return k
    }

    @inline(__always)
    private mutating func nextRecord() throws -> TraceRecord? {
        if position < batchCount {
            let r = batch[position]
            position += 1
            index += 1
            return r
        }
        return try nextBatch()
    }

    /// Decodes the records already buffered (up to ``batchSize``) in one pass over the buffer and
    /// returns the first: one access to the input's buffer per batch instead of per record.
    /// A batch stops before an invalid record, which is reported when it is reached, after
    /// every record before it was returned.
    private mutating func nextBatch() throws -> TraceRecord? {
        if !headerRead { try readHeader() }
        // Allocated at the first batch: a reader that never reads (the placeholders of
        // `AnyTraceReader`) costs none of it.
        if batch.isEmpty {
            batch = [TraceRecord](repeating: TraceRecord(op: .read, offset: 0, length: 0), count: Self.batchSize)
        }
        guard try more() else { return nil }
        let size = NativeBinaryTrace.recordSize
        var n = min(input.available / size, Self.batchSize)
        if announced != NativeBinaryTrace.unknownCount { n = Int(min(UInt64(n), announced - UInt64(index))) }
        position = 0
        let s = input.start
        // Stored through the batch's buffer: an append paid a uniqueness and a capacity check
        // per record.
        batchCount = batch.withUnsafeMutableBufferPointer { out in
            input.buffer.withUnsafeBytes { raw in
                let base = raw.baseAddress.unsafelyUnwrapped + s
                var k = 0
                while k < n, let r = Self.decode(base + k * size) {
                    out[k] = r
                    k &+= 1
                }
                return k
            }
        }
        input.start += batchCount * size
        guard batchCount > 0 else { throw invalidRecord() }
        position = 1
        index += 1
        return batch[0]
    }

    /// Records decoded per pass: 128 KiB of input, an array of 4096 records (160 KiB).
    static let batchSize = 4096

    /// The record at `p`, or `nil` when any field fails the checks.
    @inline(__always)
    private static func decode(_ p: UnsafeRawPointer) -> TraceRecord? {
        let timeBits = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        let offset = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let length = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let tail = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        // Byte 24 is the op, 25 the flags, 26–31 reserved: anything above the known bits is bad.
        let code = tail & 0xFF
        let flags = UInt8(truncatingIfNeeded: tail >> 8)
        let time = Double(bitPattern: timeBits)
        let hasVolume = flags & NativeBinaryTrace.volumeFlag != 0
        let volume = UInt32(truncatingIfNeeded: tail >> 32)
        if code > 5 || (tail >> 16) & 0xFFFF != 0 || (!hasVolume && volume != 0) || volume == UInt32.max
            || flags & ~(NativeBinaryTrace.allowedFlags | NativeBinaryTrace.volumeFlag) != 0
            || (timeBits != NativeBinaryTrace.noTime && !(time >= 0 && time.isFinite))
            || offset.addingReportingOverflow(length).overflow
        {
            return nil
        }
        let op: TraceRecord.Op
        var recordFlags = TraceRecord.Flags(rawValue: flags & NativeBinaryTrace.allowedFlags)
        switch code {
        case 0: op = .read
        case 1: op = .write
        case 2: op = .discard
        case 3: op = .writeZeroes
        case 4:
            op = .writeZeroes
            recordFlags.insert(.unmap)
        default: op = .flush
        }
        return TraceRecord(
            time: timeBits == NativeBinaryTrace.noTime ? nil : time, op: op, offset: offset, length: length,
            flags: recordFlags, volume: hasVolume ? volume + 1 : 0)
    }

    /// Makes the next record available; `false` at a clean end. Throws for a truncated record and
    /// for a file whose record count disagrees with its header.
    private mutating func more() throws -> Bool {
        let size = NativeBinaryTrace.recordSize
        let known = announced != NativeBinaryTrace.unknownCount
        if known && UInt64(index) >= announced {
            if try input.ensure(1) {
                throw recordError(
                    input.offset, index,
                    "record count mismatch: the header says \(announced) records but the file holds more data")
            }
            if index == 0 { throw fileError("empty trace (no records)") }
            return false
        }
        if try input.ensure(size) { return true }
        if input.available == 0 {
            if known {
                throw recordError(
                    input.offset, index,
                    "record count mismatch: the header says \(announced) records but the file ends after \(index)")
            }
            if index == 0 { throw fileError("empty trace (no records)") }
            return false
        }
        throw recordError(
            input.offset, index, "truncated record: \(input.available) bytes left, expected a \(size)-byte record")
    }

    /// The error for the record at the input's position, which failed the checks, naming the
    /// first field at fault.
    private func invalidRecord() -> TraceError {
        let at = input.offset
        let s = input.start
        let (timeBits, offset, length, tail) = input.buffer.withUnsafeBytes { raw in
            let p = raw.baseAddress.unsafelyUnwrapped + s
            return (
                UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
            )
        }
        let code = tail & 0xFF
        let flags = UInt8(truncatingIfNeeded: tail >> 8)
        let t = Double(bitPattern: timeBits)
        let message: String
        if code > 5 {
            message = "invalid op code \(code) (expected \(NativeBinaryTrace.opNames))"
        } else if flags & ~(NativeBinaryTrace.allowedFlags | NativeBinaryTrace.volumeFlag) != 0 {
            message = String(format: "invalid flags 0x%02x (expected 0x01 FUA, 0x04 preflush, 0x08 volume or none)", flags)
        } else if (tail >> 16) & 0xFFFF != 0 {
            message = "record bytes 26 and 27 are reserved and must be zero"
        } else if flags & NativeBinaryTrace.volumeFlag == 0 && tail >> 32 != 0 {
            message = "record bytes 28 to 31 (the volume) must be zero without flag 0x08"
        } else if tail >> 32 == UInt64(UInt32.max) {
            message = "volume 4294967295 is out of range (expected 0 to 4294967294)"
        } else if timeBits != NativeBinaryTrace.noTime && !(t >= 0 && t.isFinite) {
            message = "invalid time \(t) (expected non-negative finite seconds, or bits ffffffffffffffff for none)"
        } else {
            message = "request at offset \(offset) with length \(length) ends beyond 2^64 bytes"
        }
        return recordError(at, index, message)
    }
}

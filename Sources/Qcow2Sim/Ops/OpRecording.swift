import Foundation
import TraceKit

/// A recording of a trace session's metadata operations, streamed to a file: what one live run
/// emits, replayable through any number of cache configurations that share its stream key (the
/// chain's geometry and each image's L2 entry size), each giving the counts and events a live run
/// with that configuration gives.
///
/// Layout (all integers little-endian):
///
/// | bytes | field |
/// |---|---|
/// | 8 | magic `89 51 32 53 4f 50 53 0a` ("\x89Q2SOPS\n") |
/// | 4 | layout version (1) |
/// | 4 | number of images N (base first) |
/// | 32 × N | per image: cluster bits (1), extended L2 (1), refcount order (1), 5 zero bytes, virtual size (8), L2 entry size (8), refcount entry size (8) |
/// | 4 + K | the stream key: length K, then K bytes of UTF-8 (every option the stream depends on) |
/// | … | operations |
/// | 1 + 8 | end marker `1f`, operation count (8) |
///
/// An operation starts with a byte `code | kind << 5 | short << 6 | long << 7`: `code` is
/// `MetadataOp.Code`'s raw value, `kind` 1 for the L2 cache; `long` means a flag byte and the
/// image (LEB128) follow, otherwise the image is 0 and `short` is the flag (0 or 1). Then, by
/// code: table operations (`get`, `repeatGet`, `put`, `markDirty`, `regetIfDropped`, `putHeld`)
/// carry the offset as a zigzag LEB128 delta from the previous table offset of the same kind,
/// and `repeatGet` and `task` a LEB128 count; `freeCluster` carries its offset and held block as
/// LEB128; `hostGuard` the 8-byte digest; `beginRequest` the record index as a LEB128 delta from
/// the previous one and, with the flag, the time's 8-byte bit pattern; `open` the time's bit
/// pattern; `beginClose` the request count (LEB128). A get/put pair of one slice costs 4–6 bytes.
public struct OpRecording: Sendable {
    /// The file.
    public let path: String
    /// Each image's geometry, base first.
    public let geometries: [Geometry]
    /// Each image's L2 cache entry size: part of the stream key.
    public let l2EntrySizes: [UInt64]
    /// Operations recorded.
    public let operations: UInt64
    /// File size in bytes.
    public let bytes: UInt64
    /// The live run's report (its model counters hold for every replay; nil for a recording
    /// opened from a file).
    public let liveReport: SimulationReport?
    /// Every option the stream depends on, as text: a replay's configuration must give the same.
    public let streamKey: String

    static let magic: [UInt8] = [0x89, 0x51, 0x32, 0x53, 0x4F, 0x50, 0x53, 0x0A]
    static let layoutVersion: UInt32 = 1
    static let endMarker: UInt8 = 0x1F

    /// Opens a recording written by `Simulation.record`, checking its header and end marker.
    ///
    /// - Throws: `SimulationError.image` (exit 65) naming the file and the byte offset of the
    ///   first problem, or exit 66 for a file that cannot be read.
    public init(path: String) throws {
        let reader = try OpFileReader(path: path)
        self.path = path
        (geometries, l2EntrySizes, streamKey) = try reader.header()
        operations = try reader.trailerCount()
        bytes = reader.fileSize
        liveReport = nil
    }

    init(
        path: String, geometries: [Geometry], l2EntrySizes: [UInt64], operations: UInt64, bytes: UInt64,
        liveReport: SimulationReport?, streamKey: String
    ) {
        self.path = path
        self.streamKey = streamKey
        self.geometries = geometries
        self.l2EntrySizes = l2EntrySizes
        self.operations = operations
        self.bytes = bytes
        self.liveReport = liveReport
    }

    /// Bytes per operation on average.
    public var bytesPerOperation: Double { operations == 0 ? 0 : Double(bytes) / Double(operations) }
}

/// Writes operations to a recording as they are consumed (constant memory: a 1 MiB buffer).
final class OpRecorder: MetadataOpConsumer {
    private let fd: Int32
    let path: String
    @exclusivity(unchecked) private var buffer: [UInt8] = []
    @exclusivity(unchecked) private var lastOffset: (UInt64, UInt64) = (0, 0)
    @exclusivity(unchecked) private var lastIndex: UInt64 = 0
    @exclusivity(unchecked) private(set) var count: UInt64 = 0
    @exclusivity(unchecked) private(set) var written: UInt64 = 0
    @exclusivity(unchecked) private(set) var error: String?

    /// Creates (truncates) `path` and writes the header.
    init(path: String, geometries: [Geometry], l2EntrySizes: [UInt64], refcountEntrySizes: [UInt64], streamKey: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SimulationError.image("\(path): error: cannot create the recording: \(String(cString: strerror(errno)))", 73)
        }
        buffer.reserveCapacity(1 << 20 + 64)
        buffer += OpRecording.magic
        put32(OpRecording.layoutVersion)
        put32(UInt32(geometries.count))
        for (k, g) in geometries.enumerated() {
            buffer += [UInt8(g.clusterBits), g.extendedL2 ? 1 : 0, UInt8(g.refcountOrder), 0, 0, 0, 0, 0]
            put64(g.virtualSize)
            put64(l2EntrySizes[k])
            put64(refcountEntrySizes[k])
        }
        let key = Array(streamKey.utf8)
        put32(UInt32(key.count))
        buffer += key
    }

    deinit { if fd >= 0 { close(fd) } }

    func consume(_ ops: UnsafeMutableBufferPointer<MetadataOp>) {
        for op in ops { encode(op) }
        count += UInt64(ops.count)
        if buffer.count >= 1 << 20 { flush() }
    }

    /// Writes the end marker and closes the file; returns the file size.
    func finish() throws -> UInt64 {
        buffer.append(OpRecording.endMarker)
        put64(count)
        flush()
        if let error { throw SimulationError.image("\(path): error: writing the recording failed: \(error)", 74) }
        return written
    }

    private func flush() {
        guard error == nil else {
            buffer.removeAll(keepingCapacity: true)
            return
        }
        var done = 0
        buffer.withUnsafeBytes { raw in
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    error = String(cString: strerror(errno))
                    return
                }
                done += n
            }
        }
        written += UInt64(done)
        buffer.removeAll(keepingCapacity: true)
    }

    @inline(__always) private func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { buffer += $0 } }
    @inline(__always) private func put64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { buffer += $0 } }
    @inline(__always) private func leb(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            buffer.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        buffer.append(UInt8(v))
    }
    @inline(__always) private func zigzag(_ d: Int64) { leb(UInt64(bitPattern: (d << 1) ^ (d >> 63))) }

    private func encode(_ op: MetadataOp) {
        let long = op.image != 0 || op.flag > 1
        var b = op.code.rawValue | (op.kind == .l2 ? 0x20 : 0)
        if long { b |= 0x80 } else if op.flag == 1 { b |= 0x40 }
        buffer.append(b)
        if long {
            buffer.append(op.flag)
            leb(UInt64(op.image))
        }
        switch op.code {
        case .get, .repeatGet, .put, .markDirty, .regetIfDropped, .putHeld:
            let last = op.kind == .l2 ? lastOffset.1 : lastOffset.0
            zigzag(Int64(bitPattern: op.offset &- last))
            if op.kind == .l2 { lastOffset.1 = op.offset } else { lastOffset.0 = op.offset }
            if op.code == .repeatGet { leb(UInt64(op.count)) }
        case .freeCluster:
            leb(op.offset)
            leb(op.extra)
        case .hostGuard: put64(op.extra)
        case .beginRequest:
            zigzag(Int64(bitPattern: op.offset &- lastIndex))
            lastIndex = op.offset
            if op.flag != 0 { put64(op.extra) }
        case .open: put64(op.extra)
        case .beginClose: leb(op.offset)
        case .task: leb(UInt64(op.count))
        case .writeCache, .setDependency, .dependsOnFlush, .endRequest, .deferBegin, .captureBegin, .captureEnd, .deferEnd:
            break
        }
    }
}

/// Reads a recording back in batches.
final class OpFileReader {
    let path: String
    private let fd: Int32
    let fileSize: UInt64
    @exclusivity(unchecked) private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    @exclusivity(unchecked) private var start = 0
    @exclusivity(unchecked) private var end = 0
    /// File offset of `buffer[0]`.
    @exclusivity(unchecked) private var base: UInt64 = 0
    @exclusivity(unchecked) private var lastOffset: (UInt64, UInt64) = (0, 0)
    @exclusivity(unchecked) private var lastIndex: UInt64 = 0
    @exclusivity(unchecked) private var headerBytes: UInt64 = 0
    /// The end marker has been read.
    @exclusivity(unchecked) private var atEnd = false

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SimulationError.image("\(path): error: cannot open the recording: \(String(cString: strerror(errno)))", 66)
        }
        var st = stat()
        fileSize = fstat(fd, &st) == 0 ? UInt64(st.st_size) : 0
    }

    deinit { if fd >= 0 { close(fd) } }

    private func fail(_ at: UInt64, _ message: String) -> SimulationError {
        SimulationError.image("\(path): byte \(at): error: \(message)", 65)
    }

    private var position: UInt64 { base + UInt64(start) }

    /// Makes at least `n` bytes available (fewer only at the end of the file).
    private func fill(_ n: Int) throws {
        if end - start >= n { return }
        if start > 0 {
            buffer.withUnsafeMutableBytes { raw in
                if end > start { memmove(raw.baseAddress!, raw.baseAddress! + start, end - start) }
            }
            base += UInt64(start)
            end -= start
            start = 0
        }
        while end - start < n {
            let got = buffer.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress! + end, raw.count - end) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SimulationError.image("\(path): error: reading the recording failed: \(String(cString: strerror(errno)))", 74)
            }
            if got == 0 { return }
            end += got
        }
    }

    private func byte() throws -> UInt8 {
        try fill(1)
        guard start < end else { throw fail(position, "the recording ends in the middle of an operation (truncated?)") }
        let b = buffer[start]
        start += 1
        return b
    }

    private func u64() throws -> UInt64 {
        try fill(8)
        guard end - start >= 8 else { throw fail(position, "the recording ends in the middle of an operation (truncated?)") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buffer[start + i]) << UInt64(8 * i) }
        start += 8
        return v
    }

    private func u32() throws -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(try byte()) << UInt32(8 * i) }
        return v
    }

    private func leb() throws -> UInt64 {
        let at = position
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 64 else { throw fail(at, "a variable-length number is longer than 64 bits") }
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
        }
    }

    private func zigzag() throws -> Int64 {
        let u = try leb()
        return Int64(bitPattern: u >> 1) ^ -Int64(bitPattern: u & 1)
    }

    /// Reads the header; the reader is then at the first operation.
    func header() throws -> ([Geometry], [UInt64], String) {
        try fill(16)
        guard end - start >= 16, Array(buffer[0..<8]) == OpRecording.magic else {
            throw fail(0, "not a qcow2sim operation recording (bad magic)")
        }
        start = 8
        let version = try u32()
        guard version == OpRecording.layoutVersion else {
            throw fail(8, "recording layout version \(version); this qcow2sim reads version \(OpRecording.layoutVersion)")
        }
        let n = Int(try u32())
        guard n >= 1 && n <= 64 else { throw fail(12, "\(n) images (expected 1 to 64)") }
        var geometries: [Geometry] = []
        var sizes: [UInt64] = []
        for k in 0..<n {
            let at = position
            let cb = Int(try byte())
            let ext = try byte()
            let ro = Int(try byte())
            for _ in 0..<5 { _ = try byte() }
            let size = try u64()
            let l2 = try u64()
            _ = try u64()
            guard (9...21).contains(cb), ext <= 1, ro <= 6, l2 >= 512, l2.nonzeroBitCount == 1, l2 <= UInt64(1) << UInt64(cb) else {
                throw fail(at, "image \(k): invalid geometry (cluster bits \(cb), extended L2 \(ext), refcount order \(ro), L2 entry size \(l2))")
            }
            geometries.append(Geometry(clusterBits: cb, extendedL2: ext == 1, refcountOrder: ro, virtualSize: size))
            sizes.append(l2)
        }
        let at = position
        let length = Int(try u32())
        guard length <= 1 << 20 else { throw fail(at, "stream key of \(length) bytes (at most 1 MiB)") }
        var key: [UInt8] = []
        for _ in 0..<length { key.append(try byte()) }
        headerBytes = position
        return (geometries, sizes, String(decoding: key, as: UTF8.self))
    }

    /// The operation count in the trailer (checks the end marker).
    func trailerCount() throws -> UInt64 {
        guard fileSize >= headerBytes + 9 else { throw fail(fileSize, "the recording has no end marker (truncated?)") }
        var trailer = [UInt8](repeating: 0, count: 9)
        let got = trailer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, 9, off_t(fileSize - 9)) }
        guard got == 9, trailer[0] == OpRecording.endMarker else {
            throw fail(fileSize - 9, "the recording has no end marker (truncated?)")
        }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(trailer[1 + i]) << UInt64(8 * i) }
        return v
    }

    /// Decodes up to `ops.count` operations; returns how many (0 at the end marker).
    func next(into ops: UnsafeMutableBufferPointer<MetadataOp>, images: Int) throws -> Int {
        var n = 0
        while n < ops.count && !atEnd {
            let at = position
            let b = try byte()
            let raw = b & 0x1F
            if raw == OpRecording.endMarker {
                atEnd = true
                return n
            }
            guard let code = MetadataOp.Code(rawValue: raw) else { throw fail(at, "unknown operation code \(raw)") }
            let kind: CacheKind = b & 0x20 != 0 ? .l2 : .refcount
            var flag: UInt8 = b & 0x40 != 0 ? 1 : 0
            var image = 0
            if b & 0x80 != 0 {
                flag = try byte()
                let i = try leb()
                guard i < UInt64(images) else { throw fail(at, "operation names image \(i), the recording has \(images)") }
                image = Int(i)
            }
            var op = MetadataOp(code, kind, image: image, flag: flag)
            switch code {
            case .get, .repeatGet, .put, .markDirty, .regetIfDropped, .putHeld:
                let last = kind == .l2 ? lastOffset.1 : lastOffset.0
                op.offset = last &+ UInt64(bitPattern: try zigzag())
                if kind == .l2 { lastOffset.1 = op.offset } else { lastOffset.0 = op.offset }
                guard op.offset != 0 else { throw fail(at, "table offset 0") }
                if code == .repeatGet {
                    let c = try leb()
                    guard c <= UInt64(UInt32.max) else { throw fail(at, "repeat count \(c) too large") }
                    op.count = UInt32(c)
                }
            case .freeCluster:
                op.offset = try leb()
                op.extra = try leb()
            case .hostGuard: op.extra = try u64()
            case .beginRequest:
                op.offset = lastIndex &+ UInt64(bitPattern: try zigzag())
                lastIndex = op.offset
                if flag != 0 { op.extra = try u64() }
            case .open: op.extra = try u64()
            case .beginClose: op.offset = try leb()
            case .task:
                let c = try leb()
                guard c <= UInt64(UInt32.max) else { throw fail(at, "task tag \(c) too large") }
                op.count = UInt32(c)
            case .writeCache, .setDependency, .dependsOnFlush, .endRequest, .deferBegin, .captureBegin, .captureEnd, .deferEnd:
                break
            }
            ops[n] = op
            n += 1
        }
        return n
    }
}

extension OpRecording {
    /// Calls `body` with the recorded operations in order, in batches of up to 4096 (constant
    /// memory). The batch is valid only during the call.
    public func forEachBatch(_ body: (UnsafeBufferPointer<MetadataOp>) throws -> Void) throws {
        let reader = try OpFileReader(path: path)
        let images = try reader.header().0.count
        let batch = UnsafeMutableBufferPointer<MetadataOp>.allocate(capacity: 4096)
        batch.initialize(repeating: MetadataOp(.endRequest))
        defer { batch.deallocate() }
        while true {
            let n = try reader.next(into: batch, images: images)
            if n == 0 { return }
            try body(UnsafeBufferPointer(rebasing: batch[0..<n]))
        }
    }
}

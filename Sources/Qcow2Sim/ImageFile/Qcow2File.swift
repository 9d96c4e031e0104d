#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A real qcow2 image opened read-only, so a simulation can start from a user's own disk
/// (qcow2-model.md §12, "parse the real image at start-up").
///
/// The header is parsed and validated at `init`; tables are read from disk only when asked for and
/// are not kept, so memory is proportional to what the caller reads. The file is never written.
///
/// ```swift
/// let image = try Qcow2File(path: "disk.qcow2")
/// let l1 = try image.l1Table()
/// if l1[0] & EntryBits.offsetMask != 0 {
///     let (entries, _) = try image.l2Table(at: l1[0] & EntryBits.offsetMask)
/// }
/// ```
public final class Qcow2File: Sendable {
    /// The path as given to `init`, used in error messages.
    public let path: String
    /// The validated header.
    public let header: Qcow2Header
    /// The file's length in bytes at open (`st_size`): the host-file length `L` of §11.
    public let fileLength: UInt64
    /// Where the bytes come from: a read-only descriptor (closed in `deinit`) or memory.
    private enum Source {
        case descriptor(Int32)
        case memory([Extent])
    }
    private struct Extent {
        var offset: UInt64
        var bytes: [UInt8]
    }
    private let source: Source

    /// Opens `path` read-only, then parses and validates its header and checks that the L1 and
    /// refcount tables lie inside the file.
    ///
    /// - Throws: `Qcow2FileError` with exit code 66 when the file cannot be opened or is not a
    ///   regular file, 74 when a read fails, and 65 for anything the simulator cannot start from
    ///   (see the messages in `Qcow2Header`).
    public init(path: String) throws {
        self.path = path
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before the
        // regular-file check below could refuse it. It has no effect on regular files.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            throw Qcow2FileError(file: path, byteOffset: nil, message: "cannot open: \(Self.errnoText())", exitCode: 66)
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let text = Self.errnoText()
            close(fd)
            throw Qcow2FileError(file: path, byteOffset: nil, message: "cannot stat: \(text)", exitCode: 66)
        }
        if st.st_mode & S_IFMT != S_IFREG {
            close(fd)
            throw Qcow2FileError(
                file: path, byteOffset: nil, message: "not a regular file (\(Self.fileKind(st.st_mode)))", exitCode: 66)
        }
        let length = UInt64(st.st_size)
        let source = Source.descriptor(fd)
        do {
            header = try Self.parseHeader(source, path: path, length: length)
        } catch {
            close(fd)
            throw error
        }
        self.source = source
        self.fileLength = length
        self.identity = (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// An image held in memory under the name `name` (the seeded mutation test and the image
    /// fuzz target): the same checks as `init(path:)`; every byte counts as allocated data.
    public convenience init(bytes: [UInt8], name: String) throws {
        try self.init(extents: [(0, bytes)], length: UInt64(bytes.count), name: name)
    }

    /// A sparse image in memory: `length` bytes that are zero except for `extents` (offset,
    /// bytes; sorted, not overlapping). Lets a fuzz input describe an image with 2 MiB clusters
    /// in a few KiB.
    public init(extents: [(UInt64, [UInt8])], length: UInt64, name: String) throws {
        path = name
        source = .memory(extents.map { Extent(offset: $0.0, bytes: $0.1) })
        fileLength = length
        identity = nil
        header = try Self.parseHeader(source, path: name, length: fileLength)
    }

    private static func parseHeader(_ source: Source, path: String, length: UInt64) throws -> Qcow2Header {
        let prefix = try read(source, path: path, count: 112, at: 0)
        return try Qcow2Header.parse(
            prefix: BigEndianReader(bytes: prefix), fileLength: length, file: path,
            readCluster0: { BigEndianReader(bytes: try read(source, path: path, count: $0, at: 0)) })
    }

    deinit {
        if case .descriptor(let fd) = source { close(fd) }
    }

    /// `(st_dev, st_ino)` of an opened file (nil in memory): how a backing chain recognises a
    /// file it has already opened under another name.
    public let identity: (device: UInt64, inode: UInt64)?

    /// What `ls -l` would call a non-regular file.
    private static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "mode \(String(mode & S_IFMT, radix: 8))"
        }
    }

    /// The raw L1 entries as stored (`header.l1Size` of them, COPIED bit included; mask with
    /// `EntryBits.offsetMask` for the L2 table offset). Read from disk on every call.
    public func l1Table() throws -> [UInt64] {
        let h = header
        return decodeBigEndianWords(try readTable("l1 table", at: h.l1TableOffset, bytes: UInt64(h.l1Size) * 8))
    }

    /// The raw refcount-table entries as stored (`refcountTableClusters * CS / 8` of them; mask
    /// with `EntryBits.reftableOffsetMask`, 0 = no refcount block). Read from disk on every call.
    public func refcountTable() throws -> [UInt64] {
        let h = header
        let bytes = UInt64(h.refcountTableClusters) << UInt64(h.clusterBits)
        return decodeBigEndianWords(try readTable("refcount table", at: h.refcountTableOffset, bytes: bytes))
    }

    /// The L2 table at `hostOffset` (an L1 entry's offset field): `geometry.l2Entries` raw first
    /// words, and with extended L2 the matching subcluster bitmaps (bit i allocated, bit 32+i zero).
    ///
    /// - Throws: `Qcow2FileError` if the offset is not cluster-aligned or the table runs past EOF.
    public func l2Table(at hostOffset: UInt64) throws -> (entries: [UInt64], bitmaps: [UInt64]?) {
        let g = header.geometry
        try checkAligned("l2 table", hostOffset)
        let words = decodeBigEndianWords(try readTable("l2 table", at: hostOffset, bytes: g.clusterSize))
        guard g.extendedL2 else { return (words, nil) }
        var entries = [UInt64](), bitmaps = [UInt64]()
        entries.reserveCapacity(g.l2Entries)
        bitmaps.reserveCapacity(g.l2Entries)
        for i in 0..<g.l2Entries {
            entries.append(words[2 * i])
            bitmaps.append(words[2 * i + 1])
        }
        return (entries, bitmaps)
    }

    /// The decoded refcounts of the refcount block at `hostOffset` (a refcount-table entry's
    /// offset): `geometry.refblockEntries` values, entry i being host cluster
    /// `reftable_index * refblockEntries + i`.
    ///
    /// Refcounts of 8 bits or more are big-endian; narrower ones are packed from the
    /// least-significant bit of each byte (qcow2-model.md §1.2).
    ///
    /// - Throws: `Qcow2FileError` if the offset is not cluster-aligned or the block runs past EOF.
    public func refcountBlock(at hostOffset: UInt64) throws -> [UInt64] {
        let g = header.geometry
        try checkAligned("refcount block", hostOffset)
        let bytes = try readTable("refcount block", at: hostOffset, bytes: g.clusterSize)
        let bits = g.refcountBits
        if bits == 64 { return decodeBigEndianWords(bytes) }
        if bits >= 8 {
            // One load per refcount, written into uninitialized storage: a 2 MiB block holds
            // a million 16-bit refcounts (the image fuzz target spent most of its time here).
            let n = Int(g.refblockEntries)
            return bytes.withUnsafeBytes { p in
                [UInt64](unsafeUninitializedCapacity: n) { out, count in
                    for i in 0..<n {
                        let v: UInt64
                        switch bits {
                        case 8: v = UInt64(p[i])
                        case 16: v = UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
                        default: v = UInt64(UInt32(bigEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                        }
                        out.initializeElement(at: i, to: v)
                    }
                    count = n
                }
            }
        }
        let perByte = 8 / bits
        let mask = UInt8((1 << bits) - 1)
        return (0..<Int(g.refblockEntries)).map { i in
            UInt64((bytes[i / perByte] >> UInt8((i % perByte) * bits)) & mask)
        }
    }

    /// The byte ranges of the file that occupy disk space, rounded out to 4 KiB blocks, sorted
    /// and merged: the starting block set of the host-file model (qcow2-model.md §11).
    ///
    /// On Linux the extent map (`FS_IOC_FIEMAP`) is used, because it also lists unwritten extents
    /// (the zero ranges QEMU allocates with `fallocate` instead of writing COW zeroes): those
    /// count in `st_blocks`, which is what QEMU's preallocation probe reads, but
    /// `lseek(SEEK_DATA)` reports them as holes. Without FIEMAP the map comes from
    /// `SEEK_DATA`/`SEEK_HOLE`, and without those from `[0, st_blocks * 512)`.
    public func allocatedRanges() throws -> [Range<UInt64>] {
        guard case .descriptor(let fd) = source else {
            guard case .memory(let extents) = source else { return [] }
            return Self.roundAndMerge(
                extents.compactMap { e in
                    let end = min(e.offset + UInt64(e.bytes.count), fileLength)
                    return e.offset < end ? e.offset..<end : nil
                })
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            throw Qcow2FileError(file: path, byteOffset: nil, message: "cannot stat: \(Self.errnoText())", exitCode: 74)
        }
        let length = UInt64(st.st_size)
        let raw = extentMap(fd: fd) ?? seekDataMap(fd: fd, length: length) ?? fallbackMap(blocks: UInt64(st.st_blocks))
        return Self.roundAndMerge(raw)
    }

    /// The byte ranges `lseek(SEEK_DATA/SEEK_HOLE)` reports as data (written extents only),
    /// rounded out to 4 KiB: what QEMU's file-posix block status sees. Falls back to
    /// `allocatedRanges()` where SEEK_DATA is unsupported.
    public func dataRanges() throws -> [Range<UInt64>] {
        guard case .descriptor(let fd) = source else { return try allocatedRanges() }
        if let raw = seekDataMap(fd: fd, length: fileLength) { return Self.roundAndMerge(raw) }
        return try allocatedRanges()
    }

    // MARK: - Reading

    /// Reads a whole metadata table, which must lie inside the file.
    private func readTable(_ what: String, at offset: UInt64, bytes: UInt64) throws -> [UInt8] {
        if offset > fileLength || bytes > fileLength - offset {
            throw Qcow2FileError(
                file: path, byteOffset: offset,
                message: "truncated \(what): \(bytes) bytes at \(qcow2Hex(offset)), file ends at \(qcow2Hex(fileLength))")
        }
        let data = try Self.read(source, path: path, count: Int(bytes), at: offset)
        if UInt64(data.count) < bytes {
            // The file shrank after open.
            throw Qcow2FileError(
                file: path, byteOffset: offset,
                message: "truncated \(what): \(bytes) bytes at \(qcow2Hex(offset)), read only \(data.count)")
        }
        return data
    }

    /// Table offsets come from L1 / refcount-table entries; QEMU rejects unaligned ones as corruption.
    private func checkAligned(_ what: String, _ offset: UInt64) throws {
        let g = header.geometry
        if offset == 0 || g.offsetInCluster(offset) != 0 {
            throw Qcow2FileError(
                file: path, byteOffset: offset,
                message:
                    "\(what) offset \(qcow2Hex(offset)) is not a non-zero multiple of the cluster size \(qcow2Hex(g.clusterSize))"
            )
        }
    }

    /// Up to `count` bytes at `offset`; fewer only at end of file.
    private static func read(_ source: Source, path: String, count: Int, at offset: UInt64) throws -> [UInt8] {
        let fd: Int32
        switch source {
        case .memory(let extents):
            // The file length bounds every read (`readTable` checks it); zeroes between extents.
            var out = [UInt8](repeating: 0, count: count)
            let end = offset + UInt64(count)
            for e in extents where e.offset < end && offset < e.offset + UInt64(e.bytes.count) {
                let from = max(offset, e.offset), to = min(end, e.offset + UInt64(e.bytes.count))
                out.replaceSubrange(
                    Int(from - offset)..<Int(to - offset), with: e.bytes[Int(from - e.offset)..<Int(to - e.offset)])
            }
            return out
        case .descriptor(let d): fd = d
        }
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { p in
                pread(fd, p.baseAddress.map { $0 + done }, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw Qcow2FileError(
                    file: path, byteOffset: offset + UInt64(done), message: "read failed: \(errnoText())", exitCode: 74)
            }
            if n == 0 { break }
            done += n
        }
        buffer.removeLast(count - done)
        return buffer
    }

    /// The current `errno` as text.
    private static func errnoText() -> String {
        String(cString: strerror(errno)).lowercased()
    }

    // MARK: - Allocation map

    /// Extents from `FS_IOC_FIEMAP`, or `nil` where the ioctl is unavailable.
    private func extentMap(fd: Int32) -> [Range<UInt64>]? {
        #if os(Linux)
            // struct fiemap: start, length (u64), flags, mapped_extents, extent_count, reserved (u32),
            // then struct fiemap_extent[]: logical, physical, length, 2 reserved (u64), flags, 3 reserved (u32).
            let fsIocFiemap: UInt = 0xC020_660B
            let headerSize = 32, extentSize = 56, batch = 256
            let extentLast: UInt32 = 0x1
            var buffer = [UInt8](repeating: 0, count: headerSize + extentSize * batch)
            var ranges: [Range<UInt64>] = []
            var start: UInt64 = 0
            while true {
                let (rc, mapped) = buffer.withUnsafeMutableBytes { p -> (Int32, Int) in
                    guard let base = p.baseAddress else { return (-1, 0) }
                    p.initializeMemory(as: UInt8.self, repeating: 0)
                    p.storeBytes(of: start, toByteOffset: 0, as: UInt64.self)
                    // Ask for everything after `start`, including blocks preallocated past EOF, which
                    // also count in st_blocks.
                    p.storeBytes(of: UInt64.max - start, toByteOffset: 8, as: UInt64.self)
                    p.storeBytes(of: UInt32(batch), toByteOffset: 24, as: UInt32.self)
                    let rc = ioctl(fd, fsIocFiemap, base)
                    return (rc, Int(p.load(fromByteOffset: 20, as: UInt32.self)))
                }
                if rc != 0 { return nil }
                if mapped == 0 { return ranges }
                var last = false
                buffer.withUnsafeBytes { p in
                    for i in 0..<mapped {
                        let e = headerSize + i * extentSize
                        let logical = p.load(fromByteOffset: e, as: UInt64.self)
                        let length = p.load(fromByteOffset: e + 16, as: UInt64.self)
                        let flags = p.load(fromByteOffset: e + 40, as: UInt32.self)
                        if length > 0 { ranges.append(logical..<(logical &+ length)) }
                        start = max(start, logical &+ length)
                        if flags & extentLast != 0 { last = true }
                    }
                }
                if last { return ranges }
            }
        #else
            return nil
        #endif
    }

    /// Data ranges from `lseek(SEEK_DATA / SEEK_HOLE)`, or `nil` if the file system lacks them.
    private func seekDataMap(fd: Int32, length: UInt64) -> [Range<UInt64>]? {
        #if os(Linux)
            let seekData: Int32 = 3, seekHole: Int32 = 4
        #else
            let seekData: Int32 = 4, seekHole: Int32 = 3
        #endif
        var ranges: [Range<UInt64>] = []
        var position: UInt64 = 0
        while position < length {
            let data = lseek(fd, off_t(position), seekData)
            if data < 0 { return errno == ENXIO ? ranges : nil }
            let hole = lseek(fd, data, seekHole)
            if hole < 0 { return nil }
            if hole <= data { return nil }
            ranges.append(UInt64(data)..<UInt64(hole))
            position = UInt64(hole)
        }
        return ranges
    }

    /// Everything allocated counted from the start: the best guess from `st_blocks` alone.
    private func fallbackMap(blocks: UInt64) -> [Range<UInt64>] {
        blocks == 0 ? [] : [0..<(blocks * 512)]
    }

    /// Rounds each range out to 4 KiB blocks (the host-file model's unit) and merges overlaps.
    static func roundAndMerge(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        let block: UInt64 = 4096
        var out: [Range<UInt64>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
            let lo = r.lowerBound & ~(block - 1)
            let hi =
                r.upperBound > UInt64.max - (block - 1) ? UInt64.max & ~(block - 1) : (r.upperBound + block - 1) & ~(block - 1)
            if let last = out.last, lo <= last.upperBound {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, hi)
            } else {
                out.append(lo..<hi)
            }
        }
        return out
    }
}

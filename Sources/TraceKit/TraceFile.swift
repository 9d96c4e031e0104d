import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Opens trace files of any supported format.
///
/// ```swift
/// var reader = try TraceFile.open(path: "boot.blktrace.0", format: nil, options: TraceOptions())
/// while let r = try reader.next() { … }
/// ```
public enum TraceFile {
    /// Opens `path` (or `-` for standard input), detecting compression and format by content
    /// unless `format` is given, and applies `options` (selection and mapping).
    ///
    /// - Throws: `TraceError` located at `.file` when the file cannot be opened (exit 66) or a
    ///   needed decompressor is missing (exit 69).
    public static func open(path: String, format: TraceFormat? = nil, options: TraceOptions = TraceOptions()) throws
        -> AnyTraceReader
    {
        var isDirectory: ObjCBool = false
        if path != "-", FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            if let format, format != .blktrace {
                throw TraceError(
                    file: path, location: .file,
                    message: "cannot open: Is a directory (only blktrace recordings may be a directory)", exitCode: 66)
            }
            return try openBlktrace(path: path, options: options)
        }
        let input = try openInput(path: path, decompress: true)
        let fmt = try format ?? TraceFormat.detect(input.peek(1 << 16))
        if fmt == .blktrace && path != "-" {
            return try openBlktrace(path: path, options: options)
        }
        return try AnyTraceReader(input: input, format: fmt, options: options, path: path)
    }

    private static func openBlktrace(path: String, options: TraceOptions) throws -> AnyTraceReader {
        let inputs = try blktraceFiles(for: path).map { try openInput(path: $0, decompress: true) }
        var reader = try BlktraceReader(inputs: inputs, options: options)
        let volumes = options.tagVolumes ? VolumeTable() : nil
        reader.volumes = volumes
        return AnyTraceReader(blktrace: reader, options: options, volumes: volumes)
    }

    /// The per-CPU files of the blktrace recording `path` names: every `*.blktrace.N` in a
    /// directory; the siblings `X.blktrace.N` of a file named `X.blktrace.M`; otherwise `path`
    /// alone. The suffix only groups files; it is never taken as the CPU number.
    public static func blktraceFiles(for path: String) throws -> [String] {
        func suffixNumber(_ name: String, prefix: String) -> Int? {
            guard name.hasPrefix(prefix) else { return nil }
            return Int(name.dropFirst(prefix.count))
        }
        var isDirectory: ObjCBool = false
        let fm = FileManager.default
        if fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            let files = names.filter { n in
                guard let r = n.range(of: ".blktrace.", options: .backwards) else { return false }
                return Int(n[r.upperBound...]) != nil
            }.sorted()
            guard !files.isEmpty else {
                throw TraceError(
                    file: path, location: .file, message: "no blktrace files (NAME.blktrace.N) in the directory", exitCode: 66)
            }
            return files.map { (path as NSString).appendingPathComponent($0) }
        }
        let name = (path as NSString).lastPathComponent
        guard let r = name.range(of: ".blktrace.", options: .backwards), Int(name[r.upperBound...]) != nil else { return [path] }
        let prefix = String(name[..<r.upperBound])
        let dir = (path as NSString).deletingLastPathComponent
        let siblings = ((try? fm.contentsOfDirectory(atPath: dir.isEmpty ? "." : dir)) ?? [])
            .compactMap { n in suffixNumber(n, prefix: prefix).map { (n, $0) } }
            .sorted { $0.1 < $1.1 }
            .map { dir.isEmpty ? $0.0 : (dir as NSString).appendingPathComponent($0.0) }
        return siblings.isEmpty ? [path] : siblings
    }

    /// Opens bytes already in memory as a trace (tests, fuzzing, benchmarks).
    public static func open(
        bytes: [UInt8], fileName: String = "<memory>", format: TraceFormat? = nil,
        options: TraceOptions = TraceOptions()
    ) throws -> AnyTraceReader {
        let input = ByteInput(bytes: bytes, fileName: fileName)
        let fmt = try format ?? TraceFormat.detect(input.peek(1 << 16))
        return try AnyTraceReader(input: input, format: fmt, options: options, path: nil)
    }

    /// The compression a file's first bytes announce.
    enum Compression: String {
        case gzip, bzip2, xz, zstd

        static func detect(_ b: ArraySlice<UInt8>) -> Compression? {
            let a = Array(b.prefix(6))
            if a.count >= 2 && a[0] == 0x1F && a[1] == 0x8B { return .gzip }
            if a.count >= 3 && a[0] == 0x42 && a[1] == 0x5A && a[2] == 0x68 { return .bzip2 }
            if a.count >= 6 && a == [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00] { return .xz }
            if a.count >= 4 && a[0] == 0x28 && a[1] == 0xB5 && a[2] == 0x2F && a[3] == 0xFD { return .zstd }
            return nil
        }
    }

    /// Opens a raw byte stream, swapping in the system decompressor when the content is
    /// compressed.
    static func openInput(path: String, decompress: Bool) throws -> ByteInput {
        let fd: Int32 = path == "-" ? dup(0) : systemOpen(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let msg = String(cString: strerror(errno))
            throw TraceError(file: path, location: .file, message: "cannot open: \(msg)", exitCode: 66)
        }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw TraceError(file: path, location: .file, message: "cannot open: Is a directory", exitCode: 66)
        }
        let input = ByteInput(fileDescriptor: fd, fileName: path)
        guard decompress, path != "-", let kind = try Compression.detect(input.peek(6)) else { return input }
        return try ByteInput(tool: kind.rawValue, arguments: ["-dc", "--", path], fileName: path)
    }
}

/// Any trace reader, chosen at open time: an enum over the concrete readers (no existential), with
/// the shared selection/mapping stage applied on top.
public struct AnyTraceReader: TraceReader {
    /// One reader, held by reference so that `next()` mutates it in place: moving a reader out
    /// of the enum and back copied the whole (largest-case-sized) payload twice per record.
    /// The two native formats, the ones big traces come in, are stored inline instead
    /// (`nativeReader`, `binaryReader`): a class's stored property costs a dynamic exclusivity
    /// check per access, a struct's none.
    final class ReaderBox<R: TraceReader> {
        var reader: R
        init(_ reader: R) { self.reader = reader }
    }

    enum Source {
        case native
        case binary
        case blktrace(ReaderBox<BlktraceReader>)
        case blkparse(ReaderBox<BlkparseReader>)
        case vscsi(ReaderBox<VscsiReader>)
        case fio(ReaderBox<DelimitedTraceReader<FioIologFormat>>)
        case vscsiCSV(ReaderBox<DelimitedTraceReader<CloudPhysicsCSVFormat>>)
        case msr(ReaderBox<DelimitedTraceReader<MSRCambridgeFormat>>)
        case systor(ReaderBox<DelimitedTraceReader<SystorFormat>>)
        case tencent(ReaderBox<DelimitedTraceReader<TencentCBSFormat>>)
        case alibaba(ReaderBox<DelimitedTraceReader<AlibabaFormat>>)
        case spc(ReaderBox<DelimitedTraceReader<SPCFormat>>)
        case qemu(ReaderBox<DelimitedTraceReader<QemuTraceLogFormat>>)
    }

    private var source: Source
    private var nativeReader: NativeTraceReader
    private var binaryReader: NativeBinaryTraceReader
    private var mapper: RecordMapper
    private var lastLocation: TraceLocation = .file
    /// The detected or requested format.
    public let format: TraceFormat
    /// The file name used in error messages.
    public let fileName: String
    /// The volumes seen so far (``TraceRecord/volume`` indexes it), when opened with
    /// ``TraceOptions/tagVolumes``; nil otherwise.
    public let volumes: VolumeTable?

    /// The names of the volumes seen so far, by ID − 1 (empty without ``TraceOptions/tagVolumes``).
    public var volumeNames: [String] { volumes?.names ?? [] }

    init(input: ByteInput, format: TraceFormat, options: TraceOptions, path: String?) throws {
        self.format = format
        fileName = input.fileName
        let volumes = options.tagVolumes || (options.device != nil && format.isNative) ? VolumeTable() : nil
        self.volumes = volumes
        mapper = RecordMapper(options: options, format: format, fileName: input.fileName)
        nativeReader = NativeTraceReader(bytes: [], fileName: input.fileName)
        binaryReader = NativeBinaryTraceReader(bytes: [], fileName: input.fileName)
        switch format {
        case .native:
            source = .native
            nativeReader = NativeTraceReader(input: input)
            try nativeReader.select(options.device, volumes: volumes)
        case .binary:
            source = .binary
            binaryReader = NativeBinaryTraceReader(input: input)
            try binaryReader.select(options.device, volumes: volumes)
        case .blktrace:
            var r = try BlktraceReader(inputs: [input], options: options)
            r.volumes = volumes
            source = .blktrace(ReaderBox(r))
        case .blkparse:
            var r = try BlkparseReader(input: input, options: options)
            r.volumes = volumes
            source = .blkparse(ReaderBox(r))
        case .vscsi: source = .vscsi(ReaderBox(VscsiReader(input: input)))
        case .fio: source = .fio(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .vscsiCSV: source = .vscsiCSV(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .msr: source = .msr(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .systor: source = .systor(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .tencent: source = .tencent(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .alibaba: source = .alibaba(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .spc: source = .spc(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        case .qemu: source = .qemu(ReaderBox(try DelimitedTraceReader(input: input, options: options, volumes: volumes)))
        }
    }

    init(blktrace: BlktraceReader, options: TraceOptions, volumes: VolumeTable?) {
        format = .blktrace
        fileName = blktrace.fileName
        self.volumes = volumes
        mapper = RecordMapper(options: options, format: .blktrace, fileName: blktrace.fileName)
        nativeReader = NativeTraceReader(bytes: [], fileName: blktrace.fileName)
        binaryReader = NativeBinaryTraceReader(bytes: [], fileName: blktrace.fileName)
        source = .blktrace(ReaderBox(blktrace))
    }

    /// Records of the selected kind that a reader skipped (vscsi: non-READ/WRITE SCSI commands).
    public var skippedRecords: Int {
        if case .vscsi(let r) = source { return r.reader.skippedCommands }
        return 0
    }

    /// The location of the record most recently returned.
    public var location: TraceLocation { lastLocation }

    /// The next mapped record, or `nil` at end of input.
    public mutating func next() throws -> TraceRecord? {
        let result: (TraceRecord, TraceLocation)?
        switch source {
        case .native: result = try mapper.next(from: &nativeReader)
        case .binary: result = try mapper.next(from: &binaryReader)
        case .blktrace(let b): result = try mapper.next(from: &b.reader)
        case .blkparse(let b): result = try mapper.next(from: &b.reader)
        case .vscsi(let b): result = try mapper.next(from: &b.reader)
        case .fio(let b): result = try mapper.next(from: &b.reader)
        case .vscsiCSV(let b): result = try mapper.next(from: &b.reader)
        case .msr(let b): result = try mapper.next(from: &b.reader)
        case .systor(let b): result = try mapper.next(from: &b.reader)
        case .tencent(let b): result = try mapper.next(from: &b.reader)
        case .alibaba(let b): result = try mapper.next(from: &b.reader)
        case .spc(let b): result = try mapper.next(from: &b.reader)
        case .qemu(let b): result = try mapper.next(from: &b.reader)
        }
        guard let (record, loc) = result else { return nil }
        lastLocation = loc
        return record
    }

    /// Witness of the requirement: the two native formats decode a batch in one loop specialized
    /// for their reader, where `next()` per record paid the switch over the source and the
    /// mapping stage's calls (callgrind, `qcow2sim simulate` of 10^7 reads from a binary trace:
    /// the reader's 312 instructions per record became 172); the other formats take `next()`
    /// per record.
    public mutating func next(into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads) -> (
        count: Int, end: BatchEnd
    ) {
        switch source {
        case .binary: return mapper.next(from: &binaryReader, into: buffer, admitting: filter, location: &lastLocation)
        case .native: return mapper.next(from: &nativeReader, into: buffer, admitting: filter, location: &lastLocation)
        default: return filter.fill(buffer) { try next() }
        }
    }
}

@inline(__always)
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }

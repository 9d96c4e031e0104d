import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A chunked byte stream over a file, a decompressor's pipe or memory: the one place where
/// trace readers touch the operating system. Readers look at `buffer[start..<end]` and call
/// `fill()` when they need more; memory stays at one chunk however large the trace.
///
/// A class because every reader that wraps it is a value type that may be copied, while the file
/// descriptor and child process must be owned once.
final class ByteInput {
    /// Size of one `read(2)`; 1 MiB keeps syscalls well under 1% of parse time.
    static let chunkSize = 1 << 20

    /// Buffered bytes; valid data is `buffer[start..<end]`.
    var buffer: [UInt8]
    /// First unconsumed byte.
    var start = 0
    /// One past the last valid byte.
    var end = 0
    /// Whether the source has reported end of input.
    private(set) var atEOF = false
    /// Absolute stream offset of `buffer[0]`.
    private(set) var base: UInt64 = 0

    private var fd: Int32 = -1
    private var process: Process?
    private var stderrPipe: Pipe?
    private let toolName: String
    /// Name used in error messages.
    let fileName: String

    /// A stream over bytes already in memory.
    init(bytes: [UInt8], fileName: String) {
        buffer = bytes
        end = bytes.count
        atEOF = true
        self.fileName = fileName
        toolName = ""
    }

    /// A stream over an open file descriptor that this object owns and closes.
    init(fileDescriptor: Int32, fileName: String) {
        buffer = [UInt8](repeating: 0, count: Self.chunkSize)
        fd = fileDescriptor
        self.fileName = fileName
        toolName = ""
    }

    /// A stream over the standard output of `tool arguments` (a decompressor).
    init(tool: String, arguments: [String], fileName: String) throws {
        guard let url = Self.findExecutable(tool) else {
            throw TraceError(
                file: fileName, location: .file,
                message: "cannot decompress: '\(tool)' not found in PATH (install \(tool) or decompress the file first)",
                exitCode: 69)
        }
        let p = Process()
        p.executableURL = url
        p.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            throw TraceError(
                file: fileName, location: .file, message: "cannot run '\(tool)': \(error.localizedDescription)", exitCode: 69)
        }
        buffer = [UInt8](repeating: 0, count: Self.chunkSize)
        fd = dup(out.fileHandleForReading.fileDescriptor)
        try? out.fileHandleForReading.close()
        process = p
        stderrPipe = err
        self.fileName = fileName
        toolName = tool
    }

    deinit {
        if fd >= 0 { close(fd) }
        if let process, process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Bytes available without another read.
    @inline(__always) var available: Int { end - start }

    /// Absolute stream offset of `buffer[start]`.
    var offset: UInt64 { base + UInt64(start) }

    /// Reads more input after `buffer[end]`, compacting consumed bytes first. Returns `false` at
    /// end of input (no new bytes).
    @discardableResult
    func fill() throws -> Bool {
        if atEOF { return false }
        if start > 0 {
            let n = end - start
            if n > 0 {
                buffer.withUnsafeMutableBufferPointer { p in
                    guard let b = p.baseAddress else { return }
                    memmove(b, b + start, n)
                }
            }
            base += UInt64(start)
            start = 0
            end = n
        }
        if buffer.count - end < Self.chunkSize / 2 {
            buffer.append(contentsOf: repeatElement(0, count: max(Self.chunkSize, buffer.count)))
        }
        while true {
            let want = buffer.count - end
            let got = buffer.withUnsafeMutableBufferPointer { p -> Int in
                guard let b = p.baseAddress else { return -1 }
                return read(fd, b + end, want)
            }
            if got > 0 {
                end += got
                return true
            }
            if got < 0 && errno == EINTR { continue }
            if got < 0 {
                let msg = String(cString: strerror(errno))
                throw TraceError(file: fileName, location: .file, message: "read failed: \(msg)", exitCode: 74)
            }
            atEOF = true
            try finishProcess()
            return false
        }
    }

    /// Makes at least `n` bytes available if the input has them; returns whether it does.
    @inline(__always)
    func ensure(_ n: Int) throws -> Bool {
        while end - start < n {
            if try !fill() { return false }
        }
        return true
    }

    /// Fills up to `n` bytes for format detection without consuming them.
    func peek(_ n: Int) throws -> ArraySlice<UInt8> {
        while end - start < n, try fill() {}
        return buffer[start..<min(end, start + n)]
    }

    private func finishProcess() throws {
        guard let process else { return }
        process.waitUntilExit()
        self.process = nil
        if process.terminationStatus != 0 {
            let errData = (try? stderrPipe?.fileHandleForReading.readToEnd()) ?? nil
            let text =
                errData.flatMap { String(data: $0, encoding: .utf8) }?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw TraceError(
                file: fileName, location: .file,
                message: "'\(toolName)' failed with status \(process.terminationStatus)\(text.isEmpty ? "" : ": \(text)")")
        }
    }

    static func findExecutable(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return URL(fileURLWithPath: candidate) }
        }
        return nil
    }
}

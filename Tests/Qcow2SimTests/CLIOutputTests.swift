import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the qcow2sim binary (as `CLITests` does) with an optional environment and standard output.
enum CLIRun {
    static func run(_ args: [String], environment: [String: String]? = nil, standardOutput: FileHandle? = nil) throws -> (
        Int32, String, String
    ) {
        let p = Process()
        p.executableURL = CLITests.binary
        p.arguments = args
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = standardOutput ?? out
        p.standardError = err
        try p.run()
        // Standard error is drained on its own thread: read one after the other, a child that
        // fills the stderr pipe (64 KiB) before closing stdout would hang the test.
        final class Box: @unchecked Sendable { var data = Data() }
        let e = Box()
        let done = DispatchSemaphore(value: 0)
        let errHandle = err.fileHandleForReading
        Thread {
            e.data = errHandle.readDataToEndOfFile()
            done.signal()
        }.start()
        let o = standardOutput == nil ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        done.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
    }

    /// A fresh directory.
    static func directory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-out-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func fileType(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : nil
    }

    static func rdev(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_rdev) : nil
    }

    /// Everything in `dir` but `keep`: temporary files left behind would show up here.
    static func leftovers(_ dir: String, keeping keep: Set<String>) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { !keep.contains($0) }.sorted()
    }
}

/// One output option: the command line with `{OUT}` for the output path, the command's name
/// in messages, and what the output starts with (hand-checked: TV1's first event, the headers,
/// the converted two-line trace).
struct OutputCase: Sendable, CustomTestStringConvertible {
    var option: String
    var command: String
    var args: [String]
    var prefix: String
    var testDescription: String { option }

    func arguments(trace: String, out: String) -> [String] {
        args.map { $0 == "{T}" ? trace : $0 == "{OUT}" ? out : $0 }
    }
}

/// Issue 14, items 5 and 6: every output option against a character device, a FIFO, a symlink,
/// a read-only file and a full file system. The node at the target must be unchanged, write
/// errors must be one message and exit 74, and no temporary file may remain.
@Suite struct CLIOutputTests {
    static let trace = "W,0,4096\nR,0,4096\n"

    static let outputs: [OutputCase] = [
        OutputCase(
            option: "simulate --output", command: "simulate", args: ["simulate", "{T}", "--size", "1G", "--output", "{OUT}"],
            prefix: "requests: 2 (policy qemu, writeback)\n"),
        OutputCase(
            option: "simulate --events", command: "simulate", args: ["simulate", "{T}", "--size", "1G", "--events", "{OUT}"],
            prefix: "qcow2_cache_get image 0 is_l2_cache 0 offset 0x20000 read_from_disk 1\n"),
        OutputCase(
            option: "simulate --memory-timeline", command: "simulate",
            args: ["simulate", "{T}", "--size", "1G", "--memory-timeline", "{OUT}"], prefix: "time,image,cache,resident_bytes\n"),
        OutputCase(
            option: "generate -o", command: "generate", args: ["generate", "--count", "10", "--size", "1G", "-o", "{OUT}"],
            prefix: "op,offset,length\nR,"),
        OutputCase(
            option: "trace convert -o", command: "trace convert", args: ["trace", "convert", "{T}", "-o", "{OUT}"],
            prefix: "op,offset,length\nW,0,4096\nR,0,4096\n"),
    ]

    /// The trace in its own directory (so the output directories hold only what the test made).
    static func traceFile() throws -> String {
        let path = try CLIRun.directory() + "/t.csv"
        try Data(trace.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// What the option writes to a new regular file (checked against the case's prefix).
    static func reference(_ c: OutputCase, trace: String) throws -> String {
        let dir = try CLIRun.directory()
        let out = dir + "/reference"
        let (s, _, err) = try CLIRun.run(c.arguments(trace: trace, out: out))
        #expect(s == 0, "\(err)")
        let text = try String(contentsOfFile: out, encoding: .utf8)
        #expect(text.hasPrefix(c.prefix))
        #expect(try CLIRun.leftovers(dir, keeping: ["reference"]) == [])
        return text
    }

    /// Makes a character device with the device number of `model` (/dev/null or /dev/full).
    static func makeDevice(_ path: String, like model: String) -> Bool {
        guard let dev = CLIRun.rdev(model) else { return false }
        return mknod(path, S_IFCHR | 0o666, dev_t(dev)) == 0
    }

    @Test(arguments: outputs)
    func characterDeviceIsWrittenNotReplaced(_ c: OutputCase) throws {
        let trace = try Self.traceFile()
        let dir = try CLIRun.directory()
        let null = dir + "/null", full = dir + "/full"
        guard Self.makeDevice(null, like: "/dev/null"), Self.makeDevice(full, like: "/dev/full") else {
            print("skipping \(c.option) to a device node: mknod failed (\(String(cString: strerror(errno)))); needs root")
            return
        }
        let (s, out, err) = try CLIRun.run(c.arguments(trace: trace, out: null))
        #expect(s == 0, "\(err)")
        #expect(err.isEmpty)
        if c.args.contains("--output") { #expect(out.isEmpty) }
        #expect(CLIRun.fileType(null) == S_IFCHR)
        #expect(CLIRun.rdev(null) == CLIRun.rdev("/dev/null"))

        // /dev/full: ENOSPC on the first write, one message naming the file, exit 74.
        let (s2, _, err2) = try CLIRun.run(c.arguments(trace: trace, out: full))
        #expect(s2 == 74)
        #expect(err2 == "qcow2sim \(c.command): error: \(full): No space left on device\n")
        #expect(CLIRun.fileType(full) == S_IFCHR)
        #expect(CLIRun.rdev(full) == CLIRun.rdev("/dev/full"))
        #expect(try CLIRun.leftovers(dir, keeping: ["null", "full"]) == [])
    }

    @Test(arguments: outputs)
    func fifoIsWrittenInPlace(_ c: OutputCase) throws {
        let trace = try Self.traceFile()
        let expected = try Self.reference(c, trace: trace)
        let dir = try CLIRun.directory()
        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o644) == 0)
        final class Box: @unchecked Sendable { var data = Data() }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            if let h = FileHandle(forReadingAtPath: fifo) { box.data = h.readDataToEndOfFile() }
            done.signal()
        }
        reader.start()
        let (s, _, err) = try CLIRun.run(c.arguments(trace: trace, out: fifo))
        // If qcow2sim never opened the FIFO, open it once so the reader sees end of file.
        let unblock = open(fifo, O_WRONLY | O_NONBLOCK)
        if unblock >= 0 { close(unblock) }
        done.wait()
        #expect(s == 0, "\(err)")
        #expect(String(decoding: box.data, as: UTF8.self) == expected)
        #expect(CLIRun.fileType(fifo) == S_IFIFO)
        #expect(try CLIRun.leftovers(dir, keeping: ["fifo"]) == [])
    }

    @Test(arguments: outputs)
    func symlinkIsFollowedAndKept(_ c: OutputCase) throws {
        let trace = try Self.traceFile()
        let expected = try Self.reference(c, trace: trace)
        let dir = try CLIRun.directory()
        try Data("old\n".utf8).write(to: URL(fileURLWithPath: dir + "/real"))
        chmod(dir + "/real", 0o640)
        #expect(symlink("real", dir + "/link") == 0)
        #expect(symlink("sub/new", dir + "/dangling") == 0)
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)

        let (s, _, err) = try CLIRun.run(c.arguments(trace: trace, out: dir + "/link"))
        #expect(s == 0, "\(err)")
        #expect(CLIRun.fileType(dir + "/link") == S_IFLNK)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link") == "real")
        #expect(try String(contentsOfFile: dir + "/real", encoding: .utf8) == expected)
        // The replaced file keeps its mode.
        #expect(((try FileManager.default.attributesOfItem(atPath: dir + "/real"))[.posixPermissions] as? Int) == 0o640)

        // A dangling link: its target is created, the link stays.
        let (s2, _, err2) = try CLIRun.run(c.arguments(trace: trace, out: dir + "/dangling"))
        #expect(s2 == 0, "\(err2)")
        #expect(CLIRun.fileType(dir + "/dangling") == S_IFLNK)
        #expect(try String(contentsOfFile: dir + "/sub/new", encoding: .utf8) == expected)
        #expect(try CLIRun.leftovers(dir, keeping: ["real", "link", "dangling", "sub"]) == [])
        #expect(try CLIRun.leftovers(dir + "/sub", keeping: ["new"]) == [])
    }

    @Test(arguments: outputs)
    func readOnlyFileIsRefused(_ c: OutputCase) throws {
        let trace = try Self.traceFile()
        let dir = try CLIRun.directory()
        let target = dir + "/ro"
        try Data("old\n".utf8).write(to: URL(fileURLWithPath: target))
        chmod(target, 0o444)
        let (s, _, err) = try CLIRun.run(c.arguments(trace: trace, out: target))
        #expect(s == 73)
        #expect(err == "qcow2sim \(c.command): error: \(target): is read-only (not replaced)\n")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "old\n")
        #expect(CLIRun.fileType(target) == S_IFREG)
        #expect(try CLIRun.leftovers(dir, keeping: ["ro"]) == [])
    }

    @Test(arguments: outputs)
    func fullFileSystemLeavesTargetAndNoTemporary(_ c: OutputCase) throws {
        let trace = try Self.traceFile()
        let dir = try CLIRun.directory()
        let mnt = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        guard mount("tmpfs", mnt, "tmpfs", 0, "size=256k") == 0 else {
            print("skipping \(c.option) on a full tmpfs: mount failed (\(String(cString: strerror(errno)))); needs root")
            return
        }
        defer { umount(mnt) }
        let target = mnt + "/out"
        try Data("old\n".utf8).write(to: URL(fileURLWithPath: target))
        // Fill the file system to the last byte.
        let fill = open(mnt + "/filler", O_WRONLY | O_CREAT, 0o644)
        let block = [UInt8](repeating: 0x55, count: 4096)
        while block.withUnsafeBytes({ write(fill, $0.baseAddress, $0.count) }) > 0 {}
        while block.withUnsafeBytes({ write(fill, $0.baseAddress, 1) }) > 0 {}
        close(fill)

        let (s, _, err) = try CLIRun.run(c.arguments(trace: trace, out: target))
        #expect(s == 74)
        #expect(err == "qcow2sim \(c.command): error: \(target): No space left on device\n")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "old\n")
        #expect(try CLIRun.leftovers(mnt, keeping: ["out", "filler"]) == [])
    }

    /// Standard output on /dev/full: the report, `trace info`, `generate -o -`, `trace convert -o -`.
    @Test(arguments: [
        (["simulate", "{T}", "--size", "1G"], "simulate"), (["trace", "info", "{T}"], "trace info"),
        (["generate", "--count", "10", "--size", "1G", "-o", "-"], "generate"),
        (["trace", "convert", "{T}", "-o", "-"], "trace convert"),
        (["simulate", "--help"], "simulate"),
    ])
    func standardOutputOnAFullDevice(_ args: [String], _ command: String) throws {
        let trace = try Self.traceFile()
        guard let full = FileHandle(forWritingAtPath: "/dev/full") else {
            print("skipping: /dev/full cannot be opened")
            return
        }
        let (s, _, err) = try CLIRun.run(args.map { $0 == "{T}" ? trace : $0 }, standardOutput: full)
        #expect(s == 74)
        #expect(err == "qcow2sim \(command): error: standard output: No space left on device\n")
    }

    /// `-o /dev/stdout` with standard output on a regular file (`>> file`): written in place
    /// through the caller's file, appended, never replaced by a rename.
    @Test func devStdoutOnARegularFileIsAppendedInPlace() throws {
        let trace = try Self.traceFile()
        let dir = try CLIRun.directory()
        let file = dir + "/out.txt"
        try Data("keep\n".utf8).write(to: URL(fileURLWithPath: file))
        let handle = try #require(FileHandle(forWritingAtPath: file))
        handle.seekToEndOfFile()
        let (s, _, err) = try CLIRun.run(["trace", "convert", trace, "-o", "/dev/stdout"], standardOutput: handle)
        #expect(s == 0, "\(err)")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep\nop,offset,length\nW,0,4096\nR,0,4096\n")
        #expect(try CLIRun.leftovers(dir, keeping: ["out.txt"]) == [])
    }

    @Test func directoryTargetIsRefused() throws {
        let trace = try Self.traceFile()
        let dir = try CLIRun.directory()
        let (s, _, err) = try CLIRun.run(["simulate", trace, "--size", "1G", "--output", dir])
        #expect(s == 73)
        #expect(err == "qcow2sim simulate: error: \(dir): is a directory\n")
        #expect(try CLIRun.leftovers(dir, keeping: []) == [])
    }
}

/// Issue 14, item 10: usage errors that used to be accepted silently.
@Suite struct CLIUsageTests {
    static let cases: [([String], String)] = [
        (["--image", "{I}", "--size", "1G"], "--size cannot be combined with --image (the virtual size is the image's)"),
        (["--image", "{I}", "--chain", "2"], "--chain cannot be combined with --image (the chain is the image's backing chain)"),
        (
            ["--image", "{I}", "-o", "cluster_size=4K"],
            "-o cannot be combined with --image (the image exists; -o is for qemu-img create)"
        ),
        (
            ["--image", "{I}", "--populate", "full"],
            "--populate cannot be combined with --image (the image already has its contents)"
        ),
        (
            ["--image", "{I}", "--populate-mode", "data"],
            "--populate-mode cannot be combined with --image (the image already has its contents)"
        ),
        (["--size", "1G", "--size", "2G"], "option '--size' given more than once; it takes one value"),
        (["--size", "1G", "--format=json", "--format", "csv"], "option '--format' given more than once; it takes one value"),
        (
            ["--size", "1G", "--create-options", "cluster_size=4K", "-o", "cluster_size=8K"],
            "option '-o' given more than once (as '--create-options' and '-o'); it takes one value"
        ),
        (["--size", "1G", "--time-scale", "-1"], "invalid value '-1' for --time-scale (expected a non-negative number)"),
        (["--size", "1G", "--time-scale", "nan"], "invalid value 'nan' for --time-scale (expected a number)"),
    ]

    @Test(arguments: cases)
    func simulateUsageError(_ args: [String], _ message: String) throws {
        let trace = try CLITests.trace("R,0,4K\n")
        let image = URL(fileURLWithPath: trace).deletingLastPathComponent().appendingPathComponent("any.qcow2").path
        let (s, out, err) = try CLIRun.run(["simulate", trace] + args.map { $0 == "{I}" ? image : $0 })
        #expect(s == 64)
        #expect(err == "qcow2sim simulate: error: \(message)\n")
        #expect(out.isEmpty)
    }

    @Test func validateRefusesImageConflictsAndBadTimeouts() throws {
        let trace = try CLITests.trace("R,0,4K\n")
        let (s, _, err) = try CLIRun.run(["validate", trace, "--image", "x.qcow2", "--chain", "3"])
        #expect(s == 64)
        #expect(
            err == "qcow2sim validate: error: --chain cannot be combined with --image (the chain is the image's backing chain)\n")
        let (s2, _, err2) = try CLIRun.run(["validate", trace, "--size", "1G", "--qemu-timeout", "-5"])
        #expect(s2 == 64)
        #expect(
            err2
                == "qcow2sim validate: error: invalid value '-5' for --qemu-timeout (expected a non-negative number of seconds)\n"
        )
        let (s3, _, err3) = try CLIRun.run(["validate", trace, "--size", "1G", "--keep", "a", "--keep", "b"])
        #expect(s3 == 64)
        #expect(err3 == "qcow2sim validate: error: option '--keep' given more than once; it takes one value\n")
    }

    @Test func generateAndConvertRefuseRepeatedOutput() throws {
        let (s, _, err) = try CLIRun.run(["generate", "--count", "1", "--size", "1G", "-o", "a", "-o", "b"])
        #expect(s == 64)
        #expect(err == "qcow2sim generate: error: option '-o' given more than once; it takes one value\n")
        let trace = try CLITests.trace("R,0,4K\n")
        let (s2, _, err2) = try CLIRun.run(["trace", "convert", trace, "--time-scale", "-2", "-o", "-"])
        #expect(s2 == 64)
        #expect(err2 == "qcow2sim trace convert: error: invalid value '-2' for --time-scale (expected a non-negative number)\n")
    }

    /// The histogram label of a 1 TiB request is 2^40 = 1099511627776 (13 digits, was cut to 12);
    /// 2^63 = 9223372036854775808 (19 digits) for the largest bucket.
    @Test func histogramLabelsAreNotCut() throws {
        let trace = try CLITests.trace("R,0,4K\nR,0,1T\nR,0,1T\n")
        let (s, out, err) = try CLIRun.run(["trace", "info", trace, "--cluster-size", "2M"])
        #expect(s == 0, "\(err)")
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.suffix(3) == ["  <= 4096         1", "  <= 1099511627776 2", ""])
    }
}

import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

@Suite("process runner")
struct ProcessRunnerTests {
    @Test("a missing QEMU is exit 69 and names the packages to install")
    func missingQemu() throws {
        let empty = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let v = Validator(runner: SystemProcessRunner(searchPath: [empty]))
        do {
            _ = try v.replay(
                config: SimulationConfig(virtualSize: 1 << 30), input: ValidationInput(records: TraceText.records("R 0 4k")))
            Issue.record("expected toolMissing")
        } catch let e as ValidationError {
            #expect(e.exitCode == 69)
            #expect(e == .toolMissing(tool: "qemu-img", packages: ["qemu-utils", "qemu-system-x86"]))
            #expect(
                e.description
                    == "'qemu-img' not found in PATH; install QEMU 7.2 (Debian/Ubuntu: apt-get install qemu-utils qemu-system-x86)"
            )
        }
        // The runner itself refuses too (same error), before starting anything.
        #expect(throws: ValidationError.toolMissing(tool: "qemu-io", packages: QemuPackages.all)) {
            _ = try SystemProcessRunner(searchPath: [empty]).run(ProcessRequest(executable: "qemu-io", arguments: []))
        }
    }

    @Test("cache-clean-interval needs qemu-system-x86_64: missing it is exit 69 too")
    func missingQemuSystem() throws {
        let mock = MockRunner()
        mock.missing = ["qemu-system-x86_64"]
        let v = Validator(runner: mock)
        #expect(throws: ValidationError.toolMissing(tool: "qemu-system-x86_64", packages: QemuPackages.all)) {
            _ = try v.replay(
                config: SimulationConfig(virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "cache-clean-interval=2")),
                input: ValidationInput(records: [TraceRecord(time: 3, op: .read, offset: 0, length: 4096)]))
        }
        #expect(mock.requests.isEmpty)
    }

    @Test("a failing qemu-io (mocked) reports argv, status and stderr tail")
    func failingMock() throws {
        let mock = MockRunner()
        mock.results["qemu-io"] = ProcessResult(
            status: 1, standardErrorTail: "qemu-io: can't open: Could not open 'x': No such file\n")
        let v = Validator(runner: mock, options: ValidatorOptions(preferIOUring: false))
        do {
            _ = try v.replay(
                config: SimulationConfig(virtualSize: 1 << 30), input: ValidationInput(records: TraceText.records("R 0 4k")))
            Issue.record("expected toolFailed")
        } catch let e as ValidationError {
            #expect(e.exitCode == 70)
            let text = e.description
            #expect(text.hasPrefix("'qemu-io -t writeback -T events="))
            #expect(
                text.contains(
                    "failed with exit status 1; its output ended with:\nqemu-io: can't open: Could not open 'x': No such file"))
        }
        // After the version check (qemu-io --version), qemu-img create ran first, as argv.
        #expect(mock.requests.first?.arguments == ["--version"])
        let create = try #require(mock.requests.first { $0.executable == "qemu-img" })
        #expect(create.executable == "qemu-img")
        #expect(create.arguments == ["create", "-q", "-f", "qcow2", "base.qcow2", "1073741824"])
        let io = try #require(mock.requests.last)
        #expect(io.executable == "qemu-io")
        #expect(String(decoding: io.standardInput ?? Data(), as: UTF8.self) == "read -q 0 0\nread -q 0 4096\nread -q 1 0\n")
    }

    @Test("stdin, stdout and stderr are fed and drained concurrently (no pipe deadlock)")
    func noDeadlock() throws {
        let input = Data(repeating: UInt8(ascii: "x"), count: 32 << 20)
        let r = try SystemProcessRunner().run(
            ProcessRequest(
                executable: "sh", arguments: ["-c", "head -c 8000000 /dev/zero | tr '\\0' e >&2; cat; echo done >&2"],
                standardInput: input,
                outputLimit: 10))
        #expect(r.status == 0)
        #expect(r.standardOutput == Data(repeating: UInt8(ascii: "x"), count: 10))
        #expect(r.standardErrorTail.hasSuffix("eeedone\n"))
        #expect(r.standardErrorTail.utf8.count <= 4096)
    }

    @Test("exit status and memory are reported")
    func status() throws {
        let r = try SystemProcessRunner().run(
            ProcessRequest(executable: "sh", arguments: ["-c", "sleep 0.1; exit 3"], measureMemory: true))
        #expect(r.status == 3)
        #expect(r.wallTime >= 0.1)
        #if os(Linux)
            #expect((r.peakResidentBytes ?? 0) > 0)
        #endif
    }
}

@Suite("image builder (mocked runner)")
struct ImageBuilderTests {
    @Test("create options, metadata preallocation, populate pieces and chains become exactly these argv")
    func argv() throws {
        let mock = MockRunner()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SimulationConfig(
            virtualSize: 5 << 30, createOptions: try CreateOptions(parsing: "cluster_size=4096,extended_l2=off"), chainLength: 3,
            populate: .full,
            populateMode: .zero)
        let built = try ImageBuilder(runner: mock).build(config, in: dir)
        #expect(built.paths == [dir + "/base.qcow2", dir + "/top1.qcow2", dir + "/top2.qcow2"])
        let r = mock.requests
        #expect(r.map(\.executable) == ["qemu-img", "qemu-io", "qemu-img", "qemu-img"])
        #expect(
            r[0].arguments == [
                // The rendering of the parsed options: extended_l2=off is the default.
                "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "base.qcow2", "5368709120",
            ])
        #expect(r[1].arguments == ["-t", "unsafe", "-f", "qcow2", "base.qcow2"])
        #expect(
            String(decoding: r[1].standardInput ?? Data(), as: UTF8.self)
                == "write -q -z 0 2147483136\nwrite -q -z 2147483136 2147483136\nwrite -q -z 4294966272 1073742848\n")
        #expect(
            r[3].arguments == [
                "create", "-q", "-f", "qcow2", "-b", "top1.qcow2", "-F", "qcow2", "-o", "cluster_size=4096",
                "top2.qcow2",
                "5368709120",
            ])
        #expect(r.allSatisfy { $0.workingDirectory == dir })
    }

    @Test("qemu-img gets the rendering of each image's parsed options: the chain-wide -o, or the layer's complete own")
    func renderedLayerOptions() throws {
        let mock = MockRunner()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = SimulationConfig(virtualSize: 1 << 30, chainLength: 3)
        try config.parseCreateOptions("cluster_size=4K,extended_l2=off", layers: [1: "compat=v2", 2: "cluster_size=64K"])
        _ = try ImageBuilder(runner: mock).build(config, in: dir)
        #expect(
            mock.requests.map(\.arguments) == [
                ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "base.qcow2", "1073741824"],
                [
                    "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "cluster_size=4096,compat=0.10",
                    "top1.qcow2", "1073741824",
                ],
                // cluster_size=64K is qemu-img's default: nothing to say.
                ["create", "-q", "-f", "qcow2", "-b", "top1.qcow2", "-F", "qcow2", "top2.qcow2", "1073741824"],
            ])
    }

    @Test("populate modes: metadata is a create option, data writes 64 MiB pieces per range in order")
    func populate() throws {
        #expect(
            try ImageBuilder.populateCommands(SimulationConfig(virtualSize: 1 << 30, populate: .full, populateMode: .metadata))
                .isEmpty)
        let data = try ImageBuilder.populateCommands(
            SimulationConfig(
                virtualSize: 1 << 30,
                populate: .ranges([ByteRange(start: 512 << 20, length: 100 << 20), ByteRange(start: 0, length: 4096)]),
                populateMode: .data))
        #expect(data == ["write -q 536870912 67108864", "write -q 603979776 37748736", "write -q 0 4096"])
        #expect(throws: ValidationError.self) {
            _ = try ImageBuilder.populateCommands(
                SimulationConfig(
                    virtualSize: 1 << 30, populate: .ranges([ByteRange(start: 0, length: 1)]), populateMode: .metadata))
        }
        let mock = MockRunner()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try ImageBuilder(runner: mock).build(
            SimulationConfig(virtualSize: 1 << 30, populate: .full, populateMode: .metadata), in: dir)
        #expect(
            mock.requests.map(\.arguments) == [
                ["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", "base.qcow2", "1073741824"]
            ])
    }

    @Test("preparation sessions run after populate, in order, on their image, writeback, default options")
    func preparation() throws {
        let mock = MockRunner()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = SimulationConfig(
            virtualSize: 1 << 30, chainLength: 3, populate: .ranges([ByteRange(start: 0, length: 4096)]), populateMode: .data)
        config.preparation = [
            PreparationSession(image: 2, records: TraceText.records("W 64k 4k\nD 0 128k\nF")),
            PreparationSession(image: 1, records: TraceText.records("Z 1M 64k\nR 0 0")),
        ]
        _ = try ImageBuilder(runner: mock).build(config, in: dir)
        let r = mock.requests
        #expect(r.map(\.executable) == ["qemu-img", "qemu-io", "qemu-img", "qemu-img", "qemu-io", "qemu-io"])
        #expect(r[4].arguments == ["-t", "writeback", "-f", "qcow2", "top2.qcow2"])
        #expect(
            String(decoding: r[4].standardInput ?? Data(), as: UTF8.self) == "write -q 65536 4096\ndiscard -q 0 131072\nflush\n")
        #expect(r[5].arguments == ["-t", "writeback", "-f", "qcow2", "top1.qcow2"])
        #expect(String(decoding: r[5].standardInput ?? Data(), as: UTF8.self) == "write -q -z 1048576 65536\n")

        config.preparation = [PreparationSession(image: 3, records: TraceText.records("W 0 4k"))]
        #expect(throws: ValidationError.usage("preparation session 0 names image 3, but the chain has 3")) {
            _ = try ImageBuilder(runner: MockRunner()).build(config, in: dir)
        }
    }

    @Test("--image is copied without holes and the source is never opened for writing")
    func copy() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = dir + "/src"
        var bytes = Data(repeating: 0, count: 3 << 20)
        bytes[12345] = 7
        try bytes.write(to: URL(fileURLWithPath: src))
        try ImageBuilder.copyNonSparse(from: src, to: dir + "/dst")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/dst")) == bytes)
        #expect(throws: ValidationError.noInput("cannot read image '\(dir)/missing'")) {
            try ImageBuilder.copyNonSparse(from: dir + "/missing", to: dir + "/x")
        }
    }
}

@Suite("qemu-io script and QEMU log")
struct ScriptAndLogTests {
    @Test("requests longer than 2147483136 bytes are split into consecutive maximal pieces")
    func split() {
        #expect(QemuIOScript.pieces(offset: 0, length: 4096) == [ByteRangePiece(offset: 0, length: 4096)])
        #expect(QemuIOScript.pieces(offset: 0, length: 2_147_483_136).count == 1)
        #expect(
            QemuIOScript.pieces(offset: 512, length: 5 << 30) == [
                ByteRangePiece(offset: 512, length: 2_147_483_136), ByteRangePiece(offset: 2_147_483_648, length: 2_147_483_136),
                ByteRangePiece(offset: 4_294_966_784, length: 1_073_742_848),
            ])
    }

    @Test("commands per record kind")
    func commands() {
        #expect(
            QemuIOScript.commands(for: TraceRecord(op: .writeZeroes, offset: 4096, length: 512, flags: .unmap)) == [
                "write -q -z -u 4096 512"
            ])
        #expect(QemuIOScript.commands(for: TraceRecord(op: .discard, offset: 0, length: 65536)) == ["discard -q 0 65536"])
        #expect(QemuIOScript.commands(for: TraceRecord(op: .flush, offset: 0, length: 0)) == ["flush"])
        #expect(
            QemuIOScript.commands(for: TraceRecord(op: .write, offset: 0, length: 512, flags: [.fua, .preflush])) == [
                "write -q 0 512"
            ])
        #expect(
            QemuIOScript.script(for: [TraceRecord(op: .read, offset: 0, length: 0)], virtualSize: 1 << 20)
                == "read -q 0 0\nread -q 1 0\n")
    }

    @Test("a request beyond the disk is a located trace error (exit 65)")
    func bounds() {
        #expect(
            throws: ValidationError.badTrace("t.trace:2: error: request 1 ends at byte 1048577, beyond the disk size 1048576")
        ) {
            try QemuIOScript.checkBounds(
                TraceText.records("R 0 4k\nW 1044481 4096"), locations: [.line(1), .line(2)], fileName: "t.trace",
                virtualSize: 1 << 20)
        }
    }

    @Test("the log is cut at markers; co pointers, pid@time prefixes and foreign lines are dropped")
    func parse() throws {
        let text = """
            123@1.5:qcow2_cache_flush co 0x1 is_l2_cache 1
            blk_co_preadv blk 0x1 bs 0x2 offset 0 bytes 0 flags 0x0
            blk_co_preadv blk 0x1 bs 0x2 offset 0 bytes 4096 flags 0x0
            qcow2_add_task co 0x1 bs 0x2 pool 0x55: read: cluster_type 4 file_cluster_offset 0 offset 0 bytes 4096 qiov 0x1 qiov_offset 0
            qcow2_cache_get co 0x55d9 is_l2_cache 1 offset 0x40000 read_from_disk 1
            qcow2_cache_get_done co 0x55d9 is_l2_cache 1 index 0
            blk_co_preadv blk 0x1 bs 0x2 offset 1 bytes 0 flags 0x0
            blk_co_preadv blk 0x1 bs 0x2 offset 2 bytes 0 flags 0x0
            qcow2_cache_flush co 0x1 is_l2_cache 0

            """
        let log = try QemuLog.parse(Data(text.utf8), fileName: "q.log", requestCount: 2, virtualSize: 1 << 30, image: 1)
        #expect(Array(log.openEvents) == [CacheEvent(kind: .flush, image: 1, isL2: true)])
        #expect(Array(log.events(ofRequest: 0)) == SpecNotation.events("L2 get 0x40000 hit 0", image: 1))
        #expect(log.events(ofRequest: 1).isEmpty)
        #expect(Array(log.closeEvents) == [CacheEvent(kind: .flush, image: 1, isL2: false)])
        #expect(log.pooled == [true, false])
        #expect(log.logLines == [1, 5, 6, 9])

        #expect(throws: ValidationError.badQemuLog("q.log:2: error: expected the marker of request 1 (offset 1), found offset 5"))
        {
            _ = try QemuLog.parse(
                Data(
                    "blk_co_preadv blk 0x1 bs 0x2 offset 0 bytes 0 flags 0x0\nblk_co_preadv blk 0x1 bs 0x2 offset 5 bytes 0 flags 0x0\n"
                        .utf8),
                fileName: "q.log", requestCount: 2, virtualSize: 1 << 30, image: 0)
        }
        #expect(throws: ValidationError.self) {
            _ = try QemuLog.parse(
                Data("qcow2_cache_get co 0x1 is_l2_cache\n".utf8), fileName: "q.log", requestCount: 0, virtualSize: 1, image: 0)
        }
        #expect(
            throws: ValidationError.badQemuLog(
                "q.log: error: found 0 request markers, expected 1 (QEMU stopped early or lost trace lines)")
        ) {
            _ = try QemuLog.parse(Data(), fileName: "q.log", requestCount: 0, virtualSize: 1, image: 0)
        }
    }

    @Test("the drive syntax doubles commas and qemu-system is chosen for a non-zero cache-clean-interval")
    func options() throws {
        #expect(
            QemuReplayer.imageOpts(top: "/a,b/t.qcow2", driveOptions: "l2-cache-size=1M", aio: "io_uring")
                == "driver=qcow2,file.filename=/a,,b/t.qcow2,file.aio=io_uring,l2-cache-size=1M")
        let timed = [
            TraceRecord(time: 0, op: .read, offset: 0, length: 512), TraceRecord(time: 5, op: .read, offset: 0, length: 512),
        ]
        let v = Validator(runner: MockRunner())
        var config = SimulationConfig(
            virtualSize: 1 << 30, driveOptions: try DriveOptions(parsing: "l2-cache-size=1M,cache-clean-interval=0"))
        #expect(v.tool(for: config, input: ValidationInput(records: timed)) == .qemuIO)
        config.chainLength = 2
        config.driveOptions = try DriveOptions(parsing: "backing.cache-clean-interval=5,cache-clean-interval=0")
        #expect(v.tool(for: config, input: ValidationInput(records: timed)) == .qemuSystem)
        let args = QemuReplayer.qemuSystemArguments(
            top: "/t.qcow2", driveOptions: "cache-clean-interval=1", mode: .writeback, discards: true, aio: nil, eventsFile: "/e",
            logFile: "/l")
        #expect(args.contains("if=none,id=d0,file=/t.qcow2,format=qcow2,cache-clean-interval=1,cache=writeback,discard=unmap"))
        #expect(args.prefix(6) == ["-machine", "none", "-nodefaults", "-display", "none", "-qmp"])
        let ignore = QemuReplayer.qemuSystemArguments(
            top: "/t.qcow2", driveOptions: "", mode: .writethrough, discards: false, aio: nil, eventsFile: "/e", logFile: "/l",
            readOnly: true)
        #expect(ignore.contains("if=none,id=d0,file=/t.qcow2,format=qcow2,cache=writethrough,discard=ignore,readonly=on"))
    }

    @Test("qemu-io gets the rendering of the parsed --drive options (the io_uring probe too)")
    func renderedDriveOptions() throws {
        let mock = MockRunner()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = SimulationConfig(virtualSize: 1 << 30, chainLength: 2)
        try config.parseDriveOptions("backing.cache-clean-interval=0,l2-cache-size=1M,l2-cache-size=2M,cache-clean-interval=-0")
        let images = BuiltImages(directory: dir, paths: [dir + "/base.qcow2", dir + "/top1.qcow2"])
        // The mock writes no trace log, so the replay fails after running qemu-io.
        #expect(throws: ValidationError.self) {
            _ = try QemuReplayer(runner: mock).replayQemuIO(config: config, images: images, records: [], directory: dir)
        }
        let opts = "driver=qcow2,file.filename=\(dir)/top1.qcow2,file.aio=io_uring,"
            + "l2-cache-size=2097152,cache-clean-interval=0,backing.cache-clean-interval=0"
        #expect(mock.requests.map(\.executable) == ["qemu-io", "qemu-io"])
        #expect(mock.requests.allSatisfy { $0.arguments.contains(opts) })
    }

    @Test("read-only adds -r; discard=ignore leaves discards out of the qemu-io script (markers stay)")
    func readOnlyAndDiscards() throws {
        #expect(
            QemuReplayer.qemuIOArguments(
                mode: .writeback, eventsFile: "/e", logFile: "/l", imageOpts: "driver=qcow2", readOnly: true)
                == ["-r", "-t", "writeback", "-T", "events=/e,file=/l", "--image-opts", "driver=qcow2"])
        let recs = TraceText.records("D 0 64k\nW 0 4k\nZ 0 64k")
        #expect(
            QemuIOScript.script(for: recs, virtualSize: 1 << 30, discards: false)
                == "read -q 0 0\nread -q 1 0\nwrite -q 0 4096\nread -q 2 0\nwrite -q -z 0 65536\nread -q 3 0\n")
        #expect(QemuIOScript.script(for: recs, virtualSize: 1 << 30).contains("discard -q 0 65536\n"))

        // A read-only run refuses a trace that writes, naming the request, before running QEMU.
        let mock = MockRunner()
        var config = SimulationConfig(virtualSize: 1 << 30)
        config.readOnly = true
        #expect(throws: ValidationError.badTrace("t.trace:3: error: request 2 is a writeZeroes on an image opened read-only")) {
            _ = try Validator(runner: mock).replay(
                config: config, input: ValidationInput(records: TraceText.records("R 0 4k\nF\nZ 0 64k"), fileName: "t.trace"))
        }
        #expect(mock.requests.isEmpty)
    }
}

import Foundation
import QcowTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// qcow2sim started as the leader of its own process group (as a shell starts a job), so a
/// test can send a signal to "its process group" the way Ctrl-C does.
struct GroupLeader {
    let pid: Int32

    /// Starts the binary with `args`, `environment` added to ours, output to `stdoutPath`/`stderrPath`.
    static func start(_ args: [String], environment: [String: String], stdoutPath: String, stderrPath: String) throws
        -> GroupLeader
    {
        var actions = posix_spawn_file_actions_t()
        var attr = posix_spawnattr_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawnattr_init(&attr)
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // As a shell starts a job: its own group, nothing blocked (the test runner blocks
        // signals in its threads; the mask would be inherited).
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let argv = ([CLITests.binary.path] + args).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: Int32 = 0
        let status = posix_spawn(&pid, CLITests.binary.path, &actions, &attr, argv, envp)
        guard status == 0 else { throw POSIXError(POSIXErrorCode(rawValue: status) ?? .EIO) }
        return GroupLeader(pid: pid)
    }

    /// Sends `signal` to the whole group.
    func signalGroup(_ signal: Int32) { kill(-pid, signal) }

    /// Waits for the exit; returns the exit status (or 128 + signal when it died of one).
    func wait() -> Int32 {
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let sig = raw & 0x7f
        return sig == 0 ? (raw >> 8) & 0xff : 128 + sig
    }
}

/// The processes in /proc whose command line contains a string (ours: the test's unique paths).
enum ProcessTable {
    static func matching(_ needle: String) -> [(pid: Int32, cmdline: String)] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [(Int32, String)] = []
        for e in entries {
            guard let pid = Int32(e), let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
            let cmd = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            // Zombies have an empty command line; they are not running.
            if cmd.contains(needle) { found.append((pid, cmd)) }
        }
        return found
    }

    /// Whether `pid` exists and is not a zombie.
    static func alive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }

    /// Polls `condition` every 50 ms until it holds or `limit` seconds pass (a guard against a
    /// hang, not a timed assertion: nothing asserts how long it took).
    static func waitFor(_ limit: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(limit)
        while Date() < end {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }
}

/// Issue 14, item 7: Ctrl-C (and SIGTERM, SIGHUP) on `validate` stops its QEMU children, removes
/// its temporary directory and exits 130/143/129; a hung QEMU program is killed by the watchdog.
@Suite(.serialized) struct CLIProcessTests {
    /// A PATH directory with a fake `qemu-img` (succeeds, does nothing) and a fake `qemu-io` that
    /// prints a line to standard error, starts a child that sleeps (its pid in `sleep.pid`) and
    /// waits for it: a hung qemu-io with a grandchild holding its pipes open. `--version` answers
    /// as QEMU 7.2 does, so validate's version check passes and the hang is in the replay.
    static func fakeQemu() throws -> (bin: String, sleepPidFile: String) {
        let dir = try CLIRun.directory()
        let bin = dir + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let pidFile = dir + "/sleep.pid"
        // The first line of Debian bookworm's `qemu-io --version` / `qemu-system-x86_64 --version`.
        func version(_ name: String) -> String {
            "if [ \"$1\" = --version ]; then echo '\(name) version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'; exit 0; fi\n"
        }
        let scripts = [
            "qemu-img": "#!/bin/sh\nexit 0\n",
            "qemu-io":
                "#!/bin/sh\n" + version("qemu-io")
                + "echo 'fake qemu-io: stuck' >&2\nsleep 600 &\necho $! > \(pidFile)\nwait\n",
            // Greets over QMP, then never answers qmp_capabilities.
            "qemu-system-x86_64":
                "#!/bin/sh\n" + version("QEMU emulator")
                + "echo '{\"QMP\": {}}'\necho 'fake qemu-system: stuck' >&2\nsleep 600 &\necho $! > \(pidFile)\nwait\n",
        ]
        for (name, text) in scripts {
            try Data(text.utf8).write(to: URL(fileURLWithPath: bin + "/" + name))
            chmod(bin + "/" + name, 0o755)
        }
        return (bin, pidFile)
    }

    /// The sleeping grandchild's pid the fake wrote, if it got that far.
    static func pid(in file: String) -> Int32? {
        (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func environment(bin: String, tmp: String) -> [String: String] {
        ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"), "TMPDIR": tmp]
    }

    /// The hung fake is killed after 3 s without progress: long enough that the fake qemu-img and
    /// `qemu-io --version` (a shell's start and exit) are never mistaken for hung on a loaded
    /// machine, short enough to keep the suite quick.
    @Test func watchdogKillsAHungQemuIO() throws {
        let (bin, pidFile) = try Self.fakeQemu()
        let tmp = try CLIRun.directory()
        let trace = try CLITests.trace("W,0,4K\nR,0,4K\n")
        let (s, out, err) = try CLIRun.run(
            ["validate", trace, "--size", "1G", "--no-io-uring", "--qemu-timeout", "3"],
            environment: ProcessInfo.processInfo.environment.merging(Self.environment(bin: bin, tmp: tmp)) { $1 })
        #expect(s == 70)
        #expect(out.isEmpty)
        let dirs = try FileManager.default.contentsOfDirectory(atPath: tmp)
        #expect(dirs.isEmpty)
        let work = tmp + "/qcow2sim-validate-"
        #expect(err.hasPrefix("qcow2sim validate: error: 'qemu-io -t writeback -T events=\(work)"))
        #expect(
            err.hasSuffix(
                "/base.qcow2' made no progress for 3 s (no output, CPU time or file I/O) and was killed; its output ended with:\nfake qemu-io: stuck\n"
            ))
        // The whole group was killed: the grandchild too. SIGKILL was sent before qcow2sim exited,
        // but a loaded machine may not have run the grandchild's exit yet: poll (an upper bound,
        // not a timed assertion).
        let sleeper = Self.pid(in: pidFile)
        #expect(sleeper != nil)
        if let sleeper { #expect(ProcessTable.waitFor(30) { !ProcessTable.alive(sleeper) }, "the sleeping grandchild survived") }
        #expect(ProcessTable.waitFor(30) { ProcessTable.matching(bin).isEmpty })
    }

    /// The QMP conversation: the watchdog runs while we wait for an answer.
    @Test func watchdogKillsAHungQemuSystem() throws {
        let (bin, pidFile) = try Self.fakeQemu()
        let tmp = try CLIRun.directory()
        let trace = try CLITests.trace("W,0,4K\nR,0,4K\n")
        let (s, out, err) = try CLIRun.run(
            ["validate", trace, "--size", "1G", "--runner", "qemu-system", "--qemu-timeout", "3"],
            environment: ProcessInfo.processInfo.environment.merging(Self.environment(bin: bin, tmp: tmp)) { $1 })
        #expect(s == 70)
        #expect(out.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
        #expect(err.hasPrefix("qcow2sim validate: error: 'qemu-system-x86_64 -machine none -nodefaults -display none -qmp stdio"))
        #expect(
            err.hasSuffix(
                "/qemu-trace.log' made no progress for 3 s (no output, CPU time or file I/O) and was killed; its output ended with:\nfake qemu-system: stuck\n"
            ))
        let sleeper = Self.pid(in: pidFile)
        #expect(sleeper != nil)
        if let sleeper { #expect(ProcessTable.waitFor(30) { !ProcessTable.alive(sleeper) }, "the sleeping grandchild survived") }
        #expect(ProcessTable.waitFor(30) { ProcessTable.matching(bin).isEmpty })
    }

    @Test(arguments: [(SIGINT, 130), (SIGTERM, 143), (SIGHUP, 129)] as [(Int32, Int32)])
    func signalStopsTheFakeQemuAndCleansUp(_ signal: Int32, _ expected: Int32) throws {
        let (bin, pidFile) = try Self.fakeQemu()
        let tmp = try CLIRun.directory()
        let logs = try CLIRun.directory()
        let trace = try CLITests.trace("W,0,4K\nR,0,4K\n")
        let job = try GroupLeader.start(
            ["validate", trace, "--size", "1G", "--no-io-uring", "--qemu-timeout", "0"],
            environment: Self.environment(bin: bin, tmp: tmp), stdoutPath: logs + "/out", stderrPath: logs + "/err")
        let started = ProcessTable.waitFor(60) { FileManager.default.fileExists(atPath: pidFile) }
        #expect(started, "the fake qemu-io never started")
        job.signalGroup(signal)
        let status = job.wait()
        #expect(status == expected)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
        #expect(ProcessTable.waitFor(30) { ProcessTable.matching(bin).isEmpty })
        let sleeper = Self.pid(in: pidFile)
        if let sleeper { #expect(ProcessTable.waitFor(30) { !ProcessTable.alive(sleeper) }, "the sleeping grandchild survived") }
        #expect(try String(contentsOfFile: logs + "/out", encoding: .utf8).isEmpty)
    }

    /// `simulate --events` and `--output` on an interrupted run: the temporary files go, an
    /// existing report stays as it was.
    @Test func signalRemovesSimulateTemporaryOutputs() throws {
        let dir = try CLIRun.directory()
        let trace = dir + "/long.csv"
        let (g, _, gerr) = try CLIRun.run([
            "generate", "--count", "200000", "--size", "1G", "--read-ratio", "0.5", "--seed", "3", "-o", trace,
        ])
        #expect(g == 0, "\(gerr)")
        let out = try CLIRun.directory()
        try Data("old report\n".utf8).write(to: URL(fileURLWithPath: out + "/report.txt"))
        let job = try GroupLeader.start(
            ["simulate", trace, "--size", "1G", "--events", out + "/events.log", "--output", out + "/report.txt"],
            environment: [:], stdoutPath: dir + "/out", stderrPath: dir + "/err")
        let writing = ProcessTable.waitFor(120) {
            ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).contains { $0.hasPrefix(".events.log.tmp.") }
        }
        #expect(writing, "no temporary events file appeared")
        job.signalGroup(SIGINT)
        #expect(job.wait() == 130)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out) == ["report.txt"])
        #expect(try String(contentsOfFile: out + "/report.txt", encoding: .utf8) == "old report\n")
    }

    /// The issue's reproduction: a long trace through real qemu-io, SIGINT to the job's group
    /// once qemu-io replays it.
    @Test(.requires(QemuTools.io))
    func ctrlCOnALongValidateLeavesNothing() throws {
        let dir = try CLIRun.directory()
        let trace = dir + "/long.csv"
        let (g, _, gerr) = try CLIRun.run([
            "generate", "--count", "200000", "--size", "1G", "--read-ratio", "0.5", "--seed", "7", "-o", trace,
        ])
        #expect(g == 0, "\(gerr)")
        let tmp = try CLIRun.directory()
        let job = try GroupLeader.start(
            ["validate", trace, "--size", "1G"], environment: ["TMPDIR": tmp], stdoutPath: dir + "/out",
            stderrPath: dir + "/err")
        // The replaying qemu-io is the one writing QEMU's trace log in our temporary directory.
        let replaying = ProcessTable.waitFor(300) {
            !ProcessTable.matching(tmp).filter { $0.cmdline.hasPrefix("qemu-io") && $0.cmdline.contains("qemu-trace.log") }
                .isEmpty
        }
        #expect(replaying, "qemu-io never started: \((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")")
        job.signalGroup(SIGINT)
        let status = job.wait()
        #expect(status == 130)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp) == [])
        #expect(ProcessTable.waitFor(30) { ProcessTable.matching(tmp).isEmpty })
        #expect(try String(contentsOfFile: dir + "/err", encoding: .utf8) == "")
    }
}

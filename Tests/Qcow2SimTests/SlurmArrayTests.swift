import Foundation
import QcowTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real Slurm cluster of one node on localhost (issue 16, item 5): `munged`, `slurmctld` and
/// `slurmd` from Debian's `munge` and `slurm-wlm` (`.ci/setup` installs them) in a temporary
/// directory with their own configuration, sockets, spool and state, on free ports; a 4-task job
/// array runs `qcow2sim sweep --shard $SLURM_ARRAY_TASK_ID/4`, and the merged shards equal the
/// sweep run by itself, byte for byte. The daemons are stopped whatever happens.
///
/// Settings (Slurm 22.05, root in a container without systemd or cgroups): SlurmUser=root,
/// ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none,
/// AccountingStorageType=accounting_storage/none, SelectType=select/cons_tres with CR_Core,
/// AuthInfo=socket= pointing at our munged's socket.
@Suite struct SlurmArrayTests {
    /// `CI` set (and not `false`): missing Slurm binaries fail the test instead of skipping it.
    static let inCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" } ?? false

    /// The programs the test runs, and their Debian packages.
    static let programs = [
        ("munged", "munge"), ("mungekey", "munge"), ("slurmctld", "slurmctld"), ("slurmd", "slurmd"), ("sbatch", "slurm-client"),
        ("sinfo", "slurm-client"), ("scancel", "slurm-client"),
    ]

    /// The full path of `tool` on PATH or in the sbin directories (the daemons live in /usr/sbin).
    static func find(_ tool: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin"
        return path.split(separator: ":").map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A port nobody listens on now (the kernel's choice for port 0).
    static func freePort() -> UInt16? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return nil }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return named == 0 ? UInt16(bigEndian: addr.sin_port) : nil
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), looked up at run time
    /// (Swift's Glibc module does not declare it).
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let addCloseFrom: AddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: AddCloseFrom.self)
    }

    /// The daemons and programs of one test cluster.
    final class Cluster {
        let dir: String
        var env: [String: String]
        var daemons: [(name: String, pid: pid_t)] = []
        /// Daemons reaped already (their pid may be another process's by now: never signalled).
        var exited: Set<pid_t> = []

        init(dir: String) {
            self.dir = dir
            env = ProcessInfo.processInfo.environment
            env["SLURM_CONF"] = dir + "/slurm.conf"
        }

        /// Starts `tool` in the foreground (its output to DIR/log/NAME.out), a child of the test
        /// stopped by `stop()`. Spawned with posix_spawn, every descriptor above 2 closed, not
        /// with Foundation's Process: a daemon that closes the descriptors it inherited (slurmctld
        /// does) looks exited to Process, whose monitor thread then blocks in waitpid on it and
        /// reaps no other child; and an inherited pipe of another test's child would keep that
        /// test waiting for its end of file.
        func start(_ name: String, _ tool: String, _ args: [String]) throws {
            guard let closeFrom = SlurmArrayTests.addCloseFrom else {
                throw SpawnFailure(text: "posix_spawn_file_actions_addclosefrom_np not found (glibc 2.34 or later)")
            }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, dir + "/log/\(name).out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            _ = closeFrom(&actions, 3)
            let argv = ([tool] + args).map { strdup($0) } + [nil]
            let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { for p in argv + envp { free(p) } }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, tool, &actions, nil, argv, envp)
            guard rc == 0 else { throw SpawnFailure(text: "posix_spawn \(tool): \(String(cString: strerror(rc)))") }
            daemons.append((name, pid))
        }

        /// Whether daemon `pid` still runs (reaping it if it has exited).
        func running(_ pid: pid_t) -> Bool {
            if exited.contains(pid) { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == 0 { return true }
            exited.insert(pid)
            return false
        }

        /// Runs `tool` to completion, killed after `limit` seconds; (status, output).
        func run(_ tool: String, _ args: [String], limit: Double = 60) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = args
            p.environment = env
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            p.standardInput = FileHandle.nullDevice
            try p.run()
            let timer = DispatchWorkItem { if p.isRunning { p.terminate() } }
            DispatchQueue.global().asyncAfter(deadline: .now() + limit, execute: timer)
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            timer.cancel()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }

        /// Polls `done` every 0.25 s for at most `limit` seconds.
        func wait(_ limit: Double, _ done: () -> Bool) -> Bool {
            let end = Date().addingTimeInterval(limit)
            while Date() < end {
                if done() { return true }
                usleep(250_000)
            }
            return done()
        }

        /// The end of a daemon's log, for messages.
        func tail(_ name: String) -> String {
            let text = (try? String(contentsOfFile: dir + "/log/\(name).out", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").suffix(5).joined(separator: "\n")
        }

        /// Cancels what is left of the test's jobs, then stops every daemon: SIGTERM, and SIGKILL
        /// for one still running after 10 s.
        func stop(scancel: String?) {
            if let scancel, let ctld = daemons.first(where: { $0.name == "slurmctld" }), running(ctld.pid) {
                _ = try? run(scancel, ["--quiet", "--user", "root"], limit: 10)
            }
            for d in daemons.reversed() where running(d.pid) { kill(d.pid, SIGTERM) }
            for d in daemons.reversed() where !wait(10, { !running(d.pid) }) {
                kill(d.pid, SIGKILL)
                var status: Int32 = 0
                waitpid(d.pid, &status, 0)
                exited.insert(d.pid)
            }
            daemons = []
        }
    }

    /// A daemon that could not be started.
    struct SpawnFailure: Error, CustomStringConvertible {
        var text: String
        var description: String { text }
    }

    /// Skips (prints why), or in CI fails, when a program is missing.
    static func missingPrograms() -> String? {
        let absent = programs.filter { find($0.0) == nil }
        guard !absent.isEmpty else { return nil }
        let packages = Set(absent.map(\.1)).sorted().joined(separator: " ")
        return "\(absent.map(\.0).joined(separator: ", ")) not found; install Slurm and MUNGE (Debian: apt-get install slurm-wlm munge; .ci/setup --deps does)"
            + " [packages: \(packages)]"
    }

    @Test func fourTaskJobArrayOfSweepShardsMergesToTheWholeSweep() throws {
        if let why = Self.missingPrograms() {
            if Self.inCI { Issue.record(Comment(rawValue: "Slurm cannot run in CI: \(why)")) } else { Skip.noteCurrent(why) }
            return
        }
        func tool(_ name: String) -> String { Self.find(name) ?? name }
        // A short path: munged's socket path must fit sockaddr_un (108 bytes).
        var template = Array("/tmp/qcow2sim-slurm-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            Issue.record("mkdtemp: \(String(cString: strerror(errno)))")
            return
        }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = FileManager.default
        for sub in ["munge", "run", "log", "state", "spool", "out"] { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        // munged refuses a socket directory others cannot search, and a key directory others can
        // write to.
        chmod(dir, 0o755)
        chmod(dir + "/run", 0o755)
        chmod(dir + "/munge", 0o700)
        let cluster = Cluster(dir: dir)
        defer { cluster.stop(scancel: Self.find("scancel")) }

        let (keyStatus, keyOut) = try cluster.run(tool("mungekey"), ["--create", "--keyfile=\(dir)/munge/munge.key"])
        try #require(keyStatus == 0, "mungekey: \(keyOut)")
        let socket = dir + "/run/munge.sock"
        try cluster.start(
            "munged", tool("munged"),
            [
                "--foreground", "--socket=\(socket)", "--key-file=\(dir)/munge/munge.key", "--log-file=\(dir)/log/munged.log",
                "--pid-file=\(dir)/run/munged.pid", "--seed-file=\(dir)/munge/munged.seed",
            ])
        guard cluster.wait(20, { fm.fileExists(atPath: socket) }) else {
            Skip.noteCurrent("munged did not create its socket within 20 s: \(cluster.tail("munged"))")
            return
        }
        guard let ctldPort = Self.freePort(), let slurmdPort = Self.freePort(), ctldPort != slurmdPort else {
            Skip.noteCurrent("no free TCP port on 127.0.0.1 for slurmctld and slurmd")
            return
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let conf = """
            ClusterName=qcow2simtest
            SlurmctldHost=localhost
            SlurmctldPort=\(ctldPort)
            SlurmdPort=\(slurmdPort)
            SlurmUser=root
            SlurmdUser=root
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket=\(socket)
            StateSaveLocation=\(dir)/state
            SlurmdSpoolDir=\(dir)/spool
            SlurmctldPidFile=\(dir)/run/slurmctld.pid
            SlurmdPidFile=\(dir)/run/slurmd.pid
            SlurmctldLogFile=\(dir)/log/slurmctld.log
            SlurmdLogFile=\(dir)/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            JobCompType=jobcomp/none
            SchedulerType=sched/builtin
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            MpiDefault=none
            ReturnToService=2
            NodeName=qnode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=\(cpus) State=UNKNOWN
            PartitionName=qtest Nodes=qnode Default=YES MaxTime=INFINITE State=UP

            """
        try conf.write(toFile: dir + "/slurm.conf", atomically: true, encoding: .utf8)
        // -i: ignore state a previous controller left (there is none: a fresh StateSaveLocation).
        try cluster.start("slurmctld", tool("slurmctld"), ["-D", "-i", "-f", dir + "/slurm.conf"])
        try cluster.start("slurmd", tool("slurmd"), ["-D", "-N", "qnode", "-f", dir + "/slurm.conf"])
        var state = ""
        let up = cluster.wait(60) {
            state = ((try? cluster.run(tool("sinfo"), ["-h", "-N", "-o", "%t"], limit: 10).1) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return state == "idle"
        }
        guard up else {
            Skip.noteCurrent(
                "the one-node Slurm cluster did not come up within 60 s (sinfo: '\(state)'); slurmctld: \(cluster.tail("slurmctld")); slurmd: \(cluster.tail("slurmd"))"
            )
            return
        }

        let q = CLITests.binary.path
        let sweep = [
            "sweep", SweepTests.seedMixed, SweepTests.guest, "--size", "8G", "--vary", "cluster_size=64K,128K", "--vary",
            "l2-cache-size=64K..1M*2",
        ]
        let quoted = sweep.map { "'\($0)'" }.joined(separator: " ")
        let script = """
            #!/bin/bash
            set -euo pipefail
            exec '\(q)' \(quoted) --jobs 1 --shard "$SLURM_ARRAY_TASK_ID/4" --output "\(dir)/out/shard-$SLURM_ARRAY_TASK_ID.json"

            """
        try script.write(toFile: dir + "/job.sh", atomically: true, encoding: .utf8)
        chmod(dir + "/job.sh", 0o755)
        let (status, output) = try cluster.run(
            tool("sbatch"),
            [
                "--array=0-3", "--wait", "--time=10", "--chdir=\(dir)", "--output=\(dir)/out/slurm-%A_%a.log", "--job-name=qcow2sim-shard",
                dir + "/job.sh",
            ], limit: 600)
        let logs = (try? fm.contentsOfDirectory(atPath: dir + "/out").filter { $0.hasSuffix(".log") }.sorted()) ?? []
        let logText = logs.map { name in "\(name): " + ((try? String(contentsOfFile: "\(dir)/out/\(name)", encoding: .utf8)) ?? "") }
        #expect(status == 0, "sbatch: \(output) \(logText)")
        #expect(output.hasPrefix("Submitted batch job "), "\(output)")
        let shards = (0..<4).map { "\(dir)/out/shard-\($0).json" }
        #expect(shards.allSatisfy { fm.fileExists(atPath: $0) }, "\(logText)")
        let (mergeStatus, merged, mergeErr) = try CLIRun.run(["merge"] + shards)
        #expect(mergeStatus == 0 && mergeErr == "", "\(mergeErr)")
        let (wholeStatus, whole, wholeErr) = try CLIRun.run(sweep)
        #expect(wholeStatus == 0, "\(wholeErr)")
        #expect(merged == whole)
        #expect(whole.split(separator: "\n").count == 1 + 40)
    }
}

import Foundation
import Testing
import Validation

/// The QEMU watchdog (issue 14, item 7) on plain programs: silence and idleness kill, work does not.
@Suite struct WatchdogTests {
    @Test func idleChildIsKilledWithItsArgvAndOutput() throws {
        let runner = SystemProcessRunner(inactivityTimeout: 1)
        let request = ProcessRequest(executable: "/bin/sh", arguments: ["-c", "echo started >&2; sleep 30"])
        #expect(
            throws: ValidationError.toolTimedOut(
                argv: ["/bin/sh", "-c", "echo started >&2; sleep 30"], seconds: 1, outputTail: "started")
        ) { try runner.run(request) }
        let message = ValidationError.toolTimedOut(argv: request.argv, seconds: 1, outputTail: "started\n").description
        #expect(
            message
                == "'/bin/sh -c 'echo started >&2; sleep 30'' made no progress for 1 s (no output, CPU time or file I/O) and was killed; its output ended with:\nstarted"
        )
    }

    /// A child that computes without printing (CPU time grows) or keeps reading its input is alive.
    /// The loop runs well past the 1 s timeout (about 2 s on a quiet machine; 400000 turns took
    /// 0.9 s, so it ended before the watchdog could have fired and the check could not fail).
    @Test func busyChildIsNotKilled() throws {
        let runner = SystemProcessRunner(inactivityTimeout: 1)
        let busy = try runner.run(
            ProcessRequest(
                executable: "/bin/sh", arguments: ["-c", "i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done; echo $i"]))
        #expect(busy.status == 0)
        #expect(String(decoding: busy.standardOutput, as: UTF8.self) == "1500000\n")
        let reader = try runner.run(
            ProcessRequest(
                executable: "/bin/sh", arguments: ["-c", "wc -l"],
                standardInput: Data(String(repeating: "x\n", count: 100_000).utf8)))
        #expect(String(decoding: reader.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespaces) == "100000\n")
    }

    @Test func exitStatusAndSignalsAreReported() throws {
        let runner = SystemProcessRunner(inactivityTimeout: 0)
        #expect(try runner.run(ProcessRequest(executable: "/bin/sh", arguments: ["-c", "exit 3"])).status == 3)
        #expect(try runner.run(ProcessRequest(executable: "/bin/sh", arguments: ["-c", "kill -9 $$"])).status == 137)
        let dir = FileManager.default.temporaryDirectory.path
        let pwd = try runner.run(ProcessRequest(executable: "/bin/pwd", arguments: [], workingDirectory: dir))
        #expect(
            String(decoding: pwd.standardOutput, as: UTF8.self) == URL(fileURLWithPath: dir).resolvingSymlinksInPath().path + "\n"
        )
    }
}

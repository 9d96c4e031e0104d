import Foundation
import Qcow2Sim
import TraceKit
import Validation

/// `qcow2sim validate TRACE`: the same I/O on a real image through QEMU, compared event by event
/// with the simulation (issue 4). Exit 0 identical, 3 equivalent (1 with --strict), 1 divergent
/// (like diff), 64 usage, 65 bad trace, 69 QEMU missing, 70 QEMU failed or hung (`--qemu-timeout`),
/// 74 the report cannot be written.
enum ValidateCommand {
    static let help = """
        usage: qcow2sim validate TRACE [run options] [--keep DIR] [--format text|json]
                                 [--runner auto|qemu-io|qemu-system] [--time-scale X]
                                 [--trace-format FMT] [--no-io-uring] [--qemu-only]
                                 [--read-only] [--discard unmap|ignore] [--strict]

        Builds the real image(s) with qemu-img exactly as the simulation starts, replays TRACE through
        qemu-io (one request at a time, QEMU's qcow2_cache* trace captured), and compares QEMU's cache
        events with the simulator's. Outcomes:
          identical    every event in order
          equivalent   every request's events are a valid interleaving of the tasks QEMU runs
                       concurrently for a multi-segment request, and all counts are equal, but
                       some requests ran in another order (they are named)
          divergent    events or counts differ: the first divergence with its request and context
        When the trace's timestamps span at least one cache-clean-interval (QEMU's default is 600 s),
        the simulation fires the clean timer, which qemu-io 7.2 never does: --runner auto then replays
        through qemu-system-x86_64 -machine none over QMP, time compressed (timestamps and intervals
        scaled by the same factor, whole seconds) so the ticks fall between the same requests. With
        --runner qemu-io it says so before running. Otherwise qemu-system paces requests by their
        timestamps (× --time-scale).

        run options (as for simulate):
        \(RunConfigArguments.help)
          --read-only           open the top image read-only (qemu-io -r)
          --discard MODE        unmap (default, like qemu-io) or ignore (a VM's default -drive);
                                with ignore, qemu-io is sent no discards (it always unmaps)
          --keep DIR            keep the images and QEMU's raw trace log (DIR/qemu-trace.log, text) in DIR
          --strict              count `equivalent` as a failure (exit 1)
          --format FMT          text (default) or json
          --runner R            auto (default), qemu-io or qemu-system
          --time-scale X        multiply trace timestamps when pacing qemu-system (default 1)
          --trace-format FMT    input format (default: detected)
          --no-io-uring         use QEMU's thread pool instead of trying io_uring
          --qemu-only           run QEMU and report its counts without comparing
          --qemu-timeout S      kill a QEMU program that shows no sign of life (no output, CPU
                                time or file I/O) for S seconds: exit 70 (default 300; 0 = never)
          --debug-mis-evict-at-lookup N
                                test only: the simulator picks a wrong victim at lookup N
          --debug-reverse-task-order
                                test only: the simulator resumes a multi-segment write's tasks
                                last submitted first (another order QEMU can take)

        exit status: 0 identical, 3 equivalent (1 with --strict), 1 divergent, 64 usage, 65 bad trace,
                     69 QEMU missing, 70 QEMU failed or hung, 74 the report cannot be written;
                     SIGINT/SIGTERM/SIGHUP kill QEMU, remove the temporary directory and exit
                     130/143/129

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "validate")
        }
        do {
            let a = try Arguments(
                args,
                options: RunConfigArguments.options.union([
                    "--keep", "--format", "--runner", "--time-scale", "--trace-format", "--debug-mis-evict-at-lookup",
                    "--discard", "--qemu-timeout",
                ]),
                flags: ["--no-io-uring", "--qemu-only", "--read-only", "--strict", "--debug-reverse-task-order"],
                aliases: RunConfigArguments.aliases, repeatable: RunConfigArguments.repeatable)
            let misEvict = try a.value("--debug-mis-evict-at-lookup").map { text -> Int in
                guard let n = Int(text), n >= 0 else {
                    throw UsageError("invalid value '\(text)' for --debug-mis-evict-at-lookup (expected a lookup number)")
                }
                return n
            }
            let path = try a.positionals(1, what: "TRACE (the trace file to replay)")[0]
            var config = try RunConfigArguments.config(a)
            config.readOnly = a.has("--read-only")
            config.discardUnmap = try a.choice("--discard", ["unmap", "ignore"], default: "unmap") == "unmap"
            let format = try a.choice("--format", ["text", "json"], default: "text")
            let runnerName = try a.choice("--runner", ["auto", "qemu-io", "qemu-system"], default: "auto")
            let timeScale = try a.value("--time-scale").map { try TraceArgs.nonNegative($0, "--time-scale") } ?? 1
            let qemuTimeout =
                try a.value("--qemu-timeout").map { try TraceArgs.nonNegative($0, "--qemu-timeout", what: "number of seconds") }
                ?? SystemProcessRunner.defaultInactivityTimeout
            let traceFormat = try a.value("--trace-format").map { try TraceFormat.parse($0) }
            var traceOptions = TraceOptions()
            traceOptions.diskSize = config.virtualSize
            var reader = try TraceFile.open(path: path, format: traceFormat, options: traceOptions)
            let input = try ValidationInput(reading: &reader)

            let options = ValidatorOptions(
                keepDirectory: a.value("--keep"), tool: ReplayTool(rawValue: runnerName), timeScale: timeScale,
                preferIOUring: !a.has("--no-io-uring"))
            let validator = Validator(runner: SystemProcessRunner(inactivityTimeout: qemuTimeout), options: options)
            // Said before running: the replay takes a while, and the reason is not in the events.
            if let warning = validator.warning(config: config, input: input) {
                let kind = validator.tool(for: config, input: input) == .qemuIO ? "warning" : "note"
                Console.printErr("qcow2sim validate: \(kind): " + warning)
            }
            var report: ValidationReport
            if a.has("--qemu-only") {
                let replay = try validator.replay(config: config, input: input)
                report = Validator.report(
                    config: config, input: input, expected: nil, replay: replay, sizes: nil, keptDirectory: options.keepDirectory)
            } else {
                // Check QEMU first: a missing QEMU is exit 69 whatever else is missing.
                try validator.checkTools(for: config, input: input)
                var simulated = config
                simulated.debugReverseTaskResumption = a.has("--debug-reverse-task-order")
                let (log, sizes) = try ExpectedRun.simulate(config: simulated, input: input, misEvictAtLookup: misEvict)
                report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
            }
            report.strict = a.has("--strict")
            try Console.print(format == "json" ? report.json() : report.text())
            return report.exitCode
        } catch {
            return reportFailure(error, command: "validate")
        }
    }
}

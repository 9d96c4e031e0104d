import Foundation
import Qcow2Sim
import TraceKit

/// `qcow2sim explain TRACE --request N`: one request step by step, for teaching and debugging
/// (issue 13, item 3).
enum ExplainCommand {
    static let help = """
        usage: qcow2sim explain TRACE --request N [run options] [--format text|json]
                                [--output FILE] [--policy NAME] [--read-only] [--discard unmap|ignore]
                                [trace mapping options]

        Runs TRACE as `simulate` does up to request N (counted from 1, as `validate` and
        --request-markers count requests) and shows request N step by step: guest offset →
        cluster → L1 index → L2 table and slice → the entry and its bits (and the subcluster
        bitmap with extended_l2) → host cluster or backing image; every cache lookup with hit or
        miss, the victim and why (QEMU's scan from the start index, the LRU stamps), write-backs
        and dependency flushes; copy-on-write ranges, refcount updates, and the request's events.

          --request N           the request to explain (1 = the first)
          --format FMT          text (default) or json (schema_version 1)
          --output FILE         write to FILE instead of standard output
          --policy NAME         eviction policy (not opt: it has no live victim scan)

        run options: as 'qcow2sim simulate --help' lists them (--size, -o, --chain, --populate,
        --layer, --image, --drive, --cache-mode, …).

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "explain")
        }
        do {
            let a = try Arguments(
                args, options: SimulateCommand.runOptions.union(["--request", "--format", "--output", "--policy"]),
                flags: SimulateCommand.runFlags, aliases: RunConfigArguments.aliases, repeatable: RunConfigArguments.repeatable)
            let trace = try a.positionals(1, what: "TRACE argument")[0]
            guard let text = a.value("--request") else {
                throw UsageError("missing --request N (the request to explain, from 1)")
            }
            guard let n = Int(text), n >= 1 else {
                throw UsageError("invalid value '\(text)' for --request (expected a request number, 1 or more)")
            }
            var config = try SimulateCommand.runConfig(a)
            config.policy = a.value("--policy") ?? "qemu"
            let format = try a.choice("--format", ["text", "json"], default: "text")
            var reader = try TraceCommand.open(a)
            let report = try Explain.run(config: config, reader: &reader, request: n, trace: trace)
            let out = format == "json" ? try report.json() : report.text()
            try writeOutput(Data(out.utf8), to: a.value("--output") ?? "-")
            return 0
        } catch {
            return reportFailure(error, command: "explain")
        }
    }
}

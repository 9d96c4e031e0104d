import Foundation
import TraceKit

/// The command registry: one line per subcommand. Each command type parses its own arguments,
/// calls the libraries and prints; it returns a sysexits status.
enum CLI {
    static func main(_ args: [String]) -> Int32 {
        // SIGINT, SIGTERM, SIGHUP: stop QEMU children, remove temporary files, exit 130/143/129.
        Termination.shared.installSignalHandlers()
        guard let name = args.first, name != "--help", name != "-h", name != "help" else {
            Console.printErr(usage)
            return args.isEmpty ? 64 : 0
        }
        let rest = Array(args.dropFirst())
        switch name {
        case "simulate": return SimulateCommand.run(rest)
        case "validate": return ValidateCommand.run(rest)
        case "generate": return GenerateCommand.run(rest)
        case "trace": return TraceCommand.run(rest)
        case "sweep": return SweepCommand.run(rest)
        case "mrc": return MrcCommand.run(rest)
        case "compare": return CompareCommand.run(rest)
        case "explain": return ExplainCommand.run(rest)
        case "advise": return AdviseCommand.run(rest)
        case "calibrate": return CalibrateCommand.run(rest)
        case "merge": return MergeCommand.run(rest)
        default:
            Console.printErr("qcow2sim: error: unknown command '\(name)' (expected one of: simulate, sweep, mrc, compare, explain, advise, calibrate, merge, validate, generate, trace)")
            return 64
        }
    }

    static let usage = """
        usage: qcow2sim <command> [options]

        commands:
          simulate TRACE    replay a trace through the simulated qcow2 image and its caches
          sweep TRACE...    simulate every configuration of a grid (--vary KEY=VALUES), one table
          mrc TRACE         the L2 miss-ratio curve over a list of cache sizes (--sizes VALUES)
          compare TRACE...  policies and proposals side by side against a baseline, with the
                            optimal bound (--baseline SPEC --candidate SPEC...)
          explain TRACE     one request step by step: L1/L2 walk, cache lookups, victims, COW
                            (--request N)
          advise TRACE...   cache settings per image for a memory budget or a target, ready to
                            paste as -drive, -blockdev and libvirt XML, with predicted IOPS
          calibrate         a cost model for --cost: measured with qemu-io (--dir DIR) or
                            fitted to a table of points (--fit TABLE.csv)
          merge SHARD...    the output of a run split with --shard K/N, from its shard files
          validate TRACE    replay the same trace through real QEMU and compare event by event
          generate          write a synthetic workload in the native trace format
          trace info TRACE  summarize a trace; trace convert TRACE -o OUT converts it

        Run 'qcow2sim <command> --help' for a command's options.

        """
}

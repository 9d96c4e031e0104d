import Foundation

/// The command registry: one line per subcommand. Each command type parses its own arguments,
/// calls the libraries and prints; it returns a sysexits status.
enum CLI {
    static func main(_ args: [String]) -> Int32 {
        guard let name = args.first, name != "--help", name != "-h", name != "help" else {
            FileHandle.standardError.write(Data(usage.utf8))
            return args.isEmpty ? 64 : 0
        }
        let rest = Array(args.dropFirst())
        switch name {
        case "simulate": return SimulateCommand.run(rest)
        case "validate": return ValidateCommand.run(rest)
        case "generate": return GenerateCommand.run(rest)
        case "trace": return TraceCommand.run(rest)
        default:
            FileHandle.standardError.write(
                Data("qcow2sim: error: unknown command '\(name)' (expected one of: simulate, validate, generate, trace)\n".utf8))
            return 64
        }
    }

    static let usage = """
        usage: qcow2sim <command> [options]

        commands:
          simulate TRACE    replay a trace through the simulated qcow2 image and its caches
          validate TRACE    replay the same trace through real QEMU and compare event by event
          generate          write a synthetic workload in the native trace format
          trace info TRACE  summarize a trace; trace convert TRACE -o OUT converts it

        Run 'qcow2sim <command> --help' for a command's options.

        """
}

import Foundation
import Qcow2Sim
import TraceKit

/// How `sweep`, `mrc` and `advise` get their results (issue 16, item 4): by running every unit,
/// by running one shard's units and writing them to a shard file (`--shard K/N`), or from the
/// shard files `qcow2sim merge` read (every unit's results, in unit order).
enum RunMode {
    case whole
    case shard(ShardSpec)
    case merge([ShardUnit])
}

/// The parts of `--shard` the commands share.
enum ShardCLI {
    /// The option, for the commands' option sets.
    static let option = "--shard"

    /// The help lines every sharding command shows.
    static let help = """
          --shard K/N           run shard K of N (K from 0 to N-1, as Slurm numbers array tasks:
                                --shard $SLURM_ARRAY_TASK_ID/N) and write a shard file (JSON) for
                                'qcow2sim merge' instead of the output; see 'qcow2sim merge --help'
        """

    /// Options that do not change a run's results: left out of a shard's fingerprint.
    static let unfingerprinted: Set<String> = ["--shard", "--output", "--format", "--jobs", "--progress", "--quiet"]

    /// The mode `--shard` asks for (`.whole` without it).
    static func mode(_ a: Arguments, traces: [String]) throws -> RunMode {
        guard let text = a.value(option) else { return .whole }
        let spec: ShardSpec
        do {
            spec = try ShardSpec.parse(text)
        } catch let e as SimulationError {
            throw UsageError(e.description)
        }
        if traces.contains("-") {
            throw UsageError("--shard needs trace files (every shard reads them), not '-' (standard input)")
        }
        return .shard(spec)
    }

    /// `args` without the options named in `names` (and their values), as given otherwise.
    static func removing(_ names: Set<String>, from args: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            if arg == "--" {
                out += args[i...]
                break
            }
            let name = arg.hasPrefix("--") ? String(arg.prefix(while: { $0 != "=" })) : arg
            if names.contains(name) {
                // `--name value` or `--name=value`.
                i += name == arg ? 2 : 1
                continue
            }
            out.append(arg)
            i += 1
        }
        return out
    }

    /// Writes this shard's file: the fingerprint of the run (`a`'s canonical options, the traces'
    /// stamps taken before it ran), K/N, the unit count and the results.
    static func write(
        command: String, args: [String], a: Arguments, stamps: [TraceStamp], spec: ShardSpec, units: Int, results: [ShardUnit]
    ) throws {
        let file = ShardFile(
            command: command, arguments: removing([option], from: args), options: a.canonical(excluding: unfingerprinted),
            traces: stamps, spec: spec, units: units, results: results)
        try writeOutput(try file.json(), to: a.value("--output") ?? "-")
    }

    /// The merged run's unit count must be the command's: the same command line gives the same
    /// units (a different qcow2sim version might not).
    static func check(_ units: [ShardUnit], total: Int) throws {
        guard units.count == total else {
            throw ShardError("the shards hold \(units.count) units, but their command line gives \(total) (made by another version of qcow2sim?)")
        }
    }
}

/// `qcow2sim merge SHARD_OUTPUT...`: the output of a run split with `--shard K/N`, byte for byte
/// the one the run gives without `--shard`.
enum MergeCommand {
    static let help = """
        usage: qcow2sim merge SHARD_OUTPUT... [--format FMT] [--output FILE] [--jobs N]

        Assembles the shard files that `sweep`, `mrc` or `advise` with --shard K/N wrote (one per
        K, 0 to N-1, in any order) into the output the same command gives without --shard, byte
        for byte. The shards must be every shard of one run: the same command, the same options
        (in any order; --output, --format, --jobs, --progress and --quiet aside), the same traces
        at the same size and modification time, the same N, each K once. Otherwise merge names the
        files and exits 65.

          --format FMT          the output format (default: the one the shards' command line gives)
          --output FILE         write the output to FILE instead of standard output
          --jobs N              advise: the runs of the recommended settings on N threads

        What a shard runs: sweep, a (trace, point) pair per unit; mrc, a point per unit (every
        shard records the trace once and makes the one stack pass, and replays only its own
        points); advise, a (configuration, trace, candidate L2 size) per unit: the curve points.
        advise's merge then sums the curves, chooses, and runs the recommended settings once per
        trace (so advise's merge reads the traces, and refuses them if they changed). With
        --per-volume the units are the volumes (in sorted order), each run whole in its shard;
        every shard reads the trace once more to list the volumes.
        The HTML page's command line is the shards' with --shard and --output removed and merge's
        --format and --output added at the end.

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "merge")
        }
        do {
            let a = try Arguments(args, options: ["--output", "--format", "--jobs"])
            guard !a.positionals.isEmpty else { throw UsageError("missing SHARD_OUTPUT argument (the files --shard K/N wrote)") }
            let files = try a.positionals.map { ($0, try ShardFile.read($0)) }
            let (first, units) = try ShardFile.assemble(files)
            var rebuilt = ShardCLI.removing(["--output", ShardCLI.option], from: first.arguments)
            if let f = a.value("--format") { rebuilt = ShardCLI.removing(["--format"], from: rebuilt) + ["--format", f] }
            if let j = a.value("--jobs") { rebuilt = ShardCLI.removing(["--jobs"], from: rebuilt) + ["--jobs", j] }
            if let o = a.value("--output") { rebuilt += ["--output", o] }
            switch first.command {
            case "sweep": return try SweepCommand.main(rebuilt, mode: .merge(units))
            case "mrc": return try MrcCommand.main(rebuilt, mode: .merge(units))
            case "advise": return try AdviseCommand.main(rebuilt, mode: .merge(units), stamps: first.traces)
            default: throw ShardError("\(files[0].0): a shard of '\(first.command)', which merge does not know")
            }
        } catch {
            return reportFailure(error, command: "merge")
        }
    }
}

import Foundation
import Qcow2Sim
import TraceKit

/// `qcow2sim mrc TRACE --sizes VALUES`: the L2 (and refcount) miss-ratio curve, one point per
/// L2 cache size (issue 10, item 2). Each size is run as `simulate` runs it; the one-pass
/// `--sizes all` comes with the operation stream.
enum MrcCommand {
    static let help = """
        usage: qcow2sim mrc TRACE [run options] --sizes VALUES [--entry-size SIZE]
                            [--policy NAME[,NAME...]] [--jobs N] [--format csv|json|text|html]
                            [--output FILE] [--progress|--quiet] [trace mapping options]

        The miss-ratio curve of TRACE: a sweep of the top image's l2-cache-size over VALUES,
        every size run exactly as `simulate --drive l2-cache-size=SIZE` runs it. The rows are
        sweep's, with l2-cache-size as the varied key (the refcount cache's rows too).

          --sizes VALUES        the L2 cache sizes (VALUES below). `--sizes all`, every size from
                                QEMU's minimum to full coverage in one pass, is not available yet
          --entry-size SIZE     l2-cache-entry-size for every point (default QEMU's: 4K slices
                                until the cache covers the disk, then whole tables)

        \(SweepCommand.valuesHelp)

        run options: as 'qcow2sim simulate --help' lists them; --policy, --jobs, --format,
        --output, --progress and --quiet as 'qcow2sim sweep --help' describes them.

        \(SweepCommand.columnsHelp)

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "mrc")
        }
        do {
            let a = try SweepCommand.arguments(args, extra: ["--sizes", "--entry-size"])
            let trace = try a.positionals(1, what: "TRACE argument")
            guard let sizes = a.value("--sizes") else {
                throw UsageError("missing --sizes VALUES (e.g. --sizes 256K..32M*2; --sizes all is not available yet)")
            }
            if sizes == "all" {
                throw UsageError(
                    "--sizes all (every cache size in one pass) is not available yet; give the sizes as VALUES, e.g. --sizes 256K..32M*2"
                )
            }
            var base = try SimulateCommand.runConfig(a)
            if let text = a.value("--entry-size") {
                guard case .success(let size) = QemuSize.parse(Substring(text)) else {
                    throw UsageError(
                        "invalid value '\(text)' for --entry-size (expected a size in bytes, optionally with a K, M, G or T suffix)"
                    )
                }
                if let e = SweepGrid.apply(SweepValue(text: String(size), number: size), for: .drive("l2-cache-entry-size"), to: &base) {
                    throw e
                }
            }
            let key = SweepKey.drive("l2-cache-size")
            let axis = SweepAxis(key: key, values: try SweepValues.parse(sizes, key: key, argument: "--sizes"))
            return try SweepCommand.execute(a, command: "mrc", traces: trace, base: base, axes: [axis])
        } catch {
            return reportFailure(error, command: "mrc")
        }
    }
}

import Foundation
import Qcow2Sim
import TraceKit
import Validation

/// `qcow2sim calibrate`: a cost model for `--cost`, measured on the user's storage through qemu-io
/// (`--dir DIR`) or fitted to a table of measured or published points (`--fit TABLE.csv`)
/// (issue 12, item 3).
enum CalibrateCommand {
    static let help = """
        usage: qcow2sim calibrate --dir DIR [--time-limit SECONDS] -o COST.json
               qcow2sim calibrate --fit TABLE.csv [--requests N] [--fix-c1 US | --fix-c1-from COST.json]
                                  [--jobs N] -o COST.json

        --dir DIR             measure on the storage under DIR: a scratch 20 GiB image with 64 KiB
                              clusters and preallocated metadata (removed after) is read through
                              qemu-io with cache=none (O_DIRECT) at queue depth 1 in six
                              configurations; each is simulated exactly, and request_us,
                              data_read_us_per_kib, metadata_load_us (c0) and
                              metadata_load_us_per_kib (c1) are fitted by least squares. Write,
                              write-back, COW and flush costs are not measured (0).
          --time-limit SECONDS  the measurements' time budget (default 60); a progress line per
                              configuration goes to standard error
        --fit TABLE.csv       fit request_us, c0 and c1 to a table with the columns
                              disk_size,cluster_size,entry_size,cache_size,iops (and optionally
                              label; # lines are comments): each point is simulated with uniform
                              random 4 KiB reads on a fully populated image, cache=none,
                              counting the loads of the second half (steady state)
          --requests N        reads simulated per point (default 50000)
          --fix-c1 US         hold c1 (µs per KiB loaded) at US and fit request_us and c0
          --fix-c1-from FILE  hold c1 at that cost file's metadata_load_us_per_kib
        -o COST.json          the cost file to write (for simulate/sweep/compare/advise --cost)

        Prints each point, measured (or published) against predicted.

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "calibrate")
        }
        do {
            let a = try Arguments(
                args,
                options: ["--dir", "--time-limit", "--fit", "--requests", "--fix-c1", "--fix-c1-from", "--jobs", "--output"],
                aliases: ["-o": "--output"])
            _ = try a.positionals(0, what: "")
            guard let output = a.value("--output") else { throw UsageError("missing -o COST.json (the cost file to write)") }
            let fit: CostFitResult
            var extra = ""
            switch (a.value("--dir"), a.value("--fit")) {
            case (nil, nil): throw UsageError("give --dir DIR (measure with qemu-io) or --fit TABLE.csv (fit a table)")
            case (.some, .some): throw UsageError("--dir and --fit cannot be combined")
            case (.some(let dir), nil):
                for option in ["--requests", "--fix-c1", "--fix-c1-from"] where a.value(option) != nil {
                    throw UsageError("\(option) is for --fit, not --dir")
                }
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw UsageError("--dir \(dir): not a directory")
                }
                var limit = 60.0
                if let text = a.value("--time-limit") {
                    limit = try TraceArgs.nonNegative(text, "--time-limit", what: "number of seconds")
                    guard limit >= 5 else {
                        throw UsageError("invalid value '\(text)' for --time-limit (expected at least 5 seconds)")
                    }
                }
                let result = try Calibrator(runner: SystemProcessRunner(), directory: dir, timeLimit: limit).run { line in
                    Console.printErr("calibrate: " + line)
                }
                fit = result.fit
                extra = String(
                    format: "measured in %.1f s, %d rounds of %d reads per configuration\n", result.seconds, result.rounds,
                    result.reads)
                extra +=
                    "plain IOPS (stalls included): " + result.plainIops.map { String(format: "%.0f", $0) }.joined(separator: ", ")
                    + "\n"
            case (nil, .some(let path)):
                if a.value("--time-limit") != nil { throw UsageError("--time-limit is for --dir, not --fit") }
                let table = try CostTable.load(path: path)
                var requests = 50_000
                if let text = a.value("--requests") {
                    guard let n = Int(text), n >= 100, n <= 10_000_000 else {
                        throw UsageError("invalid value '\(text)' for --requests (expected 100 to 10000000)")
                    }
                    requests = n
                }
                if a.value("--fix-c1") != nil && a.value("--fix-c1-from") != nil {
                    throw UsageError("--fix-c1 and --fix-c1-from cannot be combined")
                }
                var c1: Double?
                if let text = a.value("--fix-c1") {
                    c1 = try TraceArgs.nonNegative(text, "--fix-c1", what: "number of microseconds")
                }
                if let other = a.value("--fix-c1-from") { c1 = try CostModel.load(path: other).metadataLoadUsPerKiB }
                let observations = try table.observations(requests: requests, jobs: try SweepCommand.jobs(a))
                let source =
                    "qcow2sim calibrate --fit \((path as NSString).lastPathComponent)"
                    + (c1.map { String(format: " (c1 fixed at %.6g)", $0) } ?? "")
                fit = CostFitter.fit(observations, fixC1: c1, source: source)
            }
            try writeOutput(Data(try fit.model.json().utf8), to: output)
            try Console.print(extra + report(fit))
            return 0
        } catch {
            return reportFailure(error, command: "calibrate")
        }
    }

    /// The fitted parameters and every point, published against predicted.
    static func report(_ fit: CostFitResult) -> String {
        let m = fit.model
        var s = String(
            format:
                "request_us %.4g, data_read_us_per_kib %.4g, metadata_load_us (c0) %.4g, metadata_load_us_per_kib (c1) %.4g\n",
            m.requestUs, m.dataReadUsPerKiB, m.metadataLoadUs, m.metadataLoadUsPerKiB)
        if !fit.undetermined.isEmpty {
            s += "not determined by these points (set to 0): \(fit.undetermined.joined(separator: ", "))\n"
        }
        if !fit.fixed.isEmpty { s += "held fixed: \(fit.fixed.joined(separator: ", "))\n" }
        let width = max(5, fit.points.map(\.label.count).max() ?? 5)
        s += "point".padding(toLength: width, withPad: " ", startingAt: 0) + "      iops  predicted   error\n"
        for p in fit.points {
            s +=
                p.label.padding(toLength: width, withPad: " ", startingAt: 0)
                + String(format: " %9.0f  %9.0f  %+5.1f%%\n", p.iops, p.predictedIops, p.errorPct)
        }
        s += String(format: "largest error %.1f%%\n", fit.maxErrorPct)
        return s
    }
}

import Foundation
import TraceKit

/// `qcow2sim generate`: writes a synthetic workload (``WorkloadGenerator``) in the native trace
/// format.
enum GenerateCommand {
    static let help = """
        usage: qcow2sim generate --pattern uniform|sequential|zipf|hotset --count N --size DISKSIZE
                                 [--request-size 4K] [--read-ratio 1.0] [--seed S]
                                 [--region START:LEN] [--alignment BYTES] [--theta 0.99]
                                 [--hot-fraction 0.1 --hot-access 0.9] [--interval SECONDS] [--binary]
                                 [--volumes N] -o OUT

        Writes COUNT requests in the native trace format (`-o -` = standard output). The same
        seed gives the same trace on every machine (xoshiro256** seeded by SplitMix64).

          --pattern       uniform: every aligned slot equally likely; sequential: slot 0, 1, 2, …
                          zipf: slot k-1 with probability ∝ 1/k^theta (hottest at region start);
                          hotset: the first hot-fraction of the region gets hot-access of requests
          --size          virtual disk size (bytes; K, M, G, T suffixes are binary)
          --region        START:LEN byte range the requests fall in (default: the whole disk)
          --alignment     offset granularity (default: the request size)
          --read-ratio    fraction of reads, 0 to 1 (the rest are writes; default 1.0)
          --interval      seconds between requests; adds a time column
          --binary        write the binary native format (fixed 32-byte records) instead of CSV
          --volumes N     a synthetic fleet: N volumes (numbered 0 to N-1), COUNT requests each
                          on a disk of DISKSIZE, volume k's stream seeded from S and k, written
                          one volume after another (grouped) with a volume column (CSV
                          `,op,offset,length,volume`; binary: the record's volume field)

        """

    static func run(_ args: [String]) -> Int32 {
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "generate")
        }
        do {
            let a = try Arguments(
                args,
                options: [
                    "--pattern", "--count", "--size", "--request-size", "--read-ratio", "--seed", "--region",
                    "--theta", "--hot-fraction", "--hot-access", "--interval", "--alignment", "--output", "--volumes",
                ],
                flags: ["--binary"], aliases: ["-o": "--output"])
            _ = try a.positionals(0, what: "")
            let spec = try makeSpec(a)
            guard let out = a.value("--output") else { throw UsageError("missing -o OUT (use '-o -' for standard output)") }
            if let text = a.value("--volumes") {
                guard let n = Int(text), n >= 1, n < Int(UInt32.max) else {
                    throw UsageError("invalid value '\(text)' for --volumes (expected 1 to 4294967294)")
                }
                if spec.interval != nil {
                    throw UsageError("--interval cannot be used with --volumes (volumes are written one after another, so times would go back)")
                }
                try fleet(spec, volumes: n, binary: a.has("--binary"), to: out)
                return 0
            }
            let generator = try WorkloadGenerator(spec)
            if a.has("--binary") {
                _ = try NativeBinaryTraceWriter.write(generator, count: UInt64(spec.count), to: out)
            } else {
                _ = try NativeTraceWriter.write(generator, withTime: spec.interval != nil, to: out)
            }
            return 0
        } catch {
            return reportFailure(error, command: "generate")
        }
    }

    /// Writes `volumes` streams of `spec`, volume k's seeded with SplitMix64(seed + k), grouped.
    static func fleet(_ spec: WorkloadSpec, volumes: Int, binary: Bool, to path: String) throws {
        let out = try OutputFile(path: path)
        do {
            let total = UInt64(spec.count) * UInt64(volumes)
            var bin = NativeBinaryTraceWriter(count: total)
            var csv = NativeTraceWriter(withTime: false, withVolume: true)
            for k in 0..<volumes {
                var s = spec
                s.seed = Xoshiro256StarStar.splitMix64Mix(spec.seed &+ UInt64(k))
                for r in try WorkloadGenerator(s) {
                    if binary {
                        bin.append(r, volume: UInt32(k))
                        if bin.bytes.count >= 1 << 20 { try out.write(bin.take()) }
                    } else {
                        csv.append(r, volume: UInt32(k))
                        if csv.bytes.count >= 1 << 20 { try out.write(csv.take()) }
                    }
                }
            }
            if binary {
                try out.write(bin.take())
                try bin.finish(out, path: path, announced: total)
            } else {
                try out.write(csv.take())
            }
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
    }

    static func makeSpec(_ a: Arguments) throws -> WorkloadSpec {
        let patternName = try a.choice("--pattern", ["uniform", "sequential", "zipf", "hotset"], default: "uniform")
        guard let countText = a.value("--count") else { throw UsageError("missing --count N") }
        guard let count = Int(countText), count >= 0 else {
            throw UsageError("invalid value '\(countText)' for --count (expected a non-negative integer)")
        }
        guard let sizeText = a.value("--size") else { throw UsageError("missing --size DISKSIZE") }
        let diskSize = try TraceArgs.bytes(sizeText, "--size")
        let requestSize = try a.value("--request-size").map { try TraceArgs.bytes($0, "--request-size") } ?? 4096
        let readRatio = try a.value("--read-ratio").map { try TraceArgs.double($0, "--read-ratio") } ?? 1
        let seed =
            try a.value("--seed").map { s -> UInt64 in
                guard let v = UInt64(s) else {
                    throw UsageError("invalid value '\(s)' for --seed (expected an unsigned 64-bit integer)")
                }
                return v
            } ?? 1
        var regionStart: UInt64 = 0
        var regionLength: UInt64?
        if let region = a.value("--region") {
            let parts = region.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw UsageError("invalid value '\(region)' for --region (expected START:LEN)") }
            regionStart = try TraceArgs.bytes(String(parts[0]), "--region start")
            regionLength = try TraceArgs.bytes(String(parts[1]), "--region length")
        }
        let pattern: WorkloadSpec.Pattern
        switch patternName {
        case "sequential": pattern = .sequential
        case "zipf": pattern = .zipf(theta: try a.value("--theta").map { try TraceArgs.double($0, "--theta") } ?? 0.99)
        case "hotset":
            pattern = .hotset(
                hotFraction: try a.value("--hot-fraction").map { try TraceArgs.double($0, "--hot-fraction") } ?? 0.1,
                hotAccess: try a.value("--hot-access").map { try TraceArgs.double($0, "--hot-access") } ?? 0.9)
        default: pattern = .uniform
        }
        return WorkloadSpec(
            pattern: pattern, count: count, diskSize: diskSize, requestSize: requestSize, readRatio: readRatio,
            seed: seed, regionStart: regionStart, regionLength: regionLength,
            alignment: try a.value("--alignment").map { try TraceArgs.bytes($0, "--alignment") },
            interval: try a.value("--interval").map { try TraceArgs.double($0, "--interval") })
    }
}

import Foundation
import Qcow2Sim
import Testing

/// `--shard K/N` and `qcow2sim merge` (issue 16, item 4) through the built binary: every shard
/// of a run merged gives the bytes of the run without `--shard`, in every output format, for 1, 3
/// and 8 shards; merge refuses missing, duplicate and mismatched shards with these messages.
@Suite struct ShardCLITests {
    static let seedMixed = SweepTests.seedMixed
    static let guest = SweepTests.guest

    /// Runs `args` + `--shard K/n --output DIR/NAME-K.json` for every K, in reverse order (merge
    /// must not depend on the order shards finish in); returns the files.
    static func shards(_ args: [String], _ n: Int, in dir: String, name: String) throws -> [String] {
        var files: [String] = []
        for k in (0..<n).reversed() {
            let file = "\(dir)/\(name)-\(k).json"
            let (status, out, err) = try CLIRun.run(args + ["--shard", "\(k)/\(n)", "--output", file])
            #expect(status == 0 && out == "" && err == "", "shard \(k)/\(n): \(err)")
            files.append(file)
        }
        return files
    }

    /// The whole run's standard output.
    static func whole(_ args: [String]) throws -> String {
        let (status, out, err) = try CLIRun.run(args)
        #expect(status == 0, "\(err)")
        return out
    }

    /// `merge files` + `extra`: standard output.
    static func merge(_ files: [String], _ extra: [String] = []) throws -> String {
        let (status, out, err) = try CLIRun.run(["merge"] + files + extra)
        #expect(status == 0 && err == "", "\(err)")
        return out
    }

    static let sweepArgs = [
        "sweep", seedMixed, guest, "--size", "8G", "--vary", "cluster_size=64K,128K", "--vary", "l2-cache-size=64K..1M*2",
    ]

    /// The shard counts every command is checked with.
    static let counts = [1, 3, 8]

    /// 2 traces × 10 points = 20 units: 1, 3 (7, 7, 6 units) and 8 shards (3 or 2 each, shard 7's
    /// from both traces), merged as csv and json (and text and html for 3 shards), equal to the
    /// whole run byte for byte.
    @Test func sweepShardsMergeToTheWholeRun() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let csv = try Self.whole(Self.sweepArgs)
        let json = try Self.whole(Self.sweepArgs + ["--format", "json"])
        #expect(csv.split(separator: "\n").count == 1 + 2 * 10 * 2)
        for n in Self.counts {
            let files = try Self.shards(Self.sweepArgs, n, in: dir, name: "sweep\(n)")
            #expect(try Self.merge(files) == csv, "\(n) shards")
            #expect(try Self.merge(files, ["--format", "json"]) == json, "\(n) shards")
            if n == 3 {
                for format in ["text", "html"] {
                    #expect(try Self.merge(files, ["--format", format]) == Self.whole(Self.sweepArgs + ["--format", format]), "\(format)")
                }
            }
            // Each shard holds its round-robin units: K, K+N, K+2N, … of 20.
            let shard = try ShardFile.read(files[files.count - 1])
            #expect(shard.shard == 0 && shard.shards == n && shard.units == 20)
            #expect(shard.results.map(\.index) == Array(stride(from: 0, to: 20, by: n)))
            #expect(shard.options == ["--size=8G", "--vary=cluster_size=64K,128K", "--vary=l2-cache-size=64K..1M*2"])
        }
    }

    /// The shards' `--format` is merge's default, and merge's `--output` writes the file.
    @Test func mergeTakesTheShardsFormatAndWritesItsOutput() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = Self.sweepArgs + ["--format", "json"]
        let files = try Self.shards(args, 2, in: dir, name: "j")
        let (status, out, err) = try CLIRun.run(["merge"] + files + ["--output", dir + "/merged.json"])
        #expect(status == 0 && out == "" && err == "", "\(err)")
        #expect(try String(contentsOfFile: dir + "/merged.json", encoding: .utf8) == Self.whole(args))
    }

    /// mrc with qemu and lru over 9 sizes (28 rows from the stack, 8 replayed): 1, 3 and 8 shards
    /// give the whole curve's rows, its method column included.
    @Test func mrcShardsMergeToTheWholeCurve() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = [
            "mrc", SweepTests.traces.appendingPathComponent("seed-uniform-20G-20000.csv").path, "--size", "20G", "--populate", "full",
            "--sizes", "256K..4M:9", "--policy", "qemu,lru",
        ]
        let csv = try Self.whole(args)
        let json = try Self.whole(args + ["--format", "json"])
        #expect(csv.components(separatedBy: ",stack\n").count == 1 + 28 && csv.components(separatedBy: ",replay\n").count == 1 + 8)
        for n in Self.counts {
            let files = try Self.shards(args, n, in: dir, name: "mrc\(n)")
            #expect(try Self.merge(files) == csv, "\(n) shards")
            #expect(try Self.merge(files, ["--format", "json"]) == json, "\(n) shards")
            if n == 3 {
                #expect(try Self.merge(files, ["--format", "text"]) == Self.whole(args + ["--format", "text"]))
            }
        }
    }

    /// advise: the curve's points sharded, the choice and the recommended run in merge; text (and
    /// json) equal the whole run's; with two cluster sizes for 3 shards (units of two plans).
    @Test func adviseShardsMergeToTheWholeAdvice() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["advise", Self.seedMixed, "--size", "8G", "--memory-budget", "1M"]
        let text = try Self.whole(args)
        for n in Self.counts {
            let files = try Self.shards(args, n, in: dir, name: "advise\(n)")
            #expect(try Self.merge(files) == text, "\(n) shards")
        }
        let vary = args + ["--vary", "cluster_size=64K,128K"]
        let files = try Self.shards(vary, 3, in: dir, name: "vary")
        #expect(try Self.merge(files, ["--format", "json"]) == Self.whole(vary + ["--format", "json"]))
    }

    /// `--per-volume` runs: the volumes (sorted) are the units. A synthetic fleet of 7 volumes:
    /// sweep over 1, 3 and 8 shards (shard 7 has no volume), mrc `--sizes all` (each volume's own
    /// sizes) and advise's fleet summary over 3, equal to the unsharded runs in csv/json and the
    /// summary's text, json and html.
    @Test func perVolumeShardsMergeToTheWholeFleet() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fleet = dir + "/fleet.csv"
        let (g, _, gErr) = try CLIRun.run([
            "generate", "--pattern", "zipf", "--count", "2000", "--size", "4G", "--volumes", "7", "--seed", "3", "-o", fleet,
        ])
        try #require(g == 0, "\(gErr)")
        let sweep = ["sweep", fleet, "--per-volume", "--vary", "l2-cache-size=64K,256K,1M"]
        let csv = try Self.whole(sweep)
        #expect(csv.split(separator: "\n").count == 1 + 7 * 3 * 2)
        for n in Self.counts {
            let files = try Self.shards(sweep, n, in: dir, name: "pv\(n)")
            #expect(try Self.merge(files) == csv, "\(n) shards")
            let file = try ShardFile.read(files[files.count - 1])
            #expect(file.units == 7 && file.results.map(\.index) == Array(stride(from: 0, to: 7, by: n)))
        }
        let mrc = ["mrc", fleet, "--per-volume", "--sizes", "all", "--policy", "qemu,lru"]
        let mrcFiles = try Self.shards(mrc, 3, in: dir, name: "pvm")
        #expect(try Self.merge(mrcFiles) == Self.whole(mrc))
        #expect(try Self.merge(mrcFiles, ["--format", "json"]) == Self.whole(mrc + ["--format", "json"]))
        let advise = ["advise", fleet, "--per-volume", "--target-hit-rate", "0.9"]
        let adviseFiles = try Self.shards(advise, 3, in: dir, name: "pva")
        for format in ["text", "json", "html"] {
            #expect(try Self.merge(adviseFiles, ["--format", format]) == Self.whole(advise + ["--format", format]), "\(format)")
        }
    }

    /// The refusals: exact messages, exit 65 (66 for a file that is not there).
    @Test func mergeRefusesShardsThatAreNotOneRun() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["sweep", Self.seedMixed, "--size", "8G", "--vary", "l2-cache-size=64K,128K,256K"]
        let f = try Self.shards(base, 3, in: dir, name: "a").reversed().map { $0 }
        let other = try Self.shards(base + ["-o", "cluster_size=128K"], 3, in: dir, name: "b")[2]
        let four = try Self.shards(base, 4, in: dir, name: "c")[2]
        let mrc = try Self.shards(["mrc", Self.seedMixed, "--size", "8G", "--sizes", "64K,128K"], 1, in: dir, name: "m")[0]
        let notShard = dir + "/table.csv"
        try "trace,policy\n".write(toFile: notShard, atomically: true, encoding: .utf8)
        let cases: [([String], Int32, String)] = [
            (
                [f[0], f[2]], 65,
                "missing shard 1/3: merge needs every K from 0 to 2 of --shard K/3 (given: \(f[0]) (0/3), \(f[2]) (2/3))"
            ),
            ([f[0]], 65, "missing 2 shards 1/3, 2/3: merge needs every K from 0 to 2 of --shard K/3 (given: \(f[0]) (0/3))"),
            ([f[0], f[1], f[2], f[1]], 65, "\(f[1]) and \(f[1]) are both shard 1/3"),
            (
                [f[0], f[1], other], 65,
                "\(other) and \(f[0]) are shards of different runs: the options differ (only \(other) has --create-options=cluster_size=128K)"
            ),
            (
                [f[0], f[1], four], 65,
                "\(four) is shard 1/4 but \(f[0]) is shard 0/3: every shard of a run has the same N"
            ),
            ([f[0], mrc], 65, "\(mrc) is a shard of mrc, \(f[0]) of sweep: they are not one run"),
            ([notShard], 65, "\(notShard): not a qcow2sim shard file (expected the JSON that sweep, mrc or advise --shard K/N writes)"),
            ([dir + "/none.json"], 66, "\(dir)/none.json: No such file or directory"),
            ([], 64, "missing SHARD_OUTPUT argument (the files --shard K/N wrote)"),
        ]
        for (files, code, message) in cases {
            let (status, out, err) = try CLIRun.run(["merge"] + files)
            #expect(status == code && out == "", "\(files)")
            #expect(err == "qcow2sim merge: error: \(message)\n")
        }
    }

    /// Shards run on different versions of a trace (another mtime) are refused, naming both.
    @Test func mergeRefusesShardsOfAChangedTrace() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = dir + "/t.csv"
        try FileManager.default.copyItem(atPath: Self.seedMixed, toPath: trace)
        let args = ["sweep", trace, "--size", "8G", "--vary", "l2-cache-size=64K,128K"]
        let one = try Self.shards(args, 2, in: dir, name: "s")
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000_000)], ofItemAtPath: trace)
        let (status, _, err) = try CLIRun.run(args + ["--shard", "0/2", "--output", dir + "/late.json"])
        #expect(status == 0)
        let size = try FileManager.default.attributesOfItem(atPath: trace)[.size] as? Int ?? 0
        let stamp = try #require(ShardFile.read(one[1]).traces.first)
        let (s2, out2, err2) = try CLIRun.run(["merge", dir + "/late.json", one[0]])
        #expect(s2 == 65 && out2 == "" && err == "")
        #expect(
            err2
                == "qcow2sim merge: error: \(one[0]) and \(dir)/late.json saw different versions of trace \(trace): \(dir)/late.json \(trace) (\(size) bytes, modified 2001-09-09T01:46:40.000Z), \(one[0]) \(stamp.text)\n"
        )
    }

    /// `--shard`'s usage errors.
    @Test(arguments: ["3/3", "1/0", "-1/2", "+1/2", "1", "a/b", "1/2/3"]) func badShardValues(value: String) throws {
        let (status, out, err) = try CLIRun.run(["sweep", Self.seedMixed, "--size", "8G", "--vary", "l2-cache-size=1M", "--shard", value])
        #expect(status == 64 && out == "")
        #expect(
            err
                == "qcow2sim sweep: error: invalid value '\(value)' for --shard (expected K/N with N from 1 to 1000000 and K from 0 to N-1, e.g. --shard $SLURM_ARRAY_TASK_ID/4)\n"
        )
    }

    /// Round-robin: every unit in exactly one shard, shard sizes differ by at most one.
    @Test func roundRobinCoversEveryUnitOnce() {
        for total in [0, 1, 7, 20, 101] {
            for n in [1, 2, 3, 8, 200] {
                let parts = (0..<n).map { ShardSpec(index: $0, count: n).units(of: total) }
                #expect(parts.flatMap { $0 }.sorted() == Array(0..<total))
                let sizes = parts.map(\.count)
                #expect((sizes.max() ?? 0) - (sizes.min() ?? 0) <= 1)
            }
        }
    }
}

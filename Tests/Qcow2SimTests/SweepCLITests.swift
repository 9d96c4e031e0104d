import Foundation
import Testing

/// `qcow2sim sweep` and `qcow2sim mrc` through the built binary (issue 10, items 1, 2 and 4):
/// rows equal to `simulate`'s, output independent of `--jobs`, the exact header, usage errors
/// and exit codes, progress on standard error.
@Suite struct SweepCLITests {
    static let seedMixed = SweepTests.seedMixed
    static let guest = SweepTests.guest

    /// CSV text as one dictionary per row (no quoted fields: the traces' paths have no comma).
    static func rows(_ csv: String) -> [[String: String]] {
        let lines = csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else { return [] }
        return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0)) }
    }

    /// `simulate` with `args`: its CSV rows (l2 then refcount, per image).
    static func simulate(_ trace: String, _ args: [String]) throws -> [[String: String]] {
        let (status, out, err) = try CLIRun.run(["simulate", trace, "--format", "csv"] + args)
        #expect(status == 0, "\(err)")
        return rows(out)
    }

    /// Every column `simulate --format csv` has (but memory_bytes, which sweep leaves out) is
    /// equal in the sweep row.
    static func expectSame(_ sweep: [String: String], _ simulate: [String: String], _ what: String) {
        for (name, value) in simulate where name != "memory_bytes" {
            #expect(sweep[name] == value, "\(what): \(name)")
        }
    }

    static let header48 =
        "trace,cluster_size,extended_l2,l2-cache-size,policy,image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,writebacks,flushes,bytes_read,bytes_written,memory_peak_bytes,memory_mean_bytes,miss_rate,dirty_evictions,empty_gets,cleaned,requests,misses_cold,misses_evicted,misses_cleaned,misses_discarded"

    /// Issue 10's grid: cluster size × extended_l2 × 12 cache sizes over the seed-mixed trace, in
    /// one command; the same bytes with one thread and with two; three points checked against
    /// `simulate` run by itself.
    @Test func fortyEightPointSweepIsTheSameWithAnyJobs() throws {
        let dir = try CLIRun.directory()
        var outputs: [String] = []
        for jobs in ["1", "2"] {
            let out = dir + "/jobs\(jobs).csv"
            let (status, stdout, err) = try CLIRun.run([
                "sweep", Self.seedMixed, "--size", "8G", "--vary", "cluster_size=64K,128K", "--vary", "extended_l2=off,on",
                "--vary", "l2-cache-size=64K..128M*2", "--jobs", jobs, "--output", out,
            ])
            #expect(status == 0 && stdout == "" && err == "", "\(err)")
            outputs.append(try String(contentsOfFile: out, encoding: .utf8))
        }
        #expect(outputs[0] == outputs[1])
        let lines = outputs[0].split(separator: "\n")
        #expect(lines.first.map(String.init) == Self.header48)
        // 48 points × 1 image × (l2, refcount).
        #expect(lines.count == 1 + 96)
        let rows = Self.rows(outputs[0])
        #expect(rows.allSatisfy { $0["trace"] == Self.seedMixed && $0["requests"] == "20000" })
        // Row 2k is point k's L2 cache: point 2 is 64K/off/256K, 17 is 64K/on/2M, 47 128K/on/128M.
        for (point, o, drive) in [
            (2, "cluster_size=64K,extended_l2=off", "l2-cache-size=256K"),
            (17, "cluster_size=64K,extended_l2=on", "l2-cache-size=2M"),
            (47, "cluster_size=128K,extended_l2=on", "l2-cache-size=128M"),
        ] {
            let theirs = try Self.simulate(Self.seedMixed, ["--size", "8G", "-o", o, "--drive", drive])
            #expect(theirs.count == 2)
            Self.expectSame(rows[2 * point], theirs[0], "point \(point) l2")
            Self.expectSame(rows[2 * point + 1], theirs[1], "point \(point) refcount")
        }
        // Below full coverage (1M for 64K clusters) QEMU uses 4 KiB slices, from it whole tables.
        #expect(rows[2 * 3]["entry_size"] == "4096" && rows[2 * 4]["entry_size"] == "65536")
        #expect(rows[2 * 3]["l2-cache-size"] == "524288" && rows[2 * 4]["l2-cache-size"] == "1048576")
    }

    /// A chain and two traces in one sweep, policy list as the last axis; every row equals
    /// `simulate`'s.
    @Test func chainSweepRowsEqualSimulate() throws {
        let run = ["--size", "8G", "--chain", "2", "--populate", "0:256M", "--populate-mode", "data"]
        let (status, out, err) = try CLIRun.run(
            ["sweep", Self.guest, Self.seedMixed] + run + [
                "--vary", "backing.l2-cache-size=64K,1M", "--policy", "qemu,lru", "--jobs", "2",
            ])
        #expect(status == 0, "\(err)")
        let rows = Self.rows(out)
        // 2 traces × 2 sizes × 2 policies × 2 images × 2 caches.
        #expect(rows.count == 32)
        var k = 0
        for trace in [Self.guest, Self.seedMixed] {
            for size in ["64K", "1M"] {
                for policy in ["qemu", "lru"] {
                    let theirs = try Self.simulate(trace, run + ["--drive", "backing.l2-cache-size=\(size)", "--policy", policy])
                    #expect(theirs.count == 4)
                    for t in theirs {
                        #expect(rows[k]["trace"] == trace && rows[k]["policy"] == policy)
                        Self.expectSame(rows[k], t, "\(trace) \(size) \(policy) row \(k)")
                        k += 1
                    }
                }
            }
        }
        // The backing file's L2 cache did work: the guest reads its populated first 256 MiB.
        #expect(rows[0]["image"] == "0" && rows[0]["cache"] == "l2" && rows[0]["lookups"] != "0")
    }

    @Test func mrcRowsEqualSimulate() throws {
        let (status, out, err) = try CLIRun.run([
            "mrc", Self.guest, "--size", "8G", "--sizes", "64K,1M", "--entry-size", "4K", "--format", "csv",
        ])
        #expect(status == 0, "\(err)")
        let lines = out.split(separator: "\n")
        #expect(
            lines.first
                == "trace,l2-cache-size,policy,image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,writebacks,flushes,bytes_read,bytes_written,memory_peak_bytes,memory_mean_bytes,miss_rate,dirty_evictions,empty_gets,cleaned,requests,misses_cold,misses_evicted,misses_cleaned,misses_discarded,method"
        )
        let rows = Self.rows(out)
        #expect(rows.count == 4)
        // The guest trace writes (dirty tables): every point is replayed.
        #expect(rows.allSatisfy { $0["method"] == "replay" })
        // --entry-size holds even where the cache covers the disk (1M of 8 GiB with 64K clusters).
        #expect(rows.map { $0["entry_size"] } == ["4096", "65536", "4096", "65536"])
        for (i, size) in ["64K", "1M"].enumerated() {
            let theirs = try Self.simulate(
                Self.guest, ["--size", "8G", "--drive", "l2-cache-size=\(size),l2-cache-entry-size=4K"])
            Self.expectSame(rows[2 * i], theirs[0], "\(size) l2")
            Self.expectSame(rows[2 * i + 1], theirs[1], "\(size) refcount")
        }
    }

    /// `mrc --sizes all` on the seed's uniform reads over a populated 20 GiB image: 2…639 slices
    /// and full coverage, the stack for all but the template and full coverage, rows equal to
    /// `simulate` at the minimum, a middle size and full coverage; JSON and text say the method too.
    @Test func mrcAllSizes() throws {
        let trace = SweepTests.traces.appendingPathComponent("seed-uniform-20G-20000.csv").path
        let args = ["mrc", trace, "--size", "20G", "--populate", "full", "--sizes", "all"]
        let (status, out, err) = try CLIRun.run(args)
        #expect(status == 0, "\(err)")
        let rows = Self.rows(out)
        #expect(rows.count == 639 * 2)
        let l2 = rows.filter { $0["cache"] == "l2" }
        #expect(l2.filter { $0["method"] == "stack" }.count == 637)
        #expect(l2.first?["l2-cache-size"] == "8192" && l2.first?["method"] == "replay")
        #expect(l2.last?["l2-cache-size"] == "2621440" && l2.last?["entry_size"] == "65536" && l2.last?["method"] == "replay")
        for k in [0, 300, 638] {
            let size = l2[k]["l2-cache-size"] ?? ""
            let theirs = try Self.simulate(trace, ["--size", "20G", "--populate", "full", "--drive", "l2-cache-size=\(size)"])
            Self.expectSame(rows[2 * k], theirs[0], "\(size) l2")
            Self.expectSame(rows[2 * k + 1], theirs[1], "\(size) refcount")
        }
        let (js, json, _) = try CLIRun.run(args + ["--format", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let first = try #require((object?["rows"] as? [[String: Any]])?.dropFirst(2).first)
        #expect(js == 0 && first["method"] as? String == "stack")
        let (ts, text, _) = try CLIRun.run(args + ["--format", "text"])
        #expect(ts == 0 && text.split(separator: "\n").first?.hasSuffix("memory mean  method") == true)
    }

    @Test func jsonHasTheRowsAndFixedOptions() throws {
        let (status, out, err) = try CLIRun.run([
            "sweep", Self.guest, "--size", "8G", "--drive", "cache-clean-interval=0,l2-cache-size=8M", "--vary",
            "l2-cache-size=64K,128K", "--format", "json",
        ])
        #expect(status == 0, "\(err)")
        let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let json = try #require(object)
        #expect(json["schema_version"] as? Int == 1)
        #expect(json["command"] as? String == "sweep")
        let fixed = try #require(json["fixed"] as? [String: Any])
        // The varied key is not a fixed option.
        #expect(fixed["drive_options"] as? String == "cache-clean-interval=0")
        #expect(fixed["virtual_size"] as? Int == 8 << 30)
        let rows = try #require(json["rows"] as? [[String: Any]])
        #expect(rows.count == 4)
        #expect(rows.map { $0["l2-cache-size"] as? Int } == [65536, 65536, 131072, 131072])
        #expect(rows.map { $0["cache"] as? String } == ["l2", "refcount", "l2", "refcount"])
        let (_, csv, _) = try CLIRun.run([
            "sweep", Self.guest, "--size", "8G", "--drive", "cache-clean-interval=0,l2-cache-size=8M", "--vary",
            "l2-cache-size=64K,128K",
        ])
        // The same numbers as the CSV rows.
        for (row, csvRow) in zip(rows, Self.rows(csv)) {
            for name in ["lookups", "hits", "misses", "evictions", "writebacks", "flushes", "bytes_read", "bytes_written"] {
                #expect((row[name] as? Int).map(String.init) == csvRow[name], "\(name)")
            }
        }
    }

    static let errors: [([String], Int32, String)] = [
        (
            ["sweep", "{T}", "--size", "8G"], 64,
            "qcow2sim sweep: error: nothing to vary: give --vary KEY=VALUES (or --policy with several names)\n"
        ),
        (["sweep", "--size", "8G", "--vary", "l2-cache-size=1M"], 64, "qcow2sim sweep: error: missing TRACE argument\n"),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2_cache_size=1M"], 64,
            "qcow2sim sweep: error: unknown key 'l2_cache_size' in --vary l2_cache_size=1M (expected one of: l2-cache-size, l2-cache-entry-size, refcount-cache-size, cache-size, cache-clean-interval, cluster_size, extended_l2, refcount_bits, cache-mode, policy; the --drive keys also with backing. prefixes; what-if.KEY for a what-if, KEY one of: l2-cache-size, refcount-cache-size, cache-scope, chain-l2-cache-size, chain-refcount-cache-size)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=32M..256K*2"], 64,
            "qcow2sim sweep: error: invalid value '32M..256K*2' for --vary l2-cache-size (empty range: 33554432 is above 262144)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=1M", "--vary", "l2-cache-size=2M"], 64,
            "qcow2sim sweep: error: --vary l2-cache-size is given twice (each key may be varied once)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "policy=qemu,lru", "--policy", "fifo"], 64,
            "qcow2sim sweep: error: --vary policy and --policy both vary the policy; give one of them\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--policy", "qemu,bogus"], 64,
            "qcow2sim sweep: error: invalid value 'qemu,bogus' for --policy ('bogus': expected one of: qemu, lru, fifo, clock, 2q, arc, s3fifo, sieve, opt)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "cluster_size=64K,3K"], 64,
            "qcow2sim sweep: error: point cluster_size=3072: -o: Cluster size must be a power of two between 512 and 2048k\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "backing.l2-cache-size=1M"], 64,
            "qcow2sim sweep: error: point backing.l2-cache-size=1048576: --drive: Block format 'qcow2' does not support the option 'backing.l2-cache-size'\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=1M", "--jobs", "0"], 64,
            "qcow2sim sweep: error: invalid value '0' for --jobs (expected 1 to 1024)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=1M", "--format", "xml"], 64,
            "qcow2sim sweep: error: invalid value 'xml' for --format (expected one of: csv, json, text, html)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=1M", "--progress", "--quiet"], 64,
            "qcow2sim sweep: error: --progress and --quiet cannot be combined\n"
        ),
        (
            ["sweep", "-", "--size", "8G", "--vary", "l2-cache-size=1M,2M"], 64,
            "qcow2sim sweep: error: TRACE '-' (standard input) can be read only once, but every point reads its trace; give a file\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "l2-cache-size=1M", "--events", "x"], 64,
            "qcow2sim sweep: error: unknown option '--events' (valid options: "
        ),
        (
            ["sweep", "{BAD}", "--size", "8G", "--vary", "l2-cache-size=1M,2M"], 65,
            "{BAD}:2: error: invalid op 'X' (expected R, W, D, Z, ZU or F)\n"
        ),
        (
            ["sweep", "{T}", "/nonexistent/t.csv", "--size", "8G", "--vary", "l2-cache-size=1M"], 66,
            "/nonexistent/t.csv: error: cannot open: No such file or directory\n"
        ),
        (
            ["mrc", "{T}", "--size", "8G"], 64,
            "qcow2sim mrc: error: missing --sizes all|VALUES (e.g. --sizes all, --sizes 256K..32M*2)\n"
        ),
        (
            // 64 TiB of 16 KiB clusters: 32 GiB of L2 tables, 2^23 - 1 slices below full coverage.
            ["mrc", "{T}", "--size", "64T", "-o", "cluster_size=16K", "--sizes", "all"], 64,
            "qcow2sim mrc: error: --sizes all would give 8388607 points (at most 1000000); give the sizes as VALUES, e.g. --sizes 256K..32M:64\n"
        ),
        (
            ["mrc", "{T}", "--size", "8G", "--sizes", "1M..2M:0"], 64,
            "qcow2sim mrc: error: invalid value '1M..2M:0' for --sizes (the count '0' must be a whole number of at least 2)\n"
        ),
        (
            ["mrc", "{T}", "--size", "8G", "--sizes", "1M", "--entry-size", "4Q"], 64,
            "qcow2sim mrc: error: invalid value '4Q' for --entry-size (expected a size in bytes, optionally with a K, M, G or T suffix)\n"
        ),
        (
            ["mrc", "{T}", "--size", "8G", "--sizes", "1M", "--entry-size", "256"], 64,
            "qcow2sim mrc: error: point l2-cache-size=1048576: --drive: L2 cache entry size must be a power of two between 512 and the cluster size (65536)\n"
        ),
        (["mrc", "{T}", "{T}", "--size", "8G", "--sizes", "1M"], 64, "qcow2sim mrc: error: unexpected argument '{T}'\n"),
    ]

    @Test(arguments: errors)
    func usageAndInputErrors(_ args: [String], _ status: Int32, _ message: String) throws {
        let bad = try CLITests.trace("R,0,4K\nX,1,2\n")
        let fill = { (s: String) in
            s.replacingOccurrences(of: "{T}", with: Self.guest).replacingOccurrences(of: "{BAD}", with: bad)
        }
        let (s, out, err) = try CLIRun.run(args.map(fill))
        #expect(s == status)
        #expect(out == "")
        if message.hasSuffix("\n") { #expect(err == fill(message)) } else { #expect(err.hasPrefix(fill(message)), "\(err)") }
    }

    /// A failed sweep leaves `--output` as it was, with no temporary file beside it.
    @Test func failedSweepLeavesOutputUntouched() throws {
        let dir = try CLIRun.directory()
        let bad = dir + "/bad.csv"
        try Data("R,0,4K\nR,0,4K\nR,8G,4K\n".utf8).write(to: URL(fileURLWithPath: bad))
        let out = dir + "/out.csv"
        try Data("keep\n".utf8).write(to: URL(fileURLWithPath: out))
        let (s, _, err) = try CLIRun.run(["sweep", bad, "--size", "8G", "--vary", "l2-cache-size=1M,2M", "--output", out])
        #expect(s == 65)
        #expect(
            err
                == "\(bad):3: error: request at offset 8589934592 length 4096 ends beyond the disk size 8589934592 (use --beyond wrap or clip)\n"
        )
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep\n")
        #expect(try CLIRun.leftovers(dir, keeping: ["bad.csv", "out.csv"]) == [])
    }

    /// Progress: nothing on a standard error that is not a terminal, unless --progress; then
    /// (maybe) lines every 5 s and a last line with the totals; --quiet changes nothing else.
    @Test func progressOnlyWhenAsked() throws {
        let sweep = ["sweep", Self.guest, "--size", "8G", "--vary", "l2-cache-size=64K,1M", "--jobs", "1"]
        let (s0, plain, e0) = try CLIRun.run(sweep)
        #expect(s0 == 0 && e0 == "")
        let (s1, withProgress, e1) = try CLIRun.run(sweep + ["--progress"])
        #expect(s1 == 0 && withProgress == plain)
        let lines = e1.split(separator: "\n").map(String.init)
        // The guest trace has 2883 records: 2 points read 5766.
        let last = try #require(lines.last)
        #expect(last.wholeMatch(of: /sweep: 2\/2 points, 5766 records, [0-9]+\.[0-9] s/) != nil, "\(e1)")
        for line in lines.dropLast() {
            #expect(
                line.wholeMatch(of: /sweep: [0-2]\/2 points, [0-9]+ records \([0-9]+%\), [0-9]+ records\/s, ETA ([0-9:]+|\?)/)
                    != nil)
        }
        let (s2, quiet, e2) = try CLIRun.run(sweep + ["--quiet"])
        #expect(s2 == 0 && quiet == plain && e2 == "")

        let simulate = ["simulate", Self.guest, "--size", "8G", "--format", "csv"]
        let (s3, sim, e3) = try CLIRun.run(simulate)
        #expect(s3 == 0 && e3 == "")
        let (s4, simProgress, e4) = try CLIRun.run(simulate + ["--progress"])
        #expect(s4 == 0 && simProgress == sim)
        let simLast = try #require(e4.split(separator: "\n").last.map(String.init))
        #expect(simLast.wholeMatch(of: /simulate: 2883 records, [0-9]+\.[0-9] s/) != nil, "\(e4)")
    }

    @Test func helpDescribesValues() throws {
        let (s, out, _) = try CLIRun.run(["sweep", "--help"])
        #expect(s == 0)
        #expect(out.contains("START..END:N") && out.contains("rounded to the nearest whole"))
        #expect(out.contains("memory_mean_bytes"))
        let (m, mrc, _) = try CLIRun.run(["mrc", "--help"])
        #expect(m == 0 && mrc.contains("--sizes all"))
    }
}

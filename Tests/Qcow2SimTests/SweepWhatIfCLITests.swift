import Foundation
import Testing

/// Issue 11 item 2 in `sweep` and `compare`: `--vary what-if.KEY=VALUES` and `--what-if
/// KEY=VALUE` give, point by point, `simulate --what-if`'s counts; every row says `what_if`; a
/// bad value is the exact usage error with exit 64.
@Suite struct SweepWhatIfCLITests {
    static let guest = SweepTests.guest

    static let header =
        "trace,what-if.l2-cache-size,policy,image,cache,entry_size,entries,lookups,hits,misses,hit_rate,evictions,writebacks,flushes,bytes_read,bytes_written,memory_peak_bytes,memory_mean_bytes,miss_rate,dirty_evictions,empty_gets,cleaned,requests,misses_cold,misses_evicted,misses_cleaned,misses_discarded,what_if"

    /// Percentages of full coverage: each point is `simulate --what-if l2-cache-size=P%`, and 50 %
    /// of a 20 GiB disk with 64 KiB clusters is `--drive l2-cache-size=1280K` (issue 11).
    @Test func percentPointsEqualSimulate() throws {
        let run = ["--size", "20G"]
        let (status, out, err) = try CLIRun.run(
            ["sweep", Self.guest] + run + ["--vary", "what-if.l2-cache-size=25%,50%,100%", "--format", "csv"])
        #expect(status == 0, "\(err)")
        #expect(out.split(separator: "\n").first.map(String.init) == Self.header)
        let rows = SweepCLITests.rows(out)
        #expect(rows.count == 6)
        for (i, p) in ["25%", "50%", "100%"].enumerated() {
            let theirs = try SweepCLITests.simulate(Self.guest, run + ["--what-if", "l2-cache-size=\(p)"])
            #expect(theirs.count == 2)
            // simulate's CSV has the what_if column too: it is compared with the rest.
            #expect(theirs[0]["what_if"] == "l2-cache-size=\(p)")
            for c in 0..<2 { SweepCLITests.expectSame(rows[2 * i + c], theirs[c], "\(p) row \(c)") }
            #expect(rows[2 * i]["what-if.l2-cache-size"] == p)
        }
        // 20 GiB / 64 KiB × 8 = 2.5 MiB of full coverage: half is 1280 KiB of 4 KiB slices.
        #expect(rows[2]["entries"] == "320" && rows[2]["entry_size"] == "4096")
        #expect(rows[4]["entries"] == "40" && rows[4]["entry_size"] == "65536")
        let bytes = try SweepCLITests.simulate(Self.guest, run + ["--drive", "l2-cache-size=1280K"])
        for name in ["entries", "lookups", "hits", "misses", "evictions", "writebacks", "bytes_read", "memory_peak_bytes"] {
            #expect(rows[2][name] == bytes[0][name], "\(name)")
        }
        #expect(bytes[0]["what_if"] == nil)
        // The guest trace touches more slices than a quarter of the cache holds.
        #expect(Int(rows[0]["misses"] ?? "") ?? 0 > Int(rows[4]["misses"] ?? "") ?? 0)
    }

    /// A fixed `--what-if` with a varied one, on a 3-image chain, for two policies: every point is
    /// `simulate` with both what-ifs, in the same order; the JSON carries them as objects.
    @Test func chainScopePointsEqualSimulate() throws {
        let run = [
            "--size", "8G", "--chain", "3", "--drive",
            "l2-cache-size=32K,backing.l2-cache-size=16K,backing.backing.l2-cache-size=16K",
        ]
        let sweep =
            ["sweep", Self.guest] + run + [
                "--what-if", "chain-l2-cache-size=40K", "--vary", "what-if.cache-scope=image,chain", "--policy", "qemu,lru",
            ]
        let (status, out, err) = try CLIRun.run(sweep)
        #expect(status == 0, "\(err)")
        let rows = SweepCLITests.rows(out)
        // 2 scopes × 2 policies × 3 images × 2 caches.
        #expect(rows.count == 24)
        var k = 0
        for scope in ["image", "chain"] {
            for policy in ["qemu", "lru"] {
                let theirs = try SweepCLITests.simulate(
                    Self.guest,
                    run + ["--what-if", "chain-l2-cache-size=40K", "--what-if", "cache-scope=\(scope)", "--policy", policy])
                #expect(theirs.count == 6)
                for t in theirs {
                    #expect(rows[k]["what-if.cache-scope"] == scope && rows[k]["policy"] == policy)
                    #expect(rows[k]["what_if"] == "chain-l2-cache-size=40K cache-scope=\(scope)")
                    SweepCLITests.expectSame(rows[k], t, "\(scope) \(policy) row \(k)")
                    k += 1
                }
            }
        }
        // The shared cache: 40 KiB of 4 KiB slices for the whole chain, counted on the top image.
        let shared = rows[12..<18]
        #expect(shared.allSatisfy { $0["cache"] != "l2" || $0["entries"] == "10" })
        #expect(shared.filter { $0["cache"] == "l2" }.map { $0["lookups"] == "0" } == [true, true, false])
        let (jstatus, json, jerr) = try CLIRun.run(sweep + ["--format", "json"])
        #expect(jstatus == 0, "\(jerr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let fixed = try #require(object["fixed"] as? [String: Any])
        #expect(fixed["what_if"] as? [String: String] == ["chain-l2-cache-size": "40K"])
        let jrows = try #require(object["rows"] as? [[String: Any]])
        #expect(jrows.count == 24)
        #expect(jrows[0]["what_if"] as? [String: String] == ["chain-l2-cache-size": "40K", "cache-scope": "image"])
        #expect(jrows[12]["what-if.cache-scope"] as? String == "chain")
        let (tstatus, text, _) = try CLIRun.run(sweep + ["--format", "text"])
        #expect(tstatus == 0)
        #expect(text.hasPrefix("what-if (not QEMU behaviour): chain-l2-cache-size=40K what-if.cache-scope (column)\n"))
    }

    /// `compare`'s what-if candidate: `simulate --what-if`'s counts, and a `what_if` column.
    @Test func compareCarriesWhatIf() throws {
        let (status, out, err) = try CLIRun.run([
            "compare", Self.guest, "--size", "8G", "--baseline", "policy=qemu", "--candidate", "what-if.l2-cache-size=25%",
            "--format", "csv",
        ])
        #expect(status == 0, "\(err)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(
            lines.first
                == "trace,candidate,image,cache,misses,writebacks,bytes_read,memory_peak_bytes,delta_misses_pct,opt_misses,lookups,hit_rate,what_if"
        )
        let rows = SweepCLITests.rows(out)
        #expect(rows.map { $0["what_if"] } == ["", "", "l2-cache-size=25%", "l2-cache-size=25%"])
        let theirs = try SweepCLITests.simulate(Self.guest, ["--size", "8G", "--what-if", "l2-cache-size=25%"])
        #expect(rows[2]["misses"] == theirs[0]["misses"] && rows[2]["writebacks"] == theirs[0]["writebacks"])
    }

    static let errors: [([String], String)] = [
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "what-if.l2-cache-size=25%,abc"],
            "qcow2sim sweep: error: invalid value '25%,abc' for --vary what-if.l2-cache-size ('abc': expected a percentage above 0, such as 50%)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "what-if.l2-cache-size=25%..100%+25%"],
            "qcow2sim sweep: error: invalid value '25%..100%+25%' for --vary what-if.l2-cache-size (what-if.l2-cache-size takes a list, not a range)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "what-if.cache-scope=image,disk"],
            "qcow2sim sweep: error: invalid value 'image,disk' for --vary what-if.cache-scope ('disk': expected one of: image, chain)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "what-if.chain-l2-cache-size=0,1M"],
            "qcow2sim sweep: error: invalid value '0,1M' for --vary what-if.chain-l2-cache-size ('0': expected a size such as 4M)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--vary", "what-if.cache-size=1M"],
            "qcow2sim sweep: error: unknown what-if key 'cache-size' in --vary what-if.cache-size=1M (expected one of: what-if.l2-cache-size, what-if.refcount-cache-size, what-if.cache-scope, what-if.chain-l2-cache-size, what-if.chain-refcount-cache-size)\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--what-if", "l2-cache-size=abc", "--vary", "l2-cache-size=1M"],
            "qcow2sim sweep: error: --what-if l2-cache-size=abc: expected a percentage above 0, such as 50%\n"
        ),
        (
            ["sweep", "{T}", "--size", "8G", "--drive", "l2-cache-size=1M", "--vary", "what-if.l2-cache-size=50%"],
            "qcow2sim sweep: error: point what-if.l2-cache-size=50%: --what-if l2-cache-size=50%: --drive sets l2-cache-size too\n"
        ),
        (
            ["compare", "{T}", "--size", "8G", "--baseline", "policy=qemu", "--candidate", "what-if.l2-cache-size=abc"],
            "qcow2sim compare: error: invalid value 'abc' for --candidate what-if.l2-cache-size ('abc': expected a percentage above 0, such as 50%)\n"
        ),
        (
            ["compare", "{T}", "--size", "8G", "--baseline", "policy=qemu", "--candidate", "what-if.l2-cache-size=25%,50%"],
            "qcow2sim compare: error: --candidate what-if.l2-cache-size=25%,50%: one value per candidate (vary it with --vary what-if.l2-cache-size=VALUES)\n"
        ),
    ]

    @Test(arguments: errors)
    func badValuesAreUsageErrors(_ args: [String], _ message: String) throws {
        let (s, out, err) = try CLIRun.run(args.map { $0 == "{T}" ? Self.guest : $0 })
        #expect(s == 64)
        #expect(out == "")
        #expect(err == message)
    }
}

extension SweepWhatIfCLITests {
    @Test func helpNamesTheWhatIfs() throws {
        let (s, out, _) = try CLIRun.run(["sweep", "--help"])
        #expect(s == 0)
        #expect(out.contains("what-if.KEY") && out.contains("--what-if KEY=VALUE") && out.contains("what_if"))
        let (c, compare, _) = try CLIRun.run(["compare", "--help"])
        #expect(c == 0 && compare.contains("--vary what-if.l2-cache-size=25%,50%,100%") && compare.contains("what_if"))
    }
}

extension SweepWhatIfCLITests {
    /// A size-valued what-if axis: the shared cache's budget. Sizes print in bytes, as sweep's
    /// other size columns do, and each point is `simulate` with that budget.
    @Test func sharedBudgetPointsEqualSimulate() throws {
        let run = ["--size", "8G", "--chain", "2", "--drive", "l2-cache-size=32K,backing.l2-cache-size=32K"]
        let (status, out, err) = try CLIRun.run(
            ["sweep", Self.guest] + run + ["--what-if", "cache-scope=chain", "--vary", "what-if.chain-l2-cache-size=16K,64K"])
        #expect(status == 0, "\(err)")
        let rows = SweepCLITests.rows(out)
        #expect(rows.count == 8)
        for (i, size) in ["16384", "65536"].enumerated() {
            let theirs = try SweepCLITests.simulate(
                Self.guest, run + ["--what-if", "cache-scope=chain", "--what-if", "chain-l2-cache-size=\(size)"])
            #expect(theirs.count == 4)
            for (k, t) in theirs.enumerated() {
                let row = rows[4 * i + k]
                #expect(row["what-if.chain-l2-cache-size"] == size)
                #expect(row["what_if"] == "cache-scope=chain chain-l2-cache-size=\(size)")
                SweepCLITests.expectSame(row, t, "\(size) row \(k)")
            }
        }
        // 16 KiB and 64 KiB of 4 KiB slices shared by both images.
        #expect(rows[2]["entries"] == "4" && rows[6]["entries"] == "16")
    }
}

import Foundation
import Testing

/// Multi-volume traces (issue 16, items 1 to 3): `trace info` lists the volumes, `--per-volume`
/// runs each volume as `--device V --size SIZE` would, and `advise --per-volume` sums up the
/// fleet. Counts of the public Tencent sample are checked against awk over the raw file.
@Suite struct PerVolumeCLITests {
    static let tencent = (EvictionPolicyTests.sharedTraces as NSString).appendingPathComponent(
        "tencent-cbs-cloud_storage-sample.bz2")
    static let skipTencent: Comment = "tencent-cbs-cloud_storage-sample.bz2 not found: skipping (check out ../shared/traces or set QCOW2SIM_TRACES)"

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    static func write(_ text: String, _ name: String, in dir: String) throws -> String {
        let path = dir + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// `trace info` on the Tencent sample: 2 038 volumes, 50 000 records. The per-volume figures
    /// come from awk over the raw rows (`Timestamp,Offset,Size,IOType,VolumeID`, sectors):
    ///   bzcat F | awk -F, '{c[$5]++} END {for (v in c) n++; print n}'            → 2038
    ///   bzcat F | awk -F, '{c[$5]++} END {for (v in c) print c[v], v}' | sort -rn → 1225 1125,
    ///     1187 1418, 1047 6378 (the three largest); c[1063] = 434, c[1073] = 1
    ///   bzcat F | awk -F, '$5==1063 {e=($2+$3)*512; if (e>m) m=e} END {print m}' → 28522086400
    @Test(.enabled(if: FileManager.default.fileExists(atPath: tencent), skipTencent))
    func traceInfoListsTheTencentVolumes() throws {
        let (status, out, err) = try CLIRun.run(["trace", "info", Self.tencent, "--format", "json"])
        #expect(status == 0, "\(err)")
        let doc = try Self.json(out)
        #expect(doc["records"] as? Int == 50000)
        let volumes = try #require(doc["volumes"] as? [[String: Any]])
        #expect(volumes.count == 2038)
        #expect(volumes.reduce(0) { $0 + ($1["records"] as? Int ?? 0) } == 50000)
        var byName: [String: [String: Any]] = [:]
        for v in volumes { byName[v["volume"] as? String ?? ""] = v }
        for (name, records) in [("1125", 1225), ("1418", 1187), ("6378", 1047), ("1063", 434), ("1073", 1)] {
            #expect(byName[name]?["records"] as? Int == records, "volume \(name)")
        }
        #expect((byName["1063"]?["max_offset_end"] as? NSNumber)?.uint64Value == 28_522_086_400)
        // Sorted numerically, as every per-volume run orders them.
        let names = volumes.compactMap { $0["volume"] as? String }.compactMap { UInt64($0) }
        #expect(names == names.sorted())
        let (textStatus, text, _) = try CLIRun.run(["trace", "info", Self.tencent])
        #expect(textStatus == 0)
        #expect(text.contains("\nvolumes        2038 "))
    }

    /// `sweep --per-volume` over the Tencent sample: one row per (volume, point, cache), and
    /// every sampled volume's rows equal `simulate --device V --size SIZE` run by itself (SIZE:
    /// the volume's highest request end rounded up to 64 KiB, the virtual_size column).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: tencent), skipTencent))
    func sweepPerVolumeEqualsSimulateDevice() throws {
        let (status, out, err) = try CLIRun.run([
            "sweep", Self.tencent, "--per-volume", "--vary", "l2-cache-size=64K,1M", "--jobs", "2",
        ])
        #expect(status == 0, "\(err)")
        let lines = out.split(separator: "\n")
        #expect(lines.first?.hasPrefix("trace,volume,virtual_size,l2-cache-size,policy,image,cache,") == true)
        let rows = SweepCLITests.rows(out)
        #expect(rows.count == 2038 * 2 * 2)
        #expect(Set(rows.compactMap { $0["volume"] }).count == 2038)
        #expect(rows.reduce(0) { $0 + ($1["cache"] == "l2" && $1["l2-cache-size"] == "65536" ? Int($1["requests"] ?? "") ?? 0 : 0) } == 50000)
        // 1063's highest end 28522086400 rounded up to 64 KiB.
        #expect(rows.first { $0["volume"] == "1063" }?["virtual_size"] == "28522119168")
        for volume in ["1063", "1125", "1418", "6378", "1073"] {
            for size in ["65536", "1048576"] {
                let mine = rows.filter { $0["volume"] == volume && $0["l2-cache-size"] == size }
                #expect(mine.count == 2)
                let vsize = try #require(mine.first?["virtual_size"])
                let alone = try SweepCLITests.simulate(
                    Self.tencent, ["--device", volume, "--size", vsize, "--drive", "l2-cache-size=\(size)"])
                #expect(alone.count == 2)
                for (s, a) in zip(mine, alone) { SweepCLITests.expectSame(s, a, "volume \(volume) at \(size)") }
            }
        }
    }

    /// A small fleet: 5 volumes of `generate --volumes`, grouped (one pass, volumes in memory)
    /// and the same records interleaved (the spill path) give the same rows; `--jobs` changes
    /// nothing; each volume equals `simulate --device`.
    @Test func groupedAndInterleavedFleetsGiveTheSameRows() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let grouped = dir + "/fleet.csv"
        var (status, _, err) = try CLIRun.run([
            "generate", "--pattern", "zipf", "--count", "300", "--size", "2G", "--read-ratio", "0.5", "--volumes", "5", "-o", grouped,
        ])
        #expect(status == 0, "\(err)")
        // Interleave: round-robin over the volumes' lines (each volume's order kept).
        let lines = try String(contentsOfFile: grouped, encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "time,op,offset,length,volume")
        var perVolume: [[Substring]] = Array(repeating: [], count: 5)
        for l in lines.dropFirst() { perVolume[Int(l.split(separator: ",").last ?? "") ?? 0].append(l) }
        #expect(perVolume.allSatisfy { $0.count == 300 })
        var mixed = ["time,op,offset,length,volume"]
        for i in 0..<300 { for v in [3, 0, 4, 1, 2] { mixed.append(String(perVolume[v][i])) } }
        let interleaved = try Self.write(mixed.joined(separator: "\n") + "\n", "mixed.csv", in: dir)
        var outputs: [String] = []
        for (trace, jobs) in [(grouped, "1"), (grouped, "3"), (interleaved, "1"), (interleaved, "2")] {
            let out: String
            (status, out, err) = try CLIRun.run([
                "sweep", trace, "--per-volume", "--size", "2G", "--vary", "l2-cache-size=8K,64K", "--jobs", jobs,
            ])
            #expect(status == 0, "\(err)")
            // The trace column differs; the rest must not.
            outputs.append(out.replacingOccurrences(of: trace, with: "TRACE"))
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0] == outputs[2])
        #expect(outputs[0] == outputs[3])
        let rows = SweepCLITests.rows(outputs[0])
        #expect(rows.count == 5 * 2 * 2)
        #expect(rows.map { $0["volume"] ?? "" } == ["0", "1", "2", "3", "4"].flatMap { Array(repeating: $0, count: 4) })
        for volume in ["0", "4"] {
            let mine = rows.filter { $0["volume"] == volume && $0["l2-cache-size"] == "8192" }
            let alone = try SweepCLITests.simulate(interleaved, ["--device", volume, "--size", "2G", "--drive", "l2-cache-size=8K"])
            for (s, a) in zip(mine, alone) { SweepCLITests.expectSame(s, a, "volume \(volume)") }
        }
        // simulate --per-volume: the same counters, with volume and virtual_size first.
        let out: String
        (status, out, err) = try CLIRun.run(["simulate", interleaved, "--per-volume", "--size", "2G", "--drive", "l2-cache-size=8K", "--format", "csv"])
        #expect(status == 0, "\(err)")
        let sim = SweepCLITests.rows(out)
        #expect(out.hasPrefix("volume,virtual_size,image,cache,"))
        #expect(sim.count == 10)
        for (s, r) in zip(sim, rows.filter { $0["l2-cache-size"] == "8192" }) {
            #expect(s["volume"] == r["volume"] && s["misses"] == r["misses"] && s["writebacks"] == r["writebacks"])
        }
    }

    /// `advise --per-volume`: one volume needs more than QEMU's 32 MiB default. Volume 7 writes
    /// one cluster in each of 8 300 L2 slices (32 MiB of guest space apart, one 4 KiB slice
    /// each), then reads them back: the reads hit only when all 8 300 slices stay cached, which
    /// takes 8 300 × 4 KiB = 33 996 800 bytes of L2 cache, above 32 MiB (33 554 432). Volume 0
    /// reads and writes 400 times in 500 clusters of one slice. The fleet's figures are checked
    /// against the volumes' own (`advise --device`), the percentiles by nearest rank.
    @Test func adviseFleetSummaryNamesTheVolumesAboveTheDefault() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var text = "time,op,offset,length,volume\n"
        for op in ["R", "W"] { for i in 0..<200 { text += ",\(op),\((i * 7919 % 500) * 65536),4096,0\n" } }
        for op in ["W", "R"] { for i in 0..<8300 { text += ",\(op),\(i << 25),4096,7\n" } }
        let trace = try Self.write(text, "fleet.csv", in: dir)
        let (status, out, err) = try CLIRun.run(["advise", trace, "--per-volume", "--target-hit-rate", "0.75", "--format", "json"])
        #expect(status == 0, "\(err)")
        let doc = try Self.json(out)
        #expect(doc["above_default"] as? [String] == ["7"])
        #expect(doc["unreachable"] as? [String] == [])
        let volumes = try #require(doc["volumes"] as? [[String: Any]])
        #expect(volumes.compactMap { $0["volume"] as? String } == ["0", "7"])
        let l2 = volumes.compactMap { ($0["l2_cache_size"] as? NSNumber)?.uint64Value }
        #expect(l2.count == 2 && l2[1] >= 33_996_800 && l2[1] > 33_554_432, "\(l2)")
        let memory = volumes.compactMap { ($0["memory_bytes"] as? NSNumber)?.uint64Value }
        let dist = try #require(doc["memory"] as? [String: Any])
        // Nearest rank over 2 values: p50 is the 1st (⌈0.5 × 2⌉ = 1), p90, p99 and max the 2nd.
        #expect((dist["p50"] as? NSNumber)?.uint64Value == memory.min())
        #expect((dist["p90"] as? NSNumber)?.uint64Value == memory.max())
        #expect((dist["max"] as? NSNumber)?.uint64Value == memory.max())
        #expect((doc["total_memory_bytes"] as? NSNumber)?.uint64Value == memory.reduce(0, +))
        // Each volume's advice is `advise --device V --size SIZE`'s.
        for v in volumes {
            let name = try #require(v["volume"] as? String)
            let size = try #require((v["virtual_size"] as? NSNumber)?.uint64Value)
            let (s, o, e) = try CLIRun.run([
                "advise", trace, "--device", name, "--size", "\(size)", "--target-hit-rate", "0.75", "--format", "json",
            ])
            #expect(s == 0, "\(e)")
            let alone = try Self.json(o)
            let images = try #require(alone["images"] as? [[String: Any]])
            #expect((images.first?["l2_cache_size"] as? NSNumber)?.uint64Value == (v["l2_cache_size"] as? NSNumber)?.uint64Value)
            #expect(alone["drive"] as? String == v["drive"] as? String)
        }
        let (textStatus, textOut, _) = try CLIRun.run(["advise", trace, "--per-volume", "--target-hit-rate", "0.75"])
        #expect(textStatus == 0)
        #expect(textOut.contains("volumes needing more than the 32 MiB default L2 cache: 1 (7)\n"))
    }

    /// Bad `--volume-sizes` files, volumes they do not size, traces without volumes and option
    /// clashes: the exact messages (file and line) and sysexits codes.
    @Test func perVolumeErrorsAreLocated() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = try Self.write("time,op,offset,length,volume\n,R,0,4096,1\n,R,65536,4096,2\n", "t.csv", in: dir)
        let plain = try Self.write("R,0,4096\n", "plain.csv", in: dir)
        func sizes(_ text: String) throws -> String { try Self.write(text, "sizes-\(UUID().uuidString).csv", in: dir) }
        let cases: [([String], Int32, (String) -> String)] = [
            (["--volume-sizes", try sizes("volume,size\n1,1G,3\n")], 65, { "\($0):2: error: expected 2 fields (volume,size), found 3" }),
            (
                ["--volume-sizes", try sizes("1,1G\n2,lots\n")], 65,
                { "\($0):2: error: invalid size 'lots' (expected bytes, optionally with a K, M, G or T suffix)" }
            ),
            (
                ["--volume-sizes", try sizes("1,1000\n")], 65,
                { "\($0):1: error: invalid size '1000' for volume '1' (expected a positive multiple of 512 bytes)" }
            ),
            (["--volume-sizes", try sizes("1,1G\n# c\n1,2G\n")], 65, { "\($0):3: error: volume '1' listed again (first on line 1)" }),
            (["--volume-sizes", try sizes("1,1G\n")], 65, { "\($0): error: no size for volume '2', which \(trace) has records for" }),
            (["--volume-sizes", dir + "/none.csv"], 66, { _ in "\(dir)/none.csv: error: cannot open: No such file or directory" }),
        ]
        for (args, code, message) in cases {
            let (status, out, err) = try CLIRun.run(["sweep", trace, "--per-volume", "--vary", "l2-cache-size=8K"] + args)
            #expect(status == code, "\(args): \(err)")
            #expect(out == "")
            #expect(err == message(args[1]) + "\n", "\(args)")
        }
        // A request beyond the size the file gives is located at its line in the trace.
        let small = try sizes("1,1G\n2,64K\n")
        var (status, _, err) = try CLIRun.run(["sweep", trace, "--per-volume", "--vary", "l2-cache-size=8K", "--volume-sizes", small])
        #expect(status == 65)
        #expect(err == "\(trace):3: error: request [65536, 69632) lies beyond the virtual size 65536\n")
        (status, _, err) = try CLIRun.run(["sweep", plain, "--per-volume", "--vary", "l2-cache-size=8K"])
        #expect(status == 65)
        #expect(
            err
                == "\(plain):1: error: record without a volume: this native trace has no volume column (time,op,offset,length,volume), and --per-volume needs one (formats with volumes: tencent, alibaba, msr, systor, spc, fio, native with a volume column)\n"
        )
        for (args, message) in [
            (["sweep", trace, "--per-volume", "--device", "1", "--vary", "l2-cache-size=8K"], "qcow2sim sweep: error: --per-volume runs every volume; --device selects one (give one of them)"),
            (["sweep", trace, "--volume-sizes", small, "--size", "1G", "--vary", "l2-cache-size=8K"], "qcow2sim sweep: error: --volume-sizes needs --per-volume"),
            (["simulate", trace, "--per-volume", "--events", dir + "/e.log"], "qcow2sim simulate: error: --events cannot be used with --per-volume"),
            (["mrc", trace, "--per-volume", "--sizes", "8K,16K", "--format", "html"], "qcow2sim mrc: error: --format html draws one curve; with --per-volume use csv, json or text (or advise --per-volume --format html for the fleet page)"),
        ] {
            let (s, _, e) = try CLIRun.run(args)
            #expect(s == 64, "\(args)")
            #expect(e == message + "\n")
        }
    }
}

import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Issue 12 item 1: `advise` prints settings that, pasted back, give what it predicted: the
/// `-drive` string into `simulate --drive` gives the predicted counts, the libvirt `max_size`
/// into `--drive cache-size=` gives the recommended L2 cache (QEMU's split of a combined size),
/// and the libvirt XML is well formed.
@Suite struct AdviseCLITests {
    static let guest = Repository.path("Traces/guest-ext4.trace.csv")

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// `advise … --format json` as an object (exit 0 expected).
    static func advise(_ args: [String]) throws -> [String: Any] {
        let (code, out, err) = try CLIRun.run(["advise"] + args + ["--format", "json"])
        #expect(code == 0, "\(err)")
        return try json(out)
    }

    /// simulate's JSON for `run` options and `drive`.
    static func simulate(_ run: [String], drive: String) throws -> [String: Any] {
        let (code, out, err) = try CLIRun.run(["simulate"] + run + ["--drive", drive, "--format", "json"])
        #expect(code == 0, "\(err)")
        return try json(out)
    }

    /// Checks the pasted-back spellings for an advice of a run with options `run`.
    static func checkPasteBack(_ advice: [String: Any], run: [String], chain: Int) throws {
        let images = try #require(advice["images"] as? [[String: Any]])
        #expect(images.count == chain)
        // 1. The -drive string gives the predicted counts, image by image.
        let drive = try #require(advice["drive"] as? String)
        let simulated = try simulate(run, drive: drive)
        let simImages = try #require(simulated["images"] as? [[String: Any]])
        for (a, s) in zip(images, simImages) {
            for cache in ["l2", "refcount"] {
                let predicted = try #require(a[cache] as? [String: Any])
                let got = try #require(s[cache] as? [String: Any])
                for key in ["lookups", "hits", "misses", "writebacks", "evictions"] {
                    #expect(predicted[key] as? Int == got[key] as? Int, "image \(a["index"] ?? "?") \(cache) \(key)")
                }
            }
        }
        // 2. libvirt's max_size as QEMU's cache-size of each node gives the recommended L2 cache.
        let cacheSizes = images.reversed().enumerated().map { level, im in
            String(repeating: "backing.", count: level) + "cache-size=\(im["libvirt_max_size_kib"] as? Int ?? -1)K"
        }.joined(separator: ",")
        let split = try simulate(run, drive: cacheSizes)
        let configImages = try #require((split["config"] as? [String: Any])?["images"] as? [[String: Any]])
        for (a, c) in zip(images, configImages) {
            #expect(c["l2_cache_bytes"] as? Int == a["l2_cache_size"] as? Int, "image \(a["index"] ?? "?"): \(cacheSizes)")
            #expect(c["refcount_entries"] as? Int == 4)
        }
        // 3. The libvirt XML is well formed, with one max_size per image.
        let xml = try #require(advice["libvirt_xml"] as? String)
        #if canImport(FoundationXML) || os(macOS)
            final class Counter: NSObject, XMLParserDelegate {
                var maxSizes = 0
                func parser(
                    _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]
                ) {
                    if name == "max_size" { maxSizes += 1; #expect(attributes["unit"] == "KiB") }
                }
            }
            let parser = XMLParser(data: Data(xml.utf8))
            let counter = Counter()
            parser.delegate = counter
            #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")\n\(xml)")
            #expect(counter.maxSizes == chain)
        #endif
        // The blockdev nodes are JSON objects naming their backing node.
        for (k, im) in images.enumerated() {
            let node = try json(try #require(im["blockdev"] as? String))
            #expect(node["node-name"] as? String == "img\(k)")
            #expect(node["l2-cache-size"] as? Int == im["l2_cache_size"] as? Int)
            if k > 0 { #expect(node["backing"] as? String == "img\(k - 1)") }
        }
    }

    @Test func guestTraceMemoryBudget() throws {
        let run = [Self.guest, "--size", "8G"]
        let advice = try Self.advise(run + ["--memory-budget", "1M"])
        let images = try #require(advice["images"] as? [[String: Any]])
        // 8 GiB with 64 KiB clusters: 1 MiB of L2 covers the disk; the budget leaves 768 KiB
        // for L2 after 4 refcount clusters (256 KiB).
        #expect(images[0]["l2_full_coverage_bytes"] as? Int == 1 << 20)
        #expect(images[0]["refcount_cache_size"] as? Int == 256 << 10)
        let l2 = try #require(images[0]["l2_cache_size"] as? Int)
        #expect(l2 <= 768 << 10 && l2 >= 8192)
        #expect(images[0]["memory_bytes"] as? Int == l2 + (256 << 10))
        #expect(images[0]["libvirt_max_size_kib"] as? Int == (l2 + (256 << 10)) / 1024)
        // QEMU's default here: the full 1 MiB L2 cache (as whole 64 KiB tables) + 4 refcount clusters.
        #expect(images[0]["default_memory_bytes"] as? Int == (1 << 20) + (256 << 10))
        try Self.checkPasteBack(advice, run: run, chain: 1)
        // The text prints the three spellings.
        let (code, text, _) = try CLIRun.run(["advise"] + run + ["--memory-budget", "1M"])
        #expect(code == 0)
        #expect(text.contains("-drive options:\n  l2-cache-size=\(l2),"))
        #expect(text.contains("<max_size unit='KiB'>\((l2 + (256 << 10)) / 1024)</max_size>"))
        #expect(text.contains("-blockdev '{"))
    }

    @Test func threeImageChain() throws {
        let run = [Self.guest, "--size", "8G", "--chain", "3", "--populate", "full"]
        let advice = try Self.advise(run + ["--target-hit-rate", "0.5"])
        let drive = try #require(advice["drive"] as? String)
        #expect(drive.contains(",backing.l2-cache-size=") && drive.contains(",backing.backing.l2-cache-size="))
        try Self.checkPasteBack(advice, run: run, chain: 3)
        let xml = try #require(advice["libvirt_xml"] as? String)
        #expect(xml.components(separatedBy: "<backingStore type='file'>").count == 3)
        #expect(xml.contains("<format type='qcow2'><metadata_cache>"))
    }

    @Test(.requires(SharedTraces.requirement)) func cloudPhysicsTrace() throws {
        // The trace spans about 31 GiB of LBAs.
        let run = [SharedTraces.path("cloudPhysicsIO.vscsi"), "--size", "32G"]
        let advice = try Self.advise(run + ["--target-miss-per-request", "0.02"])
        let images = try #require(advice["images"] as? [[String: Any]])
        let l2 = try #require(images[0]["l2"] as? [String: Any])
        let requests = try #require(advice["requests"] as? Int)
        #expect(requests == 113_872)
        #expect(Double(try #require(l2["misses"] as? Int)) / Double(requests) <= 0.02)
        try Self.checkPasteBack(advice, run: run, chain: 1)
    }

    @Test func badTargetsAndFiles() throws {
        // 2 L2 entries of 4 KiB + 4 refcount clusters of 64 KiB = 264 KiB.
        var (code, _, err) = try CLIRun.run(["advise", Self.guest, "--size", "8G", "--memory-budget", "100K"])
        #expect(code == 64)
        #expect(
            err
                == "qcow2sim advise: error: --memory-budget 100K is below QEMU's minimum for image 0: 2 L2 entries of 4K and 4 refcount entries of 64K (264K)\n"
        )
        (code, _, err) = try CLIRun.run(["advise", Self.guest, "--size", "8G", "--target-hit-rate", "1"])
        #expect(code == 64)
        #expect(err.hasPrefix("qcow2sim advise: error: --target-hit-rate 1.0 is unreachable for image 0: the best is "))
        (code, _, err) = try CLIRun.run(["advise", Self.guest, "--size", "8G"])
        #expect(code == 64)
        #expect(err.contains("missing target: give --memory-budget SIZE, --target-hit-rate R or --target-miss-per-request X"))
        (code, _, err) = try CLIRun.run([
            "advise", Self.guest, "--size", "8G", "--memory-budget", "1M", "--target-hit-rate", "0.9",
        ])
        #expect(code == 64)
        (code, _, err) = try CLIRun.run([
            "advise", Self.guest, "--size", "8G", "--memory-budget", "1M", "--vary", "l2-cache-size=1M",
        ])
        #expect(code == 64)
        #expect(err.contains("advise varies create options only"))
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cost = dir + "/cost.json"
        try Data("{\n  \"request_us\": 10,\n  \"metadata_load_us\": true,\n  \"metadata_load_us_per_kib\": 1\n}\n".utf8).write(
            to: URL(fileURLWithPath: cost))
        (code, _, err) = try CLIRun.run(["advise", Self.guest, "--size", "8G", "--memory-budget", "1M", "--cost", cost])
        #expect(code == 65)
        #expect(err == "\(cost):3: error: 'metadata_load_us' must be a number of microseconds, not a boolean\n")
    }

    @Test func varyClusterSizeWithCost() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cost = dir + "/cost.json"
        try Data(#"{"request_us": 20, "metadata_load_us": 150, "metadata_load_us_per_kib": 4}"#.utf8).write(
            to: URL(fileURLWithPath: cost))
        let advice = try Self.advise([
            Self.guest, "--size", "8G", "--memory-budget", "2M", "--vary", "cluster_size=64K,128K", "--cost", cost,
        ])
        let alternatives = try #require(advice["alternatives"] as? [[String: Any]])
        #expect(alternatives.count == 1)
        let totals = try #require(advice["totals"] as? [String: Any])
        let iops = try #require(totals["predicted_iops"] as? Double)
        // The advice is the variant with the most predicted IOPS.
        #expect(iops >= (alternatives[0]["predicted_iops"] as? Double ?? .infinity))
        #expect(totals["predicted_latency_us"] as? Double != nil && totals["full_coverage_iops"] as? Double != nil)
    }
}

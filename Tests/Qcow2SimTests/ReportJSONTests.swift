import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// The JSON reports: `SimulationDocument` (simulate) and the validate report, through the CLI
/// binary and in process. Values are spec TV6's (qcow2-model.md: 2 L2 entries of 4 KiB, six
/// reads of a preallocated 4 GiB image opened read-only).
@Suite struct ReportJSONTests {
    /// TV6's reads, in the native CSV format.
    static let tv6 = "R,0,4K\nR,32M,4K\nR,0,4K\nR,64M,4K\nR,32M,4K\nR,1G,4K\n"
    static let tv6Options = ["--size", "4G", "--populate", "full", "--drive", "l2-cache-size=8K", "--read-only"]

    /// TV6's L2 counts, by hand from its listing: `miss 0`, `miss 1` (empty slots), `hit 0`, then
    /// three misses that each replace a table; 5 tables of 4 KiB read; close prints `flush L2`.
    static func checkTV6(l2: [String: Any]) {
        #expect(l2["lookups"] as? Int == 6)
        #expect(l2["hits"] as? Int == 1)
        #expect(l2["misses"] as? Int == 5)
        #expect(l2["empty_gets"] as? Int == 0)
        #expect(l2["evictions"] as? Int == 3)
        #expect(l2["writebacks"] as? Int == 0)
        #expect(l2["flushes"] as? Int == 1)
        #expect(l2["bytes_read"] as? Int == 5 * 4096)
        #expect(l2["bytes_written"] as? Int == 0)
        // 1/6 and 5/6 to 6 significant digits, as the reports always printed them.
        #expect(l2["hit_rate"] as? Double == 0.166667)
        #expect(l2["miss_rate"] as? Double == 0.833333)
    }

    @Test("simulate --format json: schema_version 1, TV6's counts, and the document decodes and re-encodes to the same text")
    func simulateJSON() throws {
        let path = try CLITests.trace(Self.tv6)
        let (status, out, err) = try CLIRun.run(["simulate", path] + Self.tv6Options + ["--format", "json"])
        #expect(status == 0, "\(err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(object["schema_version"] as? Int == 1)
        let images = try #require(object["images"] as? [[String: Any]])
        Self.checkTV6(l2: try #require(images.first?["l2"] as? [String: Any]))
        let config = try #require(object["config"] as? [String: Any])
        #expect(config["drive_options"] as? String == "l2-cache-size=8192")
        #expect(config["create_options"] as? String == "")
        let image = try #require((config["images"] as? [[String: Any]])?.first)
        #expect(image["l2_entries"] as? Int == 2 && image["l2_entry_size"] as? Int == 4096)

        let document = try JSONDecoder().decode(SimulationDocument.self, from: Data(out.utf8))
        #expect(document.schemaVersion == SimulationDocument.currentSchemaVersion)
        #expect(document.images[0].l2.missesReadFromDisk == 5)
        #expect(try ReportFormat.json(document) == out)
    }

    /// Every key `simulate --format json` wrote before the report became `Codable` (the
    /// hand-built JSON of ReportFormat.swift), and `schema_version`: the contract the notebooks
    /// and other tools read.
    @Test("simulate's JSON keeps every field name it had, and adds schema_version")
    func simulateKeys() throws {
        let path = try CLITests.trace("W,0,4K\nR,0,4K\n")
        let (status, out, err) = try CLIRun.run(["simulate", path, "--size", "1G", "--chain", "2", "--format", "json"])
        #expect(status == 0, "\(err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "schema_version", "config", "images", "totals", "requests", "requests_by_op", "multi_segment_reads",
                "multi_segment_writes", "duration_seconds",
            ])
        let config = try #require(object["config"] as? [String: Any])
        #expect(Set(config.keys) == ["policy", "cache_mode", "create_options", "drive_options", "chain", "images"])
        let configImages = try #require(config["images"] as? [[String: Any]])
        #expect(configImages.count == 2)
        for c in configImages {
            #expect(
                Set(c.keys) == [
                    "index", "cluster_size", "extended_l2", "refcount_bits", "virtual_size", "l2_entry_size", "l2_entries",
                    "l2_cache_bytes", "refcount_entry_size", "refcount_entries", "cache_clean_interval",
                ])
        }
        let cacheKeys: Set<String> = [
            "lookups", "hits", "misses", "hit_rate", "miss_rate", "empty_gets", "evictions", "dirty_evictions", "writebacks",
            "flushes", "bytes_read", "bytes_written", "cleaned", "memory_bytes", "memory_peak_bytes", "memory_mean_bytes",
            // Added by issue 13 (an added field keeps schema_version 1).
            "miss_classes",
        ]
        let images = try #require(object["images"] as? [[String: Any]])
        for im in images {
            #expect(
                Set(im.keys) == [
                    "index", "l2", "refcount", "clusters_allocated", "l2_tables_allocated", "refcount_blocks_allocated",
                    "refcount_table_growths", "clusters_freed", "cow_bytes_read", "cow_bytes_written", "cow_skipped",
                    "guest_bytes_read", "guest_bytes_written", "direct_metadata_bytes_written", "preallocation_probes",
                    "host_length_bytes", "host_allocated_bytes",
                ])
            #expect(Set((im["l2"] as? [String: Any])?.keys ?? [:].keys) == cacheKeys)
            #expect(Set((im["refcount"] as? [String: Any])?.keys ?? [:].keys) == cacheKeys)
            for cache in ["l2", "refcount"] {
                let c = try #require(im[cache] as? [String: Any])
                let classes = try #require(c["miss_classes"] as? [String: Int])
                #expect(Set(classes.keys) == ["cold", "evicted", "cleaned", "discarded"])
                #expect(classes.values.reduce(0, +) == c["misses"] as? Int)
            }
        }
        let totals = try #require(object["totals"] as? [String: Any])
        #expect(Set(totals.keys) == ["l2", "refcount", "host_flushes"])
        #expect(Set((totals["l2"] as? [String: Any])?.keys ?? [:].keys) == cacheKeys)
        let ops = try #require(object["requests_by_op"] as? [String: Int])
        #expect(ops == ["read": 1, "write": 1, "discard": 0, "write_zeroes": 0, "flush": 0])
        #expect(object["requests"] as? Int == 2)
        // TV1's write allocates one data cluster and one L2 table in the top image.
        #expect(images[1]["clusters_allocated"] as? Int == 1 && images[1]["l2_tables_allocated"] as? Int == 1)
    }

    @Test("a report encoded and decoded back is the same document (a chain with writes, timestamps and cleaning)")
    func roundTrip() throws {
        var config = SimulationConfig(virtualSize: 64 << 20, chainLength: 2, populate: .full, populateMode: .data)
        try config.parseCreateOptions("cluster_size=4K", layers: [1: "extended_l2=on,cluster_size=16K"])
        try config.parseDriveOptions("l2-cache-size=8K,cache-clean-interval=1,backing.refcount-cache-size=1")
        var records: [TraceRecord] = []
        for i in 0..<200 {
            let op: TraceRecord.Op = i % 3 == 0 ? .read : (i % 7 == 0 ? .discard : .write)
            records.append(TraceRecord(time: Double(i) * 0.37, op: op, offset: UInt64(i * 7919 % 256) << 18, length: 4096))
        }
        var reader = ArrayTraceReader(records)
        let report = try Simulation.run(config: config, reader: &reader)
        let document = SimulationDocument(report: report, config: config)
        // The run did something in every part of the document.
        #expect(document.images[1].l2.evictions > 0 && document.images[1].l2.cleaned ?? 0 > 0)
        #expect(document.durationSeconds == 73.63)
        #expect(document.config.createOptions == "cluster_size=4096")
        #expect(document.config.images.map(\.clusterSize) == [4096, 16384])
        let text = try ReportFormat.json(document)
        let decoded = try JSONDecoder().decode(SimulationDocument.self, from: Data(text.utf8))
        #expect(decoded == document)
        #expect(try ReportFormat.json(report, config: config) == text)
    }

    @Test("a document without schema_version is not one", arguments: ["{}", "{\"requests\": 1}"])
    func decodeNeedsSchemaVersion(_ json: String) {
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(SimulationDocument.self, from: Data(json.utf8)) }
    }

    @Test(
        "validate --format json: schema_version 1 and TV6's counts in the shared Metrics spelling, both sides",
        .requires(QemuTools.io))
    func validateJSON() throws {
        let path = try CLITests.trace(Self.tv6)
        let (status, out, err) = try CLIRun.run(["validate", path] + Self.tv6Options + ["--format", "json"])
        #expect(status == 0, "\(out)\(err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(object["schema_version"] as? Int == 1)
        #expect(object["outcome"] as? String == "identical")
        let image = try #require((object["images"] as? [[String: Any]])?.first)
        for side in ["simulated", "qemu"] {
            let l2 = try #require((image[side] as? [String: Any])?["l2"] as? [String: Any])
            // The events cannot tell dirty evictions, cleaning or memory: those keys are absent.
            #expect(
                Set(l2.keys) == [
                    "lookups", "hits", "misses", "hit_rate", "miss_rate", "empty_gets", "evictions", "writebacks", "flushes",
                    "bytes_read", "bytes_written",
                ])
            Self.checkTV6(l2: l2)
        }
    }
}

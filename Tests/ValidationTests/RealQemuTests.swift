import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// The spec's test vectors (qcow2-model.md §16) replayed through the installed QEMU 7.2: these
/// prove both the spec and the replay/attribution machinery.
@Suite("real QEMU test vectors", .requires(QemuTools.io))
struct RealQemuTests {
    let validator = Validator(runner: QemuTools.runner)

    /// TV1, exactly as listed (53 lines, `co` removed).
    static let tv1 = """
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_replace_entry is_l2_cache 0 index 0
        qcow2_cache_get_read is_l2_cache 0 index 0
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_flush is_l2_cache 0
        qcow2_cache_entry_flush is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 0
        qcow2_cache_get_replace_entry is_l2_cache 1 index 0
        qcow2_cache_get_read is_l2_cache 1 index 0
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_flush is_l2_cache 1
        qcow2_cache_entry_flush is_l2_cache 1 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 0 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_get is_l2_cache 1 offset 0x40000 read_from_disk 1
        qcow2_cache_get_done is_l2_cache 1 index 0
        qcow2_cache_flush is_l2_cache 1
        qcow2_cache_entry_flush is_l2_cache 1 index 0
        qcow2_cache_flush is_l2_cache 0
        qcow2_cache_entry_flush is_l2_cache 0 index 0
        qcow2_cache_flush is_l2_cache 0
        qcow2_cache_flush is_l2_cache 1
        qcow2_cache_flush is_l2_cache 0
        """

    @Test("TV1: fresh 1 GiB image, write 0 4k + read 0 4k, writeback: the spec's 53 lines")
    func tv1() throws {
        let all = SpecNotation.qemuLines(Self.tv1)
        #expect(all.count == 53)
        let config = SimulationConfig(virtualSize: 1 << 30, cacheMode: .writeback)
        let input = ValidationInput(records: TraceText.records("W 0 4k\nR 0 4k"))
        let replay = try validator.replay(config: config, input: input)
        #expect(replay.tool == .qemuIO)
        #expect(replay.log.openEvents.isEmpty)
        #expect(replay.log.requestStarts.count == 2)
        #expect(Array(replay.log.events) == all)
        #expect(Array(replay.log.events(ofRequest: 0)) == Array(all[0..<44]))
        #expect(Array(replay.log.events(ofRequest: 1)) == Array(all[44..<46]))
        #expect(Array(replay.log.closeEvents) == Array(all[46...]))
        #expect(replay.log.pooled == [false, false])

        // The full validator agrees with the spec's split into requests, and says so.
        let expected = makeLog(requests: [Array(all[0..<44]), Array(all[44..<46])], close: Array(all[46...]))
        let sizes = [ImageCacheSizes(l2EntryBytes: 65536, l2Entries: 2, refcountEntryBytes: 65536, refcountEntries: 4)]
        let report = Validator.report(
            config: config, input: input, expected: expected, replay: replay, sizes: sizes, keptDirectory: nil)
        #expect(report.identical)
        #expect(report.exitCode == 0)
        #expect(report.text().hasPrefix("identical"))
        let l2 = report.images[0].qemu.l2
        #expect(l2.lookups == 6 && l2.misses == 1 && l2.missesReadFromDisk == 0 && l2.writebacks == 2 && l2.flushes == 3)
        #expect(l2.bytesWritten == 2 * 65536)
        let rc = report.images[0].qemu.refcount
        #expect(rc.lookups == 13 && rc.misses == 1 && rc.missesReadFromDisk == 1 && rc.bytesRead == 65536 && rc.writebacks == 2)
        #expect(report.simulatedCacheBytes == 6 * 65536)
        #expect(report.json().contains("\"identical\" : true"))
    }

    @Test("TV2/TV10: writethrough (qemu-io's default): overwrite and explicit flush")
    func tv10() throws {
        let config = SimulationConfig(virtualSize: 1 << 30, cacheMode: .writethrough)
        let input = ValidationInput(records: TraceText.records("W 0 4k\nW 4k 4k\nF"))
        let expected = makeLog(
            requests: [
                SpecNotation.events(
                    """
                    RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
                    L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
                    L2 get 0x40000 hit 0 (x2) ; RC get 0x20000 hit 0 (x7) ; L2 get 0x40000 hit 0 (x2)
                    flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC
                    """),
                SpecNotation.events("L2 get 0x40000 hit 0 ; flush L2 ; flush RC"),
                SpecNotation.events("flush L2 ; flush RC"),
            ],
            close: SpecNotation.events("flush L2 ; flush RC ; flush L2 ; flush RC"))
        let report = try validator.validate(config: config, input: input, expected: expected)
        #expect(report.identical, "\(report.text())")
    }

    static let tv6Reads = "R 0 4k\nR 32M 4k\nR 0 4k\nR 64M 4k\nR 32M 4k\nR 1G 4k"

    static func tv6Config(_ l2: String, readOnly: Bool = false) -> SimulationConfig {
        // `l2-cache-size=8K`, `=12K`: QEMU's size syntax.
        var config = SimulationConfig(
            virtualSize: 4 << 30, populate: .full, populateMode: .metadata,
            driveOptions: DriveOptions([CacheOptions(l2CacheSize: try? QemuSize.parse(Substring(l2)).get())]))
        config.readOnly = readOnly
        return config
    }

    /// TV6's request events (the same read-write and read-only).
    static let tv6With8K = [
        "L2 get 0x40000 miss 0", "L2 get 0x41000 miss 1", "L2 get 0x40000 hit 0", "L2 get 0x42000 miss 1",
        "L2 get 0x41000 miss 0",
        "L2 get 0x40060000 miss 1",
    ]

    @Test("TV6: LRU stamp at release and start index, l2-cache-size=8K and 12K, preallocated 4 GiB, read-only (qemu-io -r)")
    func tv6() throws {
        let cases: [(String, [String])] = [
            ("8K", Self.tv6With8K),
            (
                "12K",
                [
                    "L2 get 0x40000 miss 1", "L2 get 0x41000 miss 2", "L2 get 0x40000 hit 1", "L2 get 0x42000 miss 0",
                    "L2 get 0x41000 hit 2",
                    "L2 get 0x40060000 miss 1",
                ]
            ),
        ]
        for (size, lines) in cases {
            // The spec's run used -r: the read-only close is 2 flush lines (§10).
            let expected = makeLog(
                requests: lines.map { SpecNotation.events($0) }, close: SpecNotation.events("flush L2 ; flush RC"))
            let config = Self.tv6Config(size, readOnly: true)
            let report = try validator.validate(
                config: config, input: ValidationInput(records: TraceText.records(Self.tv6Reads)), expected: expected)
            #expect(report.identical, "l2-cache-size=\(size)\n\(report.text())")
            #expect(report.argv.contains("-r"))
            // Read-write, the close is the writable one (4 flush lines).
            let writable = makeLog(
                requests: lines.map { SpecNotation.events($0) },
                close: SpecNotation.events("flush L2 ; flush RC ; flush L2 ; flush RC"))
            let rw = try validator.validate(
                config: Self.tv6Config(size), input: ValidationInput(records: TraceText.records(Self.tv6Reads)),
                expected: writable)
            #expect(rw.identical, "l2-cache-size=\(size), read-write\n\(rw.text())")
            #expect(!rw.argv.contains("-r"))
        }
    }

    @Test("a wrong eviction in the expected log is caught and the report names its request")
    func mutatedEviction() throws {
        // Request 3 (read 64M) really evicts index 1; pretend the simulator chose index 0.
        var lines = Self.tv6With8K
        lines[3] = "L2 get 0x42000 miss 0"
        let expected = makeLog(
            requests: lines.map { SpecNotation.events($0) },
            close: SpecNotation.events("flush L2 ; flush RC ; flush L2 ; flush RC"))
        let input = ValidationInput(records: TraceText.records(Self.tv6Reads), fileName: "tv6.trace")
        let report = try validator.validate(config: Self.tv6Config("8K"), input: input, expected: expected)
        #expect(!report.identical)
        #expect(report.exitCode == 1)
        let d = try #require(report.firstDivergence)
        #expect(d.request == 3)
        #expect(d.traceLocation == "4")
        #expect(d.eventIndex == 1)
        #expect(d.reason == "event differs")
        #expect(d.actual[1] == "qcow2_cache_get_replace_entry image 0 is_l2_cache 1 index 1")
        #expect(d.expected[1] == "qcow2_cache_get_replace_entry image 0 is_l2_cache 1 index 0")
        #expect(report.divergentSpans == 1)
        let text = report.text()
        #expect(text.hasPrefix("divergent"))
        #expect(text.contains("first divergence at request 3 (trace line 4), event 1"))
    }

    @Test("backing chain: a read through a fresh overlay is attributed to the backing image (§6.1, §10)")
    func chainAttribution() throws {
        let config = SimulationConfig(
            virtualSize: 1 << 30, chainLength: 2, populate: .ranges([ByteRange(start: 0, length: 256 << 10)]), populateMode: .data
        )
        let input = ValidationInput(records: TraceText.records("R 0 4k"))
        // The fresh top has no L2 table (MAP without cache access); the backing's MAP misses.
        // Close: the writable top prints 4 flush lines, then the read-only backing 2.
        let expected = makeLog(
            requests: [SpecNotation.events("L2 get 0x40000 miss 0", image: 0)],
            close: SpecNotation.events("flush L2 ; flush RC ; flush L2 ; flush RC", image: 1)
                + SpecNotation.events("flush L2 ; flush RC", image: 0))
        let report = try validator.validate(config: config, input: input, expected: expected)
        #expect(report.identical, "\(report.text())")
        #expect(report.images[0].qemu.l2.lookups == 1)
        #expect(report.images[0].qemu.l2.misses == 1)
        #expect(report.images[1].qemu.l2.lookups == 0)
        #expect(report.images[1].qemu.l2.flushes == 2)
        #expect(report.images[0].qemu.l2.flushes == 1)
    }

    @Test("--image: the user's file is copied, never modified (byte-identical afterwards)")
    func imageUntouched() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let user = dir + "/user.qcow2"
        _ = try QemuTools.runner.runChecked(
            ProcessRequest(executable: "qemu-img", arguments: ["create", "-q", "-f", "qcow2", user, "64M"]))
        _ = try QemuTools.runner.runChecked(
            ProcessRequest(executable: "qemu-io", arguments: ["-c", "write -q 0 1M", "-f", "qcow2", user]))
        let before = try Data(contentsOf: URL(fileURLWithPath: user))
        let keep = dir + "/kept"
        let config = SimulationConfig(virtualSize: 64 << 20, imageFile: user)
        let v = Validator(runner: QemuTools.runner, options: ValidatorOptions(keepDirectory: keep))
        let replay = try v.replay(
            config: config, input: ValidationInput(records: TraceText.records("W 2M 64k\nD 0 1M\nZ 4M 128k\nF")))
        #expect(replay.log.requestStarts.count == 4)
        let after = try Data(contentsOf: URL(fileURLWithPath: user))
        #expect(before == after)
        // The copy was written to (it is no longer identical to the user's file).
        let copy = try Data(contentsOf: URL(fileURLWithPath: keep + "/base.qcow2"))
        #expect(copy != before)
        #expect(FileManager.default.fileExists(atPath: keep + "/qemu-trace.log"))
    }

    @Test("temporary directories are removed without --keep")
    func tempRemoved() throws {
        let parent = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let v = Validator(runner: QemuTools.runner, options: ValidatorOptions(temporaryParent: parent))
        let replay = try v.replay(
            config: SimulationConfig(virtualSize: 1 << 20), input: ValidationInput(records: TraceText.records("R 0 4k")))
        #expect(replay.log.requestStarts.count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent).isEmpty)
    }

    @Test("a failing qemu-io reports its argv, exit status and the tail of its output")
    func failingQemuIO() throws {
        // A value the typed options hold but QEMU refuses when it opens the image.
        let config = SimulationConfig(virtualSize: 1 << 30, driveOptions: DriveOptions([CacheOptions(l2CacheEntrySize: 1000)]))
        do {
            _ = try validator.replay(config: config, input: ValidationInput(records: TraceText.records("R 0 4k")))
            Issue.record("expected a failure")
        } catch let error as ValidationError {
            #expect(error.exitCode == 70)
            guard case .toolFailed(let argv, let status, let tail) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(argv.first == "qemu-io")
            #expect(argv.contains { $0.contains("l2-cache-entry-size=1000") })
            #expect(status == 1)
            #expect(tail.contains("L2 cache entry size must be a power of two between 512 and the cluster size (65536)"))
            #expect(error.description.contains("failed with exit status 1"))
        }
    }

    @Test("a request longer than qemu-io's limit is split and still one request")
    func longRequest() throws {
        let config = SimulationConfig(virtualSize: 5 << 30)
        let replay = try validator.replay(config: config, input: ValidationInput(records: TraceText.records("Z 0 5G\nR 0 4k")))
        #expect(replay.log.requestStarts.count == 2)
    }
}

@Suite("real qemu-system: cache-clean-interval (TV9)", .requires(QemuTools.system))
struct RealQemuSystemTests {
    @Test("TV9: an idle gap longer than twice the interval empties the entry; a shorter one does not")
    func tv9() throws {
        let config = SimulationConfig(
            virtualSize: 1 << 30,
            populate: .ranges([ByteRange(start: 0, length: 64 << 10), ByteRange(start: 600 << 20, length: 64 << 10)]),
            populateMode: .data, driveOptions: try DriveOptions(parsing: "cache-clean-interval=1"))
        let validator = Validator(runner: QemuTools.runner)
        for (gap, second) in [(2.5, "L2 get 0x40000 miss 0"), (1.5, "L2 get 0x40000 hit 0")] {
            let recs = [
                TraceRecord(time: 0.3, op: .read, offset: 0, length: 4096),
                TraceRecord(time: 0.3 + gap, op: .read, offset: 0, length: 4096),
            ]
            let expected = makeLog(
                requests: [SpecNotation.events("L2 get 0x40000 miss 0"), SpecNotation.events(second)], close: [])
            let report = try validator.validate(config: config, input: ValidationInput(records: recs), expected: expected)
            #expect(report.tool == "qemu-system")
            #expect(!report.closeCompared)
            #expect(report.identical, "gap \(gap)\n\(report.text())")
            #expect(report.text().contains("close not compared"))
        }
    }

    @Test("the simulator's clean-interval model agrees with qemu-system on idle gaps (TV9)")
    func simulatorTV9() throws {
        let config = SimulationConfig(
            virtualSize: 1 << 30, populate: .ranges([ByteRange(start: 0, length: 64 << 10)]), populateMode: .data,
            driveOptions: try DriveOptions(parsing: "cache-clean-interval=1"))
        let recs = [
            TraceRecord(time: 0.3, op: .read, offset: 0, length: 4096),
            TraceRecord(time: 2.8, op: .read, offset: 0, length: 4096),
            TraceRecord(time: 3.3, op: .read, offset: 0, length: 4096),
        ]
        let input = ValidationInput(records: recs)
        let (log, sizes) = try SimulatorValidationTests.simulate(config, input)
        let report = try Validator(runner: QemuTools.runner).validate(config: config, input: input, expected: log, sizes: sizes)
        #expect(report.identical, "\(report.text())")
        // gap 2.5 s: dropped and missed again; gap 0.5 s: still cached.
        #expect(report.images[0].qemu.l2.misses == 2)
        #expect(report.images[0].qemu.l2.hits == 1)
    }
}

import Foundation
import Testing

/// The `qcow2sim` executable's contract for bad input: a located message, a sysexits code and no
/// half-written output. Runs the binary SwiftPM built next to the test bundle.
@Suite struct CLITests {
    static let binary: URL = {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [dir, dir.deletingLastPathComponent()].map { $0.appendingPathComponent("qcow2sim") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }()

    /// Runs qcow2sim with `args`; returns (status, stdout, stderr).
    static func run(_ args: [String]) throws -> (Int32, String, String) { try CLIRun.run(args) }

    /// A temporary trace file with `text`.
    static func trace(_ text: String, name: String = "t.csv") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static let cases: [(String, [String], Int32, String)] = [
        ("R,0,4K\nX,1,2\n", ["--size", "1G"], 65, "{T}:2: error: invalid op 'X' (expected R, W, D, Z, ZU or F)\n"),
        (
            "R,0,4K\nR,1G,4K\n", ["--size", "1G"], 65,
            "{T}:2: error: request at offset 1073741824 length 4096 ends beyond the disk size 1073741824 (use --beyond wrap or clip)\n"
        ),
        (
            "R,0,4K\n", ["--size", "1Q"], 64,
            "qcow2sim simulate: error: invalid value '1Q' for --size (expected bytes, optionally with a K, M, G or T suffix)\n"
        ),
        (
            "R,0,4K\n", ["--size", "1G", "--drive", "l2-cache-size=1X"], 64,
            "qcow2sim simulate: error: --drive: Parameter 'l2-cache-size' expects a non-negative number below 2^64\n"
        ),
        (
            "R,0,4K\n", ["--size", "1G", "--drive", "cache-size=64K,l2-cache-size=128K"], 64,
            "qcow2sim simulate: error: --drive: l2-cache-size may not exceed cache-size\n"
        ),
        (
            "R,0,4K\n", ["--size", "1G", "-o", "cluster_size=3K"], 64,
            "qcow2sim simulate: error: -o: Cluster size must be a power of two between 512 and 2048k\n"
        ),
        (
            "R,0,4K\n", ["--size", "1G", "--policy", "bogus"], 64,
            "qcow2sim simulate: error: unknown policy 'bogus' (expected one of: qemu, lru, fifo, clock, 2q, arc, s3fifo, sieve, opt)\n"
        ),
        (
            "R,0,4K\n", ["--size", "1G", "--format", "xml"], 64,
            "qcow2sim simulate: error: invalid value 'xml' for --format (expected one of: text, json, csv, html)\n"
        ),
        ("R,0,4K\n", [], 64, "qcow2sim simulate: error: missing --size SIZE (or --image FILE)\n"),
        ("W,0,4K\n", ["--size", "1G", "--read-only"], 65, "{T}:1: error: write request on an image opened read-only\n"),
    ]

    @Test(arguments: cases)
    func badInput(_ text: String, _ args: [String], _ status: Int32, _ message: String) throws {
        let path = try Self.trace(text)
        let (s, out, err) = try Self.run(["simulate", path] + args)
        #expect(s == status)
        #expect(err == message.replacingOccurrences(of: "{T}", with: path))
        #expect(out.isEmpty)
    }

    @Test func unknownOptionListsTheValidOnes() throws {
        let path = try Self.trace("R,0,4K\n")
        let (s, _, err) = try Self.run(["simulate", path, "--size", "1G", "--bogus"])
        #expect(s == 64)
        #expect(
            err.hasPrefix("qcow2sim simulate: error: unknown option '--bogus' (valid options: --beyond, --cache-mode, --chain,"))
    }

    @Test func missingTraceIsNoInput() throws {
        let (s, _, err) = try Self.run(["simulate", "/nonexistent/trace.csv", "--size", "1G"])
        #expect(s == 66)
        #expect(err == "/nonexistent/trace.csv: error: cannot open: No such file or directory\n")
    }

    @Test func noHalfWrittenOutputOnBadData() throws {
        let path = try Self.trace("W,0,4K\nR,0,4K\nbad line\n")
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        let report = dir.appendingPathComponent("report.json").path
        let events = dir.appendingPathComponent("events.log").path
        let (s, _, _) = try Self.run([
            "simulate", path, "--size", "1G", "--format", "json", "--output", report, "--events", events,
        ])
        #expect(s == 65)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(left == ["t.csv"])
    }

    @Test func eventsFileUsesImageNumbers() throws {
        let path = try Self.trace("W,0,4K\nR,0,4K\n")
        let events = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("e.log").path
        let (s, _, _) = try Self.run(["simulate", path, "--size", "1G", "--events", events])
        #expect(s == 0)
        let lines = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n")
        // TV1: 53 events; the first is the refcount-block GET of FIND_FREE.
        #expect(lines.count == 53)
        #expect(lines.first == "qcow2_cache_get image 0 is_l2_cache 0 offset 0x20000 read_from_disk 1")
    }

    @Test func imageThatIsNotQcow2IsLocated() throws {
        let path = try Self.trace("R,0,4K\n")
        let image = try Self.trace("not a qcow2 image\n", name: "disk.img")
        let (s, out, err) = try Self.run(["simulate", path, "--image", image])
        #expect(s == 65)
        #expect(out.isEmpty)
        #expect(
            err == "\(image): byte 0: error: not a qcow2 file: magic bytes are 6e 6f 74 20, expected 51 46 49 fb ('QFI\\xfb')\n")
    }

    @Test("trace convert keeps write-zeroes with unmap: QEMU's flags 0x6 become ZU, flags 0x2 Z")
    func convertKeepsUnmap() throws {
        // blk_co_pwritev lines as qemu-io 7.2 prints them for `write -z -u` (0x6) and `write -z` (0x2).
        let log = try Self.trace(
            """
            blk_co_pwritev blk 0x55a437887990 bs 0x55a437892be0 offset 0 bytes 65536 flags 0x6
            blk_co_pwritev blk 0x55a437887990 bs 0x55a437892be0 offset 65536 bytes 4096 flags 0x2

            """, name: "q.log")
        let out = URL(fileURLWithPath: log).deletingLastPathComponent().appendingPathComponent("n.csv").path
        let (s, _, err) = try Self.run(["trace", "convert", log, "-o", out])
        #expect(s == 0, "\(err)")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "op,offset,length\nZU,0,65536\nZ,65536,4096\n")
    }

    @Test(
        "--layer: per-image create options and populate plans, with located usage errors",
        arguments: [
            (
                ["--chain", "2", "--layer", "2:-o=cluster_size=4K"], 64,
                "qcow2sim simulate: error: invalid value '2:-o=cluster_size=4K' for --layer (image 2, but --chain is 2: 0 to 1)\n"
            ),
            (
                ["--chain", "2", "--layer", "1:size=4K"], 64,
                "qcow2sim simulate: error: invalid value '1:size=4K' for --layer (expected N:-o=OPTS, N:populate=WHAT or N:populate-mode=MODE)\n"
            ),
            (
                ["--chain", "2", "--layer", "1:-o=compat=0.10,extended_l2=on"], 64,
                "qcow2sim simulate: error: --layer 1: -o: Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)\n"
            ),
            (
                ["--chain", "2", "--layer", "1:populate=full", "--layer", "1:populate-mode=metadata"], 64,
                "qcow2sim simulate: error: --layer 1: Backing file and preallocation can only be used at the same time if extended_l2 is on\n"
            ),
            (
                ["--chain", "3", "--layer", "1:-o=compat=0.10", "--layer", "1:populate=0:1M", "--layer", "0:-o=cluster_size=4K"],
                0, ""
            ),
        ])
    func layers(_ args: [String], _ status: Int32, _ message: String) throws {
        let path = try Self.trace("W,0,4K\nR,0,4K\n")
        let (s, _, err) = try Self.run(["simulate", path, "--size", "64M"] + args)
        #expect(s == status)
        #expect(err == message)
    }
}

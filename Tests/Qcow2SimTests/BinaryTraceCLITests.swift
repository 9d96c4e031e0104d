import Foundation
import Testing

/// `generate --binary` and `trace convert --to binary` through the built executable.
@Suite struct BinaryTraceCLITests {
    static func directory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-bin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func generateBinaryEqualsGenerateCSV() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let csv = dir.appendingPathComponent("g.csv").path
        let bin = dir.appendingPathComponent("g.q2t").path
        let back = dir.appendingPathComponent("back.csv").path
        let spec = ["generate", "--pattern", "zipf", "--count", "500", "--size", "8G", "--read-ratio", "0.5", "--seed", "3"]
        #expect(try CLITests.run(spec + ["-o", csv]).0 == 0)
        #expect(try CLITests.run(spec + ["--binary", "-o", bin]).0 == 0)
        let b = try Data(contentsOf: URL(fileURLWithPath: bin))
        // 32-byte header announcing 500 records, then 500 × 32 bytes.
        #expect(b.count == 32 + 500 * 32)
        #expect(Array(b[16..<24]) == [0xF4, 0x01, 0, 0, 0, 0, 0, 0])
        #expect(try CLITests.run(["trace", "convert", bin, "-o", back]).0 == 0)
        #expect(try String(contentsOfFile: back, encoding: .utf8) == String(contentsOfFile: csv, encoding: .utf8))
        // The same simulation report from either form.
        let sim = ["--size", "8G", "--drive", "l2-cache-size=64K"]
        let fromCSV = try CLITests.run(["simulate", csv] + sim)
        let fromBinary = try CLITests.run(["simulate", bin] + sim)
        #expect(fromCSV.0 == 0)
        #expect(fromBinary.0 == 0)
        #expect(fromBinary.1 == fromCSV.1)
    }

    @Test func convertToBinaryCountsRecords() throws {
        let csv = try CLITests.trace("time,op,offset,length\n0,W,0,4K\n0.5,Z,64K,64K\n1,F,0,0\n")
        let dir = URL(fileURLWithPath: csv).deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bin = dir.appendingPathComponent("t.q2t").path
        let (status, _, err) = try CLITests.run(["trace", "convert", csv, "--to", "binary", "-o", bin])
        #expect(status == 0, "\(err)")
        let b = try Data(contentsOf: URL(fileURLWithPath: bin))
        #expect(b.count == 32 + 3 * 32)
        // A file output gets the exact count written back into its header.
        #expect(Array(b[16..<24]) == [3, 0, 0, 0, 0, 0, 0, 0])
        let (s2, out, _) = try CLITests.run(["trace", "info", bin])
        #expect(s2 == 0)
        #expect(out.hasPrefix("format         binary\n"))
    }

    @Test func corruptBinaryIsLocated() throws {
        // Header announcing 2 records; record 0 a 4 KiB read at 4 KiB without time; record 1 op 7.
        let header: [UInt8] =
            [0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0A, 0x00, 1, 0, 0, 0, 32, 0, 0, 0] + [2] + [UInt8](repeating: 0, count: 15)
        let noTime = [UInt8](repeating: 0xFF, count: 8)
        let k4: [UInt8] = [0, 0x10, 0, 0, 0, 0, 0, 0]
        let b = header + noTime + k4 + k4 + [0, 0, 0, 0, 0, 0, 0, 0] + noTime + k4 + k4 + [7, 0, 0, 0, 0, 0, 0, 0]
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.q2t").path
        try Data(b).write(to: URL(fileURLWithPath: path))
        let (status, _, err) = try CLITests.run(["simulate", path, "--size", "1G"])
        #expect(status == 65)
        #expect(err == "\(path): byte 64 (record 1): error: invalid op code 7 (expected 0 R, 1 W, 2 D, 3 Z, 4 ZU or 5 F)\n")
    }
}

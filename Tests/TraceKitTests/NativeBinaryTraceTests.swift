import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// The binary native trace format: layout, round trip, detection and every located error.
@Suite struct NativeBinaryTraceTests {
    // Bytes are built by hand here from the layout in the README, not by the writer, so the
    // reader and the writer are each checked against the documented format.
    static func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static let magic: [UInt8] = [0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0A, 0x00]

    static func header(count: UInt64, version: UInt32 = 1, recordSize: UInt32 = 32, reserved: UInt64 = 0) -> [UInt8] {
        magic + le32(version) + le32(recordSize) + le64(count) + le64(reserved)
    }

    static func record(
        time: Double?, op: UInt8, offset: UInt64, length: UInt64, flags: UInt8 = 0, reserved: [UInt8] = [0, 0, 0, 0, 0, 0]
    ) -> [UInt8] {
        le64(time?.bitPattern ?? UInt64.max) + le64(offset) + le64(length) + [op, flags] + reserved
    }

    static func read(_ b: [UInt8], format: TraceFormat? = nil) -> Outcome {
        TraceFixtures.readBytes(b, fileName: "t.bin", format: format)
    }

    @Test func writerProducesTheDocumentedBytes() {
        var w = NativeBinaryTraceWriter(count: 3)
        w.append(TraceRecord(time: 0.5, op: .write, offset: 1 << 20, length: 65536, flags: .fua))
        w.append(TraceRecord(op: .writeZeroes, offset: 4096, length: 8192, flags: .unmap))
        w.append(TraceRecord(time: 2, op: .flush, offset: 0, length: 0, flags: .preflush))
        let expected =
            Self.header(count: 3)
            + Self.record(time: 0.5, op: 1, offset: 1 << 20, length: 65536, flags: 1)
            + Self.record(time: nil, op: 4, offset: 4096, length: 8192)
            + Self.record(time: 2, op: 5, offset: 0, length: 0, flags: 4)
        #expect(w.bytes == expected)
        // The header by hand: magic, version 1, record size 32, count 3, reserved.
        #expect(
            Array(w.bytes.prefix(32)) == [
                0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0A, 0x00, 1, 0, 0, 0, 32, 0, 0, 0,
                3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ])
        // 0.5 is 0x3fe0000000000000.
        #expect(Array(w.bytes[32..<40]) == [0, 0, 0, 0, 0, 0, 0xE0, 0x3F])
    }

    @Test func readerDecodesEveryOpCode() {
        let b =
            Self.header(count: 6)
            + Self.record(time: 0, op: 0, offset: 0, length: 4096)
            + Self.record(time: 0.25, op: 1, offset: 8192, length: 512, flags: 1)
            + Self.record(time: nil, op: 2, offset: 1 << 30, length: 1 << 31)
            + Self.record(time: nil, op: 3, offset: 5, length: 7)
            + Self.record(time: 2.5, op: 4, offset: 65536, length: 65536)
            + Self.record(time: 3, op: 5, offset: 0, length: 0, flags: 4)
        guard case .success(let recs) = Self.read(b) else { Issue.record("\(Self.read(b))"); return }
        #expect(
            recs == [
                TraceRecord(time: 0, op: .read, offset: 0, length: 4096),
                TraceRecord(time: 0.25, op: .write, offset: 8192, length: 512, flags: .fua),
                TraceRecord(op: .discard, offset: 1 << 30, length: 1 << 31),
                TraceRecord(op: .writeZeroes, offset: 5, length: 7),
                TraceRecord(time: 2.5, op: .writeZeroes, offset: 65536, length: 65536, flags: .unmap),
                TraceRecord(time: 3, op: .flush, offset: 0, length: 0, flags: .preflush),
            ])
    }

    @Test func unknownCountReadsToTheEnd() {
        let b =
            Self.header(count: UInt64.max) + Self.record(time: nil, op: 0, offset: 0, length: 1)
            + Self.record(time: nil, op: 1, offset: 1, length: 1)
        guard case .success(let recs) = Self.read(b) else { Issue.record("failed"); return }
        #expect(recs.map(\.op) == [.read, .write])
    }

    @Test func locationIsByteOffsetAndRecordIndex() throws {
        let b =
            Self.header(count: 2) + Self.record(time: nil, op: 0, offset: 0, length: 1)
            + Self.record(time: nil, op: 0, offset: 1, length: 1)
        var r = NativeBinaryTraceReader(bytes: b, fileName: "t.bin")
        _ = try r.next()
        #expect(r.location == .record(byteOffset: 32, index: 0))
        _ = try r.next()
        #expect(r.location == .record(byteOffset: 64, index: 1))
        #expect(try r.next() == nil)
    }

    @Test func detectedByMagic() throws {
        let b = Self.header(count: 1) + Self.record(time: nil, op: 0, offset: 0, length: 1)
        #expect(TraceFormat.detect(b[...]) == .binary)
        #expect(TraceFormat.detect(Self.magic[...]) == .binary)
        // One byte off and it is not the binary format (the native reader then reports binary data).
        var bad = b
        bad[0] = 0x09
        #expect(TraceFormat.detect(bad[...]) != .binary)
        #expect(TraceFormat.detect(Array("R,0,4096\n".utf8)[...]) == .native)
        #expect(try TraceFormat.parse("binary") == .binary)
    }

    /// Each malformed file with its exact located message.
    static let errorCases: [(String, [UInt8], String)] = [
        ("empty file", [], "t.bin: error: empty trace (no records)"),
        (
            "truncated header", Array(header(count: 1).prefix(12)),
            "t.bin: error: truncated header: 12 bytes, expected a 32-byte qcow2sim binary trace header"
        ),
        (
            "bad magic", [0x89, 0x51, 0x32, 0x53, 0x54, 0x52, 0x0D, 0x0A] + Array(header(count: 0).dropFirst(8)),
            "t.bin: error: bad magic 89 51 32 53 54 52 0d 0a (expected 89 51 32 53 54 52 0a 00, a qcow2sim binary trace)"
        ),
        ("bad version", header(count: 0, version: 2), "t.bin: error: unsupported binary trace version 2 (expected 1)"),
        ("bad record size", header(count: 0, recordSize: 24), "t.bin: error: unsupported record size 24 (expected 32)"),
        (
            "header reserved", header(count: 0, reserved: 1),
            "t.bin: error: header bytes 24 to 31 are reserved and must be zero"
        ),
        ("no records", header(count: 0), "t.bin: error: empty trace (no records)"),
        ("no records, count unknown", header(count: UInt64.max), "t.bin: error: empty trace (no records)"),
        (
            "truncated record",
            header(count: 2) + record(time: nil, op: 0, offset: 0, length: 1)
                + Array(record(time: nil, op: 0, offset: 0, length: 1).prefix(20)),
            "t.bin: byte 64 (record 1): error: truncated record: 20 bytes left, expected a 32-byte record"
        ),
        (
            "truncated record, count unknown",
            header(count: UInt64.max) + Array(record(time: nil, op: 0, offset: 0, length: 1).prefix(31)),
            "t.bin: byte 32 (record 0): error: truncated record: 31 bytes left, expected a 32-byte record"
        ),
        (
            "bad op code",
            header(count: 2) + record(time: nil, op: 0, offset: 0, length: 1) + record(time: nil, op: 6, offset: 0, length: 1),
            "t.bin: byte 64 (record 1): error: invalid op code 6 (expected 0 R, 1 W, 2 D, 3 Z, 4 ZU or 5 F)"
        ),
        (
            "bad flags", header(count: 1) + record(time: nil, op: 1, offset: 0, length: 1, flags: 2),
            "t.bin: byte 32 (record 0): error: invalid flags 0x02 (expected 0x01 FUA, 0x04 preflush, 0x08 volume or none)"
        ),
        (
            "record reserved bytes",
            header(count: 1) + record(time: nil, op: 1, offset: 0, length: 1, reserved: [0, 9, 0, 0, 0, 0]),
            "t.bin: byte 32 (record 0): error: record bytes 26 and 27 are reserved and must be zero"
        ),
        (
            "a volume without the volume flag",
            header(count: 1) + record(time: nil, op: 1, offset: 0, length: 1, reserved: [0, 0, 0, 0, 0, 9]),
            "t.bin: byte 32 (record 0): error: record bytes 28 to 31 (the volume) must be zero without flag 0x08"
        ),
        (
            "negative time", header(count: 1) + record(time: -1, op: 0, offset: 0, length: 1),
            "t.bin: byte 32 (record 0): error: invalid time -1.0 (expected non-negative finite seconds, or bits ffffffffffffffff for none)"
        ),
        (
            "infinite time", header(count: 1) + record(time: .infinity, op: 0, offset: 0, length: 1),
            "t.bin: byte 32 (record 0): error: invalid time inf (expected non-negative finite seconds, or bits ffffffffffffffff for none)"
        ),
        (
            "end beyond 2^64", header(count: 1) + record(time: nil, op: 0, offset: UInt64.max - 1, length: 2),
            "t.bin: byte 32 (record 0): error: request at offset 18446744073709551614 with length 2 ends beyond 2^64 bytes"
        ),
        (
            "fewer records than the header says",
            header(count: 3) + record(time: nil, op: 0, offset: 0, length: 1) + record(time: nil, op: 0, offset: 0, length: 1),
            "t.bin: byte 96 (record 2): error: record count mismatch: the header says 3 records but the file ends after 2"
        ),
        (
            "more records than the header says",
            header(count: 1) + record(time: nil, op: 0, offset: 0, length: 1) + record(time: nil, op: 0, offset: 0, length: 1),
            "t.bin: byte 64 (record 1): error: record count mismatch: the header says 1 records but the file holds more data"
        ),
        (
            "one stray byte after the announced records",
            header(count: 1) + record(time: nil, op: 0, offset: 0, length: 1) + [0],
            "t.bin: byte 64 (record 1): error: record count mismatch: the header says 1 records but the file holds more data"
        ),
    ]

    @Test(arguments: errorCases)
    func locatedErrors(_ name: String, _ bytes: [UInt8], _ expected: String) {
        guard case .failure(let message) = Self.read(bytes, format: .binary) else {
            Issue.record("\(name): no error")
            return
        }
        #expect(message == expected, "\(name)")
    }

    @Test func errorsExitWithDataError() {
        do {
            var r = NativeBinaryTraceReader(bytes: Self.header(count: 0, version: 9), fileName: "t.bin")
            _ = try r.next()
            Issue.record("no error")
        } catch let e as TraceError {
            #expect(e.exitCode == 65)
        } catch {
            Issue.record("\(error)")
        }
    }

    /// Every native CSV in the repository's Traces/, and the shared seed traces, read through the
    /// CSV reader, written binary and read back: the same records.
    @Test func csvToBinaryRoundTrip() throws {
        let files = RepoTraces.csvFiles()
        #expect(!files.isEmpty)
        for path in files {
            var csv = try TraceFile.open(path: path)
            var records: [TraceRecord] = []
            while let r = try csv.next() { records.append(r) }
            var w = NativeBinaryTraceWriter(count: UInt64(records.count))
            for r in records { w.append(r) }
            guard case .success(let back) = TraceFixtures.readBytes(w.bytes, fileName: "t.bin", format: nil) else {
                Issue.record("\(path): binary did not read back")
                continue
            }
            #expect(back == records, "\(path)")
        }
    }

    @Test func roundTripKeepsEveryOpAndFlag() {
        let records = [
            TraceRecord(time: 0.000125, op: .write, offset: 1 << 20, length: 65536),
            TraceRecord(time: 0.25, op: .read, offset: 0, length: 4096, flags: .fua),
            TraceRecord(time: 0.5, op: .discard, offset: 1 << 40, length: 1 << 30),
            TraceRecord(time: 0.5, op: .writeZeroes, offset: 512, length: 512),
            TraceRecord(time: 0.75, op: .writeZeroes, offset: 1024, length: 512, flags: .unmap),
            TraceRecord(time: 1, op: .flush, offset: 0, length: 0),
            TraceRecord(time: 1.5, op: .write, offset: UInt64.max - 4096, length: 4096, flags: [.fua, .preflush]),
        ]
        var w = NativeBinaryTraceWriter()
        for r in records { w.append(r) }
        #expect(w.count == 7)
        guard case .success(let back) = Self.read(w.bytes) else { Issue.record("failed"); return }
        #expect(back == records)
    }
}

/// The native CSV traces checked into the repository's Traces/ directory and the shared seeds.
enum RepoTraces {
    static let directory = Repository.path("Traces")

    static func csvFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".csv") }.sorted().map { (directory as NSString).appendingPathComponent($0) }
    }
}

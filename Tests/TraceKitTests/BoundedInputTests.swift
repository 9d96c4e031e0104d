import Foundation
import Testing

@testable import TraceKit

/// Issue 14 items 8 and 9 on the reading side: line length bounded while reading, timestamps
/// bounded, and `trace info`'s footprint from ranges.
@Suite struct BoundedInputTests {
    static let tooLong =
        "line is longer than 1048576 bytes (the limit for a text trace line; a binary file or one without line breaks?)"

    static func tempFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bounded-\(UUID().uuidString).csv").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func readAll(_ r: inout AnyTraceReader) throws -> [TraceRecord] {
        var out: [TraceRecord] = []
        while let x = try r.next() { out.append(x) }
        return out
    }

    /// A 2 MiB line (in memory: the whole line is there when it is checked).
    @Test func aTwoMebibyteLineInMemoryIsALocatedError() throws {
        let bytes = Array("R,0,4096\nR,0,".utf8) + [UInt8](repeating: UInt8(ascii: "1"), count: 2 << 20) + [0x0A]
        var r = try TraceFile.open(bytes: bytes, fileName: "long.csv", format: .native)
        #expect(throws: TraceError(file: "long.csv", location: .line(2), message: Self.tooLong)) { try Self.readAll(&r) }
    }

    /// The same from a file: the error comes before the line's end is read.
    @Test func aTwoMebibyteLineInAFileIsALocatedError() throws {
        let bytes = Array("R,0,4096\nR,0,".utf8) + [UInt8](repeating: UInt8(ascii: "1"), count: 2 << 20) + [0x0A]
        let path = try Self.tempFile(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var r = try TraceFile.open(path: path)
        #expect(throws: TraceError(file: path, location: .line(2), message: Self.tooLong)) { try Self.readAll(&r) }
    }

    /// Exactly 1 MiB (and 1 MiB plus `\r`) is still a line.
    @Test func aLineOfExactlyTheLimitIsAccepted() throws {
        let line = Array("R,0,4096".utf8) + [UInt8](repeating: 0x20, count: (1 << 20) - 8)
        for bytes in [line + [0x0A], line + [0x0D, 0x0A], line] {
            var r = try TraceFile.open(bytes: Array("W,0,512\n".utf8) + bytes, fileName: "edge.csv", format: .native)
            #expect(try Self.readAll(&r).count == 2)
        }
        let over = line + [0x20, 0x0A]
        var r = try TraceFile.open(bytes: over, fileName: "edge.csv", format: .native)
        #expect(throws: TraceError(file: "edge.csv", location: .line(1), message: Self.tooLong)) { try Self.readAll(&r) }
    }

    /// 8 MiB without a line break: the reader stops after about the limit and its buffer stays
    /// a few MiB (before, it buffered all 8 MiB, then complained about the NUL byte).
    @Test func inputWithoutLineBreaksIsReadOnlyUpToTheLimit() throws {
        let path = try Self.tempFile([UInt8](repeating: 0, count: 8 << 20))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let input = try TraceFile.openInput(path: path, decompress: false)
        var scanner = LineScanner(input)
        #expect(throws: TraceError(file: path, location: .line(1), message: Self.tooLong)) { try scanner.nextLine() }
        #expect(input.buffer.count <= 3 << 20)
        #expect(input.offset + UInt64(input.available) <= 3 << 20)
    }

    /// `/dev/zero` as a trace: an error, not unbounded growth (issue 14 item 9).
    @Test func devZeroIsAnError() throws {
        var r = try TraceFile.open(path: "/dev/zero", format: .native)
        #expect(throws: TraceError(file: "/dev/zero", location: .line(1), message: Self.tooLong)) { try Self.readAll(&r) }
        var detected = try TraceFile.open(path: "/dev/zero")
        #expect(throws: TraceError(file: "/dev/zero", location: .line(1), message: Self.tooLong)) { try Self.readAll(&detected) }
    }

    @Test func timestampsBeyondTheLimitAreLocatedErrors() throws {
        var r = try TraceFile.open(bytes: Array("0,R,0,4096\n1e20,R,0,4096\n".utf8), fileName: "t.csv", format: .native)
        #expect(
            throws: TraceError(
                file: "t.csv", location: .line(2),
                message:
                    "time 1e+20 s is beyond the limit of 4503599627370496 s (2^52; a clock in micro- or nanoseconds read as seconds? scale it with --time-scale)"
            )
        ) { try Self.readAll(&r) }
        // 1e12 s is fine (issue 14 item 8's hang, now bounded in the simulator).
        var ok = try TraceFile.open(bytes: Array("0,R,0,4096\n1e12,R,0,4096\n".utf8), fileName: "t.csv", format: .native)
        #expect(try Self.readAll(&ok).map(\.time) == [0, 1e12])
    }

    @Test func scalingPastTheLimitIsCaughtAfterScaling() throws {
        var o = TraceOptions()
        o.timeScale = 1e10
        var r = try TraceFile.open(
            bytes: Array("0,R,0,4096\n1e300,R,0,4096\n".utf8), fileName: "t.csv", format: .native, options: o)
        #expect(throws: TraceError(file: "t.csv", location: .line(2), message: "time inf is not a finite number of seconds")) {
            try Self.readAll(&r)
        }
    }

    @Test func generateRefusesAnIntervalPastTheLimit() throws {
        let spec = WorkloadSpec(count: 3, diskSize: 1 << 30, interval: 1e308)
        #expect(
            throws: TraceError(
                file: "generate", location: .file,
                message: "interval '1e+308' puts record 3 beyond the trace time limit of 4503599627370496 s (2^52)", exitCode: 64)
        ) { try spec.validate() }
        // The last record exactly at the limit is fine.
        let edge = WorkloadSpec(count: 2, diskSize: 1 << 30, interval: 0x1p52)
        #expect(Array(try WorkloadGenerator(edge)).map(\.time) == [0, 0x1p52])
    }

    /// `trace info` on `R,0,16T` (issue 14 item 9: 30 s and 1.6 GB): 2^44 / 2^16 clusters,
    /// 8192 clusters per L2 table, 64 KiB per table.
    @Test func footprintOfA16TiBReadByHand() throws {
        var s = TraceSummary()
        s.add(TraceRecord(op: .read, offset: 0, length: 16 << 40))
        #expect(s.footprintClusters == 268_435_456)
        #expect(s.footprintL2Tables == 32768)
        #expect(s.l2CacheBytesFullCoverage == 2_147_483_648)
        #expect(s.l2CacheBytesForSpan == 2_147_483_648)
    }

    /// 512-byte clusters (64 per L2 table): clusters {0, 10, 63, 64, 320} and the repeats and
    /// overlaps of them; tables {0, 1, 5}.
    @Test func footprintCountsSharedTablesOnce() throws {
        var s = TraceSummary(clusterSize: 512)
        let recs: [(UInt64, UInt64)] = [
            (0, 512), (63 * 512, 1024), (10 * 512, 100), (320 * 512, 512), (0, 512), (63 * 512 + 5, 600),
        ]
        for (off, len) in recs { s.add(TraceRecord(op: .write, offset: off, length: len)) }
        #expect(s.footprintClusters == 5)
        #expect(s.footprintL2Tables == 3)
        #expect(s.l2CacheBytesFullCoverage == 3 * 512)
        // Many scattered requests (more than one merge batch): clusters 0, 2, 4, …, 2·9999.
        var t = TraceSummary(clusterSize: 512)
        for k in stride(from: UInt64(19998), through: 0, by: -2) { t.add(TraceRecord(op: .read, offset: k * 512, length: 512)) }
        #expect(t.footprintClusters == 10000)
        #expect(t.footprintL2Tables == 313)  // clusters up to 19998: tables 0…312
    }

    /// Without a disk size a record may end past 2^64: counted up to the last byte, no trap.
    @Test func footprintNearTheTopOfTheAddressSpace() throws {
        var s = TraceSummary(clusterSize: 512)
        s.add(TraceRecord(op: .read, offset: .max - 511, length: 4096))
        #expect(s.footprintClusters == 1)
        #expect(s.footprintL2Tables == 1)
        // 2^55 clusters spanned, 64 per table, 512 bytes each.
        #expect(s.l2CacheBytesForSpan == 1 << 58)
    }
}

import Foundation
import Testing

@testable import TraceKit

/// The native CSV reader's fast path (plain lines parsed straight from the buffer) against its
/// general path (every line split into fields): the same records, the same locations and the
/// same errors, on every native trace in the repository and on malformed input.
@Suite struct NativeFastPathTests {
    /// Every record with its line, then the error (if any), read with the fast path on or off.
    static func outcome(_ bytes: [UInt8], fast: Bool, fileName: String = "t.csv") -> ([TraceRecord], [TraceLocation], String?) {
        var r = NativeTraceReader(bytes: bytes, fileName: fileName)
        r.fastPath = fast
        var records: [TraceRecord] = []
        var locations: [TraceLocation] = []
        do {
            while let x = try r.next() {
                records.append(x)
                locations.append(r.location)
            }
            return (records, locations, nil)
        } catch {
            return (records, locations, "\(error)")
        }
    }

    static func expectSame(_ bytes: [UInt8], _ name: String) {
        let fast = outcome(bytes, fast: true)
        let general = outcome(bytes, fast: false)
        #expect(fast.0 == general.0, "\(name): records")
        #expect(fast.1 == general.1, "\(name): locations")
        #expect(fast.2 == general.2, "\(name): error")
    }

    @Test func everyNativeTraceInTheRepository() throws {
        let files = RepoTraces.csvFiles()
        #expect(files.count >= 5)
        for path in files {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            let fast = Self.outcome(bytes, fast: true)
            #expect(fast.2 == nil, "\(path)")
            #expect(fast.0.count > 1000, "\(path)")
            Self.expectSame(bytes, path)
        }
    }

    /// Malformed and unusual lines after a plain start, so the fast path is active when it meets
    /// them: it must stop before each and leave it to the general path.
    static let mixedInputs: [String] = [
        "R,0,4096\nR,1,2,3,4\n",
        "R,0,4096\nR,0\n",
        "R,0,4096\nX,0,4096\n",
        "R,0,4096\nZU,0,4096\n",
        "R,0,4096\nRW,0,4096\n",
        "R,0,4096\nR,-1,4096\n",
        "R,0,4096\nR,1x,4096\n",
        "R,0,4096\nR,18446744073709551615,1\n",
        "R,0,4096\nR,99999999999999999999,1\n",
        "R,0,4096\nR,0000000000000000000001,1\n",
        "R,0,4096\nR,1,\n",
        "R,0,4096\nR,,1\n",
        "R,0,4096\n-1,R,0,1\n",
        "R,0,4096\n1.5.5,R,0,1\n",
        "R,0,4096\n1.,R,0,1\n2.25,W,4096,512\n",
        "R,0,4096\n1e-3,R,0,1\n",
        "R,0,4096\n0.000000000000000000000000000000000000000000001,R,0,1\n",
        "R,0,4096\n 1,R,0,1\n",
        "R,0,4096\nR, 0,1\n",
        "R,0,4096\nR,0 ,1\n",
        "R,0,4096\nR,1K,4K\nW,2M,64k\n",
        "R,0,4096\n\n# comment\nW,0,1\n",
        "R,0,4096\r\nW,0,1\r\nD,5,5\r\r\n",
        "R,0,4096\nW,0,1",
        "R,0,4096\nW,0,1\r",
        "R,0,4096\nR,0,40\u{0}96\n",
        "R,0,4096\nR,0,4096\tx\n",
        "time,op,offset,length\n0,R,0,1\n0.5,W,1,1\n0.25,R,0,1\n",
        "op,offset,length\nR,0,1\nop,offset,length\n",
        "0.5,F,0,0\n1,f,0,0\n2,z,8,8\n3,d,1,1\n",
        "R,0,4096\nR,1,2\nR,3,4\n\u{FF}\n",
    ]

    @Test(arguments: mixedInputs)
    func sameAsGeneralPath(_ input: String) {
        Self.expectSame(Array(input.utf8), input.debugDescription)
    }

    @Test(arguments: NativeTraceReaderTests.errorCases)
    func existingErrorCases(_ input: String, _ expected: String) {
        Self.expectSame(Array(input.utf8), input.debugDescription)
    }

    /// Plain lines across many 1 MiB chunk boundaries of a real file: the fast path may only
    /// parse lines complete in the buffer.
    @Test func linesAcrossChunkBoundaries() throws {
        var text = "time,op,offset,length\n"
        var expected: [TraceRecord] = []
        var i: UInt64 = 0
        while text.utf8.count < 3 * ByteInput.chunkSize + 100 {
            let t = Double(i) / 8
            text += "\(i / 8)\(i % 8 == 0 ? "" : ".\(String(Double(i % 8) / 8).dropFirst(2))"),W,\(i * 4096),\(4096 + i % 7)\n"
            expected.append(TraceRecord(time: t, op: .write, offset: i * 4096, length: 4096 + i % 7))
            i += 1
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fastpath-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("chunks.csv").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        var r = try NativeTraceReader(path: path)
        var got: [TraceRecord] = []
        while let x = try r.next() { got.append(x) }
        #expect(got.count == expected.count)
        #expect(got == expected)
        #expect(r.location == .line(expected.count + 1))
    }
}

extension NativeFastPathTests {
    /// Plain lines, then a line longer than the fast path's look-behind at the end of the input
    /// (no `\n` in reach): every record is still read, by the general path where needed.
    @Test func longLastLineWithoutNewline() {
        let long = "R,0," + String(repeating: "0", count: 600) + "4096"
        Self.expectSame(Array(("R,0,1\nW,1,1\n" + long).utf8), "long last line")
        Self.expectSame(Array(("R,0,1\nW,1,1\n" + long + "\nR,2,2\n").utf8), "long line in the middle")
    }
}

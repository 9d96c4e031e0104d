import Testing

@testable import TraceKit

@Suite struct TraceBenchmarksTests {
    /// The synthetic inputs parse to one record per I/O (D events) in the blktrace and blkparse
    /// forms, and to every one of the 4 × 2000 requests in the native CSV and binary forms.
    @Test func syntheticInputsParse() throws {
        let results = try TraceBenchmarks.parseThroughput(ios: 2000, repeats: 1)
        #expect(results.map(\.name) == ["blktrace binary", "blkparse text", "native CSV", "native binary"])
        #expect(results.map(\.records) == [2000, 2000, 8000, 8000])
        #expect(results[0].bytes == 2000 * 4 * 48)
        // A 32-byte header and 32 bytes per record.
        #expect(results[3].bytes == 32 + 8000 * 32)
    }
}

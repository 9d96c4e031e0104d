import Testing

@testable import TraceKit

@Suite struct TraceBenchmarksTests {
    /// The synthetic inputs parse to one record per I/O (D events), in both forms.
    @Test func syntheticInputsParse() throws {
        let results = try TraceBenchmarks.parseThroughput(ios: 2000, repeats: 1)
        #expect(results.map(\.records) == [2000, 2000])
        #expect(results[0].bytes == 2000 * 4 * 48)
    }
}

import Foundation
import Testing

@testable import TraceKit

/// Seeded mutation fuzzing over every reader: 10⁵ small inputs derived from valid seeds, each
/// read to the end or to its first error. A crash (trap, overflow, out-of-bounds) fails the run;
/// the seed of a failing input is printed by `TraceFuzz.input(seed:)` for replay.
@Suite struct FuzzTests {
    @Test func hundredThousandMutatedInputsDoNotCrash() throws {
        let corpus = TraceFuzz.seedCorpus(extraDirectory: TraceFixtures.available ? TraceFixtures.directory : nil)
        #expect(corpus.count >= 12)
        var stats = TraceFuzz.Stats()
        for seed in 0..<UInt64(100_000) {
            TraceFuzz.run(seed: seed, corpus: corpus, stats: &stats)
        }
        #expect(stats.inputs == 100_000)
        // The mutations must not all be rejected: some inputs still parse to records.
        #expect(stats.accepted > 1000)
        #expect(stats.rejected > 1000)
    }
}

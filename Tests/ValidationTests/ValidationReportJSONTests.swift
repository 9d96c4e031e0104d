import Foundation
import Qcow2Sim
import Testing
import TraceKit
import Validation

/// `validate --format json` as a `Codable` document: `schema_version`, the shared `Metrics`
/// spelling, and a report decoded back equal to the one encoded (spec TV6 against qemu-io).
@Suite("validate's JSON report", .enabled(if: Qemu.hasQemuIO, Qemu.skipIO))
struct ValidationReportJSONTests {
    let validator = Validator(runner: Qemu.runner)

    @Test("an identical and a divergent TV6 report decode back equal; the counts are TV6's, in Metrics' spelling")
    func roundTrip() throws {
        let input = ValidationInput(records: records(RealQemuTests.tv6Reads), fileName: "tv6.trace")
        let config = try RealQemuTests.tv6Config("8K", readOnly: true)
        let close = compact("flush L2 ; flush RC")
        let good = makeLog(requests: RealQemuTests.tv6With8K.map { compact($0) }, close: close)
        var lines = RealQemuTests.tv6With8K
        lines[3] = "L2 get 0x42000 miss 0"
        let bad = makeLog(requests: lines.map { compact($0) }, close: close)
        let sizes = [ImageCacheSizes(l2EntryBytes: 4096, l2Entries: 2, refcountEntryBytes: 65536, refcountEntries: 4)]
        for (expected, outcome) in [(good, "identical"), (bad, "divergent")] {
            let report = try validator.validate(config: config, input: input, expected: expected, sizes: sizes)
            let text = report.json()
            let decoded = try JSONDecoder().decode(ValidationReport.self, from: Data(text.utf8))
            #expect(decoded == report)
            #expect(decoded.schemaVersion == 1)
            #expect((outcome == "divergent") == (decoded.firstDivergence != nil))
            let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            #expect(object["schema_version"] as? Int == 1)
            #expect(object["outcome"] as? String == outcome)
            // QEMU's side is TV6 whatever the simulated log said.
            let l2 = report.images[0].qemu.l2
            #expect(l2.lookups == 6 && l2.hits == 1 && l2.misses == 5 && l2.emptyGets == 0 && l2.evictions == 3)
            #expect(l2.writebacks == 0 && l2.flushes == 1 && l2.bytesRead == 5 * 4096 && l2.bytesWritten == 0)
            #expect(l2.dirtyEvictions == nil && l2.cleaned == nil && l2.memoryBytes == nil)
        }
    }
}

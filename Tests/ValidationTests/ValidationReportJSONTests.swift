import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit
import Validation

/// `validate --format json` as a `Codable` document: `schema_version`, the shared `Metrics`
/// spelling, and a report decoded back equal to the one encoded (spec TV6 against qemu-io).
@Suite("validate's JSON report", .requires(QemuTools.io))
struct ValidationReportJSONTests {
    let validator = Validator(runner: QemuTools.runner)

    @Test("an identical and a divergent TV6 report decode back equal; QEMU's counts are TV6's, in Metrics' spelling")
    func roundTrip() throws {
        let input = ValidationInput(records: TraceText.records(RealQemuTests.tv6Reads), fileName: "tv6.trace")
        let config = RealQemuTests.tv6Config("8K", readOnly: true)
        for (misEvict, outcome) in [(nil, "identical"), (4, "divergent")] as [(Int?, String)] {
            // Lookup 4 (request 3, read 64M) picks a wrong victim: a divergent report.
            let (log, sizes) = try ExpectedRun.simulate(config: config, input: input, misEvictAtLookup: misEvict)
            let report = try validator.validate(config: config, input: input, expected: log, sizes: sizes)
            let text = report.json()
            let decoded = try JSONDecoder().decode(ValidationReport.self, from: Data(text.utf8))
            #expect(decoded == report)
            #expect(decoded.schemaVersion == 1)
            #expect((outcome == "divergent") == (decoded.firstDivergence != nil))
            let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            #expect(object["schema_version"] as? Int == 1)
            #expect(object["outcome"] as? String == outcome)
            // QEMU's side is TV6 (qcow2-model.md) whatever the simulation did.
            let l2 = report.images[0].qemu.l2
            #expect(l2.lookups == 6 && l2.hits == 1 && l2.misses == 5 && l2.emptyGets == 0 && l2.evictions == 3)
            #expect(l2.writebacks == 0 && l2.flushes == 1 && l2.bytesRead == 5 * 4096 && l2.bytesWritten == 0)
            #expect(l2.dirtyEvictions == nil && l2.cleaned == nil && l2.memoryBytes == nil)
        }
    }
}

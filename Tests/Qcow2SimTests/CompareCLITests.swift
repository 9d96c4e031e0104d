import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing

/// Issue 11 item 3: `compare` prints the baseline and candidates side by side; every row's
/// counts are `simulate`'s for that candidate, and `opt_misses` is `simulate --policy opt`'s.
@Suite struct CompareCLITests {
    static let guest = Repository.path("Traces/guest-ext4.trace.csv")

    /// `simulate`'s L2 misses and write-backs of the top image for `extra` options.
    static func simulated(_ extra: [String], drive: String = "l2-cache-size=64K") throws -> (misses: Int, writebacks: Int) {
        let (code, out, err) = try CLIRun.run(
            ["simulate", guest, "--size", "8G", "--drive", drive, "--format", "json"] + extra)
        #expect(code == 0, "\(err)")
        let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let images = try #require(object?["images"] as? [[String: Any]])
        let l2 = try #require(images[0]["l2"] as? [String: Any])
        return (try #require(l2["misses"] as? Int), try #require(l2["writebacks"] as? Int))
    }

    @Test func threeCandidatesAgainstQemuOnTheGuestTrace() throws {
        let (code, out, err) = try CLIRun.run([
            "compare", Self.guest, "--size", "8G", "--drive", "l2-cache-size=64K", "--baseline", "policy=qemu",
            "--candidate", "policy=lru", "--candidate", "policy=arc", "--candidate", "l2-cache-size=128K", "--format", "csv",
        ])
        #expect(code == 0, "\(err)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(
            lines.first
                == "trace,candidate,image,cache,misses,writebacks,bytes_read,memory_peak_bytes,delta_misses_pct,opt_misses,lookups,hit_rate")
        let rows = lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        // 4 specs × (image 0) × (l2, refcount).
        #expect(rows.count == 8)
        let l2 = rows.filter { $0[3] == "l2" }
        #expect(l2.map { $0[1] } == ["policy=qemu", "policy=lru", "policy=arc", "l2-cache-size=128K"])
        let qemu = try Self.simulated([])
        let opt = try Self.simulated(["--policy", "opt"])
        #expect(l2[0][4] == "\(qemu.misses)" && l2[0][5] == "\(qemu.writebacks)")
        #expect(l2[0][8] == "0.00")
        #expect(l2[0][9] == "\(opt.misses)")
        let lru = try Self.simulated(["--policy", "lru"])
        #expect(l2[1][4] == "\(lru.misses)")
        let arc = try Self.simulated(["--policy", "arc"])
        #expect(l2[2][4] == "\(arc.misses)")
        #expect(l2[2][8] == String(format: "%.2f", Double(arc.misses - qemu.misses) / Double(qemu.misses) * 100))
        // A --drive spec is added to the run's options (the later l2-cache-size wins, as in QEMU).
        let bigger = try Self.simulated([], drive: "l2-cache-size=128K")
        #expect(l2[3][4] == "\(bigger.misses)")
        let optBigger = try Self.simulated(["--policy", "opt"], drive: "l2-cache-size=128K")
        #expect(l2[3][9] == "\(optBigger.misses)")
        #expect(opt.misses <= min(qemu.misses, lru.misses, arc.misses))
    }

    @Test func badSpecsAreUsageErrors() throws {
        let (code, _, err) = try CLIRun.run([
            "compare", Self.guest, "--size", "8G", "--baseline", "policy=qemu", "--candidate", "policy=bogus",
        ])
        #expect(code == 64)
        #expect(err.contains("--candidate policy=bogus: unknown policy 'bogus'"))
        let (missing, _, merr) = try CLIRun.run(["compare", Self.guest, "--size", "8G", "--baseline", "policy=qemu"])
        #expect(missing == 64)
        #expect(merr.contains("missing --candidate SPEC"))
    }
}

import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// The eviction-policy seam: QEMU's policy (least recently *released*), textbook LRU and FIFO on
/// TV6's image and reads. Expected victims are worked out by hand from each policy's definition.
@Suite struct PolicyTests {
    /// TV6 (2 entries of 4 KiB, every lookup starts at slot 0) under `policy`.
    static func tv6(_ policy: String) throws -> [String] {
        var config = SimulationConfig(
            virtualSize: 4 << 30, populate: .full, driveOptions: try DriveOptions(parsing: "l2-cache-size=8K"))
        config.readOnly = true
        config.policy = policy
        let log = EventLog()
        var reader = ArrayTraceReader(SpecVectorTests.tv6Ops.map(TraceText.record))
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        return log.events.map { $0.line(includeImage: false) }
    }

    @Test func qemuPolicyReproducesTV6() throws {
        #expect(
            try Self.tv6("qemu")
                == SpecNotation.lines(
                    """
                    L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
                    L2 get 0x42000 miss 1 ; L2 get 0x41000 miss 0 ; L2 get 0x40060000 miss 1
                    flush L2 ; flush RC
                    """))
    }

    @Test func lruEvictsTheLeastRecentlyLookedUp() throws {
        // Worked by hand from LRU's definition (recency at every lookup, hit or fill; a fill takes
        // the first free slot): 0x40000 fills slot 0, 0x41000 slot 1; the hit on 0x40000 makes
        // slot 1 the least recent, so 0x42000 replaces slot 1; 0x41000 misses and replaces slot 0
        // (looked up before slot 1's 0x42000); 1G replaces slot 1 (0x42000, older than 0x41000).
        // It is the spec's QEMU listing (qcow2-model.md TV6) because each MAP releases its slice
        // before the next lookup: "last released" and "last looked up" then order slots alike.
        #expect(
            try Self.tv6("lru")
                == SpecNotation.lines(
                    """
                    L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
                    L2 get 0x42000 miss 1 ; L2 get 0x41000 miss 0 ; L2 get 0x40060000 miss 1
                    flush L2 ; flush RC
                    """))
    }

    @Test func fifoEvictsTheOldestFill() throws {
        // Fills: 0x40000 -> slot 0, 0x41000 -> slot 1; the hit on 0x40000 does not matter, so
        // 0x42000 replaces the oldest fill (slot 0); 0x41000 is still in slot 1 (a hit); 1G
        // replaces the oldest remaining fill, slot 1.
        #expect(
            try Self.tv6("fifo")
                == SpecNotation.lines(
                    """
                    L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
                    L2 get 0x42000 miss 0 ; L2 get 0x41000 hit 1 ; L2 get 0x40060000 miss 1
                    flush L2 ; flush RC
                    """))
    }

    @Test func registryListsEveryPolicy() {
        #expect(PolicyRegistry.names == ["qemu", "lru", "fifo", "clock", "2q", "arc", "s3fifo", "sieve", "opt"])
    }
}

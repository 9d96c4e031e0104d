import Qcow2Sim
import Testing
import TraceKit

/// The eviction-policy seam: QEMU's policy (least recently *released*), textbook LRU and FIFO on
/// TV6's image and reads. Expected victims are worked out by hand from each policy's definition.
@Suite struct PolicyTests {
    /// TV6 (2 entries of 4 KiB, every lookup starts at slot 0) under `policy`.
    static func tv6(_ policy: String) throws -> [String] {
        var config = SimulationConfig(virtualSize: 4 << 30, populate: .full, driveOptions: "l2-cache-size=8K")
        config.readOnly = true
        config.policy = policy
        let log = EventLog()
        var reader = ArrayTraceReader(SpecVectorTests.tv6Ops.map(Vector.record))
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        return log.events.map { $0.line(includeImage: false) }
    }

    @Test func qemuPolicyReproducesTV6() throws {
        #expect(
            try Self.tv6("qemu")
                == Vector.expand(
                    """
                    L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
                    L2 get 0x42000 miss 1 ; L2 get 0x41000 miss 0 ; L2 get 0x40060000 miss 1
                    flush L2 ; flush RC
                    """))
    }

    @Test func lruAgreesWhenEveryLookupIsReleasedAtOnce() throws {
        // Each MAP takes and releases its slice before the next lookup, so "last released" and
        // "last accessed" order the slots the same way.
        #expect(try Self.tv6("lru") == Self.tv6("qemu"))
    }

    @Test func fifoEvictsTheOldestFill() throws {
        // Fills: 0x40000 -> slot 0, 0x41000 -> slot 1; the hit on 0x40000 does not matter, so
        // 0x42000 replaces the oldest fill (slot 0); 0x41000 is still in slot 1 (a hit); 1G
        // replaces the oldest remaining fill, slot 1.
        #expect(
            try Self.tv6("fifo")
                == Vector.expand(
                    """
                    L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
                    L2 get 0x42000 miss 0 ; L2 get 0x41000 hit 1 ; L2 get 0x40060000 miss 1
                    flush L2 ; flush RC
                    """))
    }

    @Test func registryListsEveryPolicy() {
        #expect(PolicyRegistry.names == ["qemu", "lru", "fifo"])
    }
}

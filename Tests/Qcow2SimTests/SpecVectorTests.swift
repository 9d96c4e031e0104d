import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// The test vectors of qcow2-model.md §16, with the expected events copied from the spec's
/// text (never from our own output).
@Suite struct SpecVectorTests {
    /// TV1's 53 lines, as listed in the spec (§16).
    static let tv1: [String] = SpecNotation.lines(
        """
        RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
        L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
        L2 get 0x40000 hit 0 (x2)
        RC get 0x20000 hit 0 (x2)
        RC get 0x20000 hit 0 (x5)
        L2 get 0x40000 hit 0 (x3)
        flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC ; flush L2 ; flush RC
        """)

    @Test func tv1FreshImageWriteRead() throws {
        let expected = Self.tv1
        #expect(expected.count == 53)
        let got = try Vector.events(ops: ["write 0 4k", "read 0 4k"])
        #expect(got == expected)
    }
}

extension SpecVectorTests {
    @Test func tv2Writethrough() throws {
        let expected = SpecNotation.lines(
            """
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
            L2 get 0x40000 hit 0 (x2) ; RC get 0x20000 hit 0 (x7) ; L2 get 0x40000 hit 0 (x2)
            flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC
            flush L2 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(try Vector.events(mode: .writethrough, ops: ["write 0 4k"]) == expected)
    }

    @Test func tv3FourKiBSlices() throws {
        let starts = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]
        let gets = (0..<16).map { "L2 get 0x\(String(0x40000 + $0 * 0x1000, radix: 16)) empty miss \(starts[$0])" }
        let wbs = (0..<16).map { "wb L2 \($0)" }
        let expected = SpecNotation.lines(
            """
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            \(gets.joined(separator: " ; "))
            flush L2 ; \(wbs.joined(separator: " ; "))
            L2 get 0x40000 hit 0 (x2) ; RC get 0x20000 hit 0 (x7) ; L2 get 0x40000 hit 0 (x2)
            L2 get 0x49000 hit 6
            flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(try Vector.events(drive: "l2-cache-size=64K", ops: ["write 0 4k", "read 300M 4k"]) == expected)
    }

    @Test func tv3DependencyFlushInsideEviction() throws {
        let got = try Vector.events(
            drive: "l2-cache-size=64K", ops: ["write 0 4k", "write 600M 4k", "read 300M 4k", "read 600M 4k"])
        let needle = SpecNotation.lines("L2 get 0x6f000 empty miss 0 {wb L2 0; flush RC}")
        #expect(got.indices.contains { got[$0...].starts(with: needle) })
    }

    @Test func tv4ExtendedL2() throws {
        let expected = SpecNotation.lines(
            """
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
            L2 get 0x40000 hit 0 (x2)
            RC get 0x20000 hit 0 (x2)
            L2 get 0x40000 hit 0 (x2)
            RC get 0x20000 hit 0 (x6)
            L2 get 0x40000 hit 0 (x5)
            flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(try Vector.events(create: "extended_l2=on", ops: ["write 0 4k", "write 6k 1k", "read 0 8k"]) == expected)
    }

    @Test func tv5BackingChain() throws {
        let expected = SpecNotation.lines(
            """
            [top]      L2 get 0x40000 miss 0
            [backing1] L2 get 0x40000 miss 0
            [top]      L2 get 0x40000 hit 0 (x2)
            [top]      RC get 0x20000 miss 0
            [top]      RC get 0x20000 hit 0 (x13)
            [top]      L2 get 0x40000 hit 0
            [backing1] RC get 0x20000 miss 0
            [backing1] RC get 0x20000 hit 0 (x8)
            [backing1] L2 get 0x40000 hit 0
            [top]      L2 get 0x40000 hit 0
            [backing1] L2 get 0x40000 hit 0
            [top]      L2 get 0x40000 hit 0
            [top]      flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC ; flush L2 ; flush RC
            [backing1] flush L2 ; flush RC
            """)
        let got = try Vector.events(
            chain: 2, ops: ["read 0 4k", "write 130k 4k"],
            preparing: [(0, ["write 0 256k"]), (1, ["write 64k 64k"])])
        #expect(got == expected)
    }

    @Test func tv5ImagesAreAttributed() throws {
        let got = try Vector.events(
            chain: 2, ops: ["read 0 4k"], withImage: true, preparing: [(0, ["write 0 256k"]), (1, ["write 64k 64k"])])
        #expect(
            got.prefix(5) == [
                "qcow2_cache_get image 1 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_replace_entry image 1 is_l2_cache 1 index 0",
                "qcow2_cache_get_read image 1 is_l2_cache 1 index 0",
                "qcow2_cache_get_done image 1 is_l2_cache 1 index 0",
                "qcow2_cache_get image 0 is_l2_cache 1 offset 0x40000 read_from_disk 1",
            ])
    }

    static let tv6Ops = ["read 0 4k", "read 32M 4k", "read 0 4k", "read 64M 4k", "read 32M 4k", "read 1G 4k"]

    @Test func tv6TwoEntries() throws {
        let expected = SpecNotation.lines(
            """
            L2 get 0x40000 miss 0 ; L2 get 0x41000 miss 1 ; L2 get 0x40000 hit 0
            L2 get 0x42000 miss 1 ; L2 get 0x41000 miss 0 ; L2 get 0x40060000 miss 1
            flush L2 ; flush RC
            """)
        let got = try Vector.events(
            size: 4 << 30, populate: .full, drive: "l2-cache-size=8K", readOnly: true, ops: Self.tv6Ops)
        #expect(got == expected)
    }

    @Test func tv6ThreeEntries() throws {
        let expected = SpecNotation.lines(
            """
            L2 get 0x40000 miss 1 ; L2 get 0x41000 miss 2 ; L2 get 0x40000 hit 1
            L2 get 0x42000 miss 0 ; L2 get 0x41000 hit 2 ; L2 get 0x40060000 miss 1
            flush L2 ; flush RC
            """)
        let got = try Vector.events(
            size: 4 << 30, populate: .full, drive: "l2-cache-size=12K", readOnly: true, ops: Self.tv6Ops)
        #expect(got == expected)
    }

    @Test func tv7DiscardAndWriteZeroes() throws {
        let expected = SpecNotation.lines(
            """
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
            L2 get 0x40000 hit 0
            RC get 0x20000 hit 0 (x5)
            L2 get 0x40000 hit 0 (x4)
            flush L2 ; wb L2 0 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(try Vector.events(ops: ["discard 0 64k", "write -z 1M 4k", "write -z 2M 128k"]) == expected)
    }

    @Test func tv8RefcountBlockAllocation() throws {
        let config = SimulationConfig(virtualSize: 1 << 30, createOptions: try CreateOptions(parsing: "cluster_size=4096"))
        let log = EventLog()
        var reader = ArrayTraceReader((0...2300).map { TraceRecord(op: .write, offset: UInt64($0) * 262_144, length: 4096) })
        _ = try Simulation.run(config: config, reader: &reader, log: log)
        #expect(log.count == 27_066)
        let expected = SpecNotation.lines(SpecNotation.tv8Request1816)
        let got = log.events(ofRequest: 1816).map { $0.line(includeImage: false) }
        #expect(Array(got) == expected)
    }

    @Test func tv10WritethroughOverwriteFlush() throws {
        let expected = SpecNotation.lines(
            """
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
            L2 get 0x40000 hit 0 (x2) ; RC get 0x20000 hit 0 (x7) ; L2 get 0x40000 hit 0 (x2)
            flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC
            L2 get 0x40000 hit 0 ; flush L2 ; flush RC
            flush L2 ; flush RC
            flush L2 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(try Vector.events(mode: .writethrough, ops: ["write 0 4k", "write 4k 4k", "flush"]) == expected)
    }

    @Test func tv12DiscardFreesClusters() throws {
        let expected = SpecNotation.lines(
            """
            L2 get 0x40000 miss 0
            RC get 0x20000 miss 0
            RC get 0x20000 hit 0
            flush L2 ; wb L2 0
            flush RC ; wb RC 0 ; flush L2
            flush L2 ; flush RC
            """)
        let got = try Vector.events(ops: ["discard 4k 200k", "discard 300k 10k"], preparing: [(0, ["write 0 512k"])])
        #expect(got == expected)
    }
}

import Foundation
import Qcow2Sim
import Testing

/// The test vectors of qcow2-model.md §16, with the expected events copied from the spec's
/// text (never from our own output).
@Suite struct SpecVectorTests {
    @Test func tv1FreshImageWriteRead() throws {
        let expected = Vector.expand("""
            RC get 0x20000 miss 0 ; RC get 0x20000 hit 0 (x5) ; flush RC ; wb RC 0
            L2 get 0x40000 empty miss 0 ; flush L2 ; wb L2 0
            L2 get 0x40000 hit 0 (x2)
            RC get 0x20000 hit 0 (x2)
            RC get 0x20000 hit 0 (x5)
            L2 get 0x40000 hit 0 (x3)
            flush L2 ; wb L2 0 ; flush RC ; wb RC 0 ; flush RC ; flush L2 ; flush RC
            """)
        #expect(expected.count == 53)
        let got = try Vector.events(ops: ["write 0 4k", "read 0 4k"])
        #expect(got == expected)
    }
}

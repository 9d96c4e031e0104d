import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// The shared test helpers read what the tests write: both trace spellings, and the spec's
/// compact notation (qcow2-model.md §16) expanded by hand here.
@Suite struct TestSupportTests {
    @Test("qemu-io commands and one-letter lines give the same requests")
    func traceTextSpellings() {
        let words = ["read 0 4k", "write 130k 4k", "write -z 1M 4k", "write -z -u 2M 64k", "discard 0 64k", "flush"]
        let letters = "R 0 4k\nW 130k 4k\nZ 1M 4k\nZu 2M 64k\nD 0 64k\nF"
        let expected = [
            TraceRecord(op: .read, offset: 0, length: 4096), TraceRecord(op: .write, offset: 133_120, length: 4096),
            TraceRecord(op: .writeZeroes, offset: 1 << 20, length: 4096),
            TraceRecord(op: .writeZeroes, offset: 2 << 20, length: 65536, flags: .unmap),
            TraceRecord(op: .discard, offset: 0, length: 65536), TraceRecord(op: .flush, offset: 0, length: 0),
        ]
        #expect(words.map(TraceText.record) == expected)
        #expect(TraceText.records(letters) == expected)
        #expect(TraceText.text(expected) == "R 0 4096\nW 133120 4096\nZ 1048576 4096\nZu 2097152 65536\nD 0 65536\nF")
        #expect(TraceText.records(TraceText.text(expected)) == expected)
    }

    @Test("a miss with an eviction inside, a repeated hit, flush and write-back, as QEMU prints them")
    func specNotationLines() {
        #expect(
            SpecNotation.lines("L2 get 0x6f000 empty miss 0 {wb L2 0; flush RC} ; RC get 0x20000 hit 3 (x2)\nflush L2 # end")
                == [
                    "qcow2_cache_get is_l2_cache 1 offset 0x6f000 read_from_disk 0",
                    "qcow2_cache_get_replace_entry is_l2_cache 1 index 0",
                    "qcow2_cache_entry_flush is_l2_cache 1 index 0",
                    "qcow2_cache_flush is_l2_cache 0",
                    "qcow2_cache_get_read is_l2_cache 1 index 0",
                    "qcow2_cache_get_done is_l2_cache 1 index 0",
                    "qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1",
                    "qcow2_cache_get_done is_l2_cache 0 index 3",
                    "qcow2_cache_get is_l2_cache 0 offset 0x20000 read_from_disk 1",
                    "qcow2_cache_get_done is_l2_cache 0 index 3",
                    "qcow2_cache_flush is_l2_cache 1",
                ])
    }

    @Test("[image N] labels an item's image; other labels and the default image stay as given")
    func specNotationImages() {
        let events = SpecNotation.events("[image 1] wb RC 2 ; [top] flush L2 ; flush RC", image: 4)
        #expect(events.map(\.image) == [1, 4, 4])
        #expect(
            events.map(\.description) == [
                "qcow2_cache_entry_flush image 1 is_l2_cache 0 index 2", "qcow2_cache_flush image 4 is_l2_cache 1",
                "qcow2_cache_flush image 4 is_l2_cache 0",
            ])
        // QEMU's own lines, `co` dropped, read back as the same events.
        #expect(
            SpecNotation.qemuLines(
                "qcow2_cache_entry_flush co 0x55d0 image 1 is_l2_cache 0 index 2\n# comment\nqcow2_cache_flush is_l2_cache 1",
                image: 4) == Array(events.prefix(2)))
    }
}

import Foundation
import Qcow2Sim
import Testing
import TraceKit
import Validation

/// A QemuLog built from spans (as if parsed), labelled with `image`.
func qemuLog(open: [CacheEvent] = [], requests: [[CacheEvent]], close: [CacheEvent], pooled: Set<Int> = [], image: Int = 0)
    -> QemuLog
{
    var log = QemuLog()
    func add(_ evs: [CacheEvent]) {
        for var e in evs {
            e.image = image
            log.events.append(e)
            log.logLines.append(log.events.count)
        }
    }
    add(open)
    for (i, r) in requests.enumerated() {
        log.requestStarts.append(log.events.count)
        log.pooled.append(pooled.contains(i))
        add(r)
    }
    log.closeStart = log.events.count
    add(close)
    return log
}

@Suite("comparator")
struct ComparatorTests {
    /// TV11 (qcow2-model.md §16): the simulator prints the backing's complete miss first; QEMU
    /// printed the top's two MAP GETs between the backing's get_read and get_done.
    static let tv11Simulated =
        compact(
            "[image 1] L2 get 0x40000 miss 1 ; [image 0] L2 get 0x40000 miss 1 ; [image 1] L2 get 0x40000 hit 1 (x2) ; [image 0] L2 get 0x40000 hit 1"
        )
    static var tv11Qemu: [CacheEvent] {
        let s = tv11Simulated
        // top miss (4), backing get/replace/read (3), top hits (4), backing get_done (1), backing hit (2)
        return Array(s[0..<4]) + Array(s[4..<7]) + Array(s[8..<12]) + [s[7]] + Array(s[12..<14])
    }

    @Test("the interleaving DP accepts TV11's order and labels each event with its image")
    func interleavingAccepts() throws {
        let labels = try #require(Comparator.interleave(expected: Self.tv11Simulated[...], actual: Self.tv11Qemu[...]))
        // Per image, the labelled QEMU events are exactly the simulator's per-image sequence.
        for image in [0, 1] {
            let mine = zip(Self.tv11Qemu, labels).filter { $0.1 == image }.map { e, l in
                var x = e
                x.image = l
                return x
            }
            #expect(mine == Self.tv11Simulated.filter { $0.image == image })
        }
    }

    @Test("the interleaving DP rejects a reordering inside one image and a count mismatch")
    func interleavingRejects() {
        var bad = Self.tv11Qemu
        bad.swapAt(1, 2)  // top's replace_entry and get_read swapped
        #expect(Comparator.interleave(expected: Self.tv11Simulated[...], actual: bad[...]) == nil)
        #expect(Comparator.interleave(expected: Self.tv11Simulated[...], actual: Self.tv11Qemu.dropLast()) == nil)
        #expect(Comparator.interleave(expected: [][...], actual: [][...]) == [])
    }

    @Test("multi-segment requests pass as interleavings and are reported, never silently")
    func multiSegmentReported() {
        let expected = makeLog(
            requests: [compact("L2 get 0x50000 miss 0", image: 1), Self.tv11Simulated], close: [], multiSegment: [1])
        let actual = qemuLog(requests: [compact("L2 get 0x50000 miss 0"), Self.tv11Qemu], close: [], pooled: [1], image: 1)
        let c = Comparator.compare(
            expected: expected, actual: actual, writes: [false, false], locations: [.line(1), .line(2)], compareClose: true,
            topImage: 1)
        #expect(c.identical)
        #expect(
            c.multiSegment == [
                InterleavingCheck(
                    request: 1, traceLocation: "2", write: false, simulatorMarked: true, qemuPooled: true, identicalOrder: false,
                    passed: true)
            ])
        // Labels follow the interleaving: the backing's late get_done is image 0.
        #expect(c.labeled.events[4 + 11].image == 0)
        #expect(c.labeled.events[4 + 7].image == 1)
    }

    @Test("a multi-segment read that is not an interleaving fails; a write is flagged, not failed")
    func multiSegmentFailure() {
        var bad = Self.tv11Qemu
        bad.swapAt(1, 2)
        let expected = makeLog(requests: [Self.tv11Simulated], close: [], multiSegment: [0])
        let actual = qemuLog(requests: [bad], close: [], pooled: [0], image: 1)
        let read = Comparator.compare(
            expected: expected, actual: actual, writes: [false], locations: [.line(7)], compareClose: true, topImage: 1)
        #expect(!read.identical)
        #expect(read.firstDivergence?.request == 0)
        #expect(read.firstDivergence?.reason == "not an interleaving of the simulator's per-image sequences (multi-segment read)")
        let write = Comparator.compare(
            expected: expected, actual: actual, writes: [true], locations: [.line(7)], compareClose: true, topImage: 1)
        #expect(write.identical)
        #expect(write.multiSegment.first?.passed == false)
        #expect(write.multiSegment.first?.write == true)
    }

    @Test("a hand-built divergence is reported with request, trace line, QEMU log line and both windows")
    func divergenceReport() {
        let reqs = (0..<6).map { compact("L2 get 0x\(String(0x40000 + $0 * 0x1000, radix: 16)) hit 0") }
        var changed = reqs
        changed[4] = compact("L2 get 0x44000 miss 1")
        let expected = makeLog(requests: reqs, close: compact("flush L2 ; flush RC"))
        let actual = qemuLog(requests: changed, close: compact("flush L2 ; flush RC"))
        let locs: [TraceLocation] = (0..<6).map { .line(10 + $0) }
        let c = Comparator.compare(
            expected: expected, actual: actual, writes: Array(repeating: false, count: 6), locations: locs, compareClose: true,
            topImage: 0)
        let d = c.firstDivergence
        #expect(
            d
                == Divergence(
                    phase: "request", request: 4, traceLocation: "14", eventIndex: 1, qemuLogLine: 10, reason: "event differs",
                    windowStart: 0,
                    expected: [
                        "qcow2_cache_get image 0 is_l2_cache 1 offset 0x44000 read_from_disk 1",
                        "qcow2_cache_get_done image 0 is_l2_cache 1 index 0",
                    ],
                    actual: [
                        "qcow2_cache_get image 0 is_l2_cache 1 offset 0x44000 read_from_disk 1",
                        "qcow2_cache_get_replace_entry image 0 is_l2_cache 1 index 1",
                        "qcow2_cache_get_read image 0 is_l2_cache 1 index 1",
                        "qcow2_cache_get_done image 0 is_l2_cache 1 index 1",
                    ]))
        #expect(c.divergentSpans == 1)
        // Missing close events are a divergence of the close span.
        let short = qemuLog(requests: reqs, close: compact("flush L2"))
        let c2 = Comparator.compare(expected: expected, actual: short, writes: [], locations: [], compareClose: true, topImage: 0)
        #expect(c2.firstDivergence?.phase == "close")
        #expect(c2.firstDivergence?.reason == "QEMU printed 1 fewer events (missing events)")
        let c3 = Comparator.compare(
            expected: expected, actual: short, writes: [], locations: [], compareClose: false, topImage: 0)
        #expect(c3.identical)
    }

    @Test("counts: hits, misses, evictions, write-backs and bytes come from events alone")
    func counts() {
        var counter = CacheCounter()
        counter.add(
            contentsOf: compact(
                "L2 get 0x40000 miss 0 ; L2 get 0x50000 empty miss 0 ; L2 get 0x50000 hit 0 ; wb L2 0 ; flush L2 ; RC get 0x20000 miss 0"
            ))
        let r = counter.result(
            imageCount: 1,
            sizes: [ImageCacheSizes(l2EntryBytes: 4096, l2Entries: 2, refcountEntryBytes: 65536, refcountEntries: 4)])
        #expect(r[0].l2.lookups == 3)
        #expect(r[0].l2.hits == 1)
        #expect(r[0].l2.misses == 2)
        #expect(r[0].l2.missesReadFromDisk == 1)
        #expect(r[0].l2.evictions == 1)
        #expect(r[0].l2.bytesRead == 4096)
        #expect(r[0].l2.bytesWritten == 4096)
        #expect(r[0].refcount.bytesRead == 65536)
        #expect(r[0].refcount.evictions == 0)
    }
}

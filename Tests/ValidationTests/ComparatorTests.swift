import Foundation
import Qcow2Sim
import QcowTestSupport
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
        SpecNotation.events(
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
            requests: [SpecNotation.events("L2 get 0x50000 miss 0", image: 1), Self.tv11Simulated], close: [], multiSegment: [1])
        let actual = qemuLog(
            requests: [SpecNotation.events("L2 get 0x50000 miss 0"), Self.tv11Qemu], close: [], pooled: [1], image: 1)
        let c = Comparator.compare(
            expected: expected, actual: actual, writes: [false, false], locations: [.line(1), .line(2)], compareClose: true,
            topImage: 1)
        // Another valid order is `equivalent`, not `identical`, and the request is named.
        #expect(!c.identical)
        #expect(c.equivalent)
        #expect(c.equivalentRequests == [1])
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

    @Test("a multi-segment read or write that is not an interleaving is a divergence")
    func multiSegmentFailure() {
        var bad = Self.tv11Qemu
        bad.swapAt(1, 2)
        let expected = makeLog(requests: [Self.tv11Simulated], close: [], multiSegment: [0])
        let actual = qemuLog(requests: [bad], close: [], pooled: [0], image: 1)
        let read = Comparator.compare(
            expected: expected, actual: actual, writes: [false], locations: [.line(7)], compareClose: true, topImage: 1)
        #expect(!read.identical)
        #expect(read.firstDivergence?.request == 0)
        #expect(read.firstDivergence?.reason == "not an interleaving of the simulator's concurrent tasks (multi-segment read)")
        let write = Comparator.compare(
            expected: expected, actual: actual, writes: [true], locations: [.line(7)], compareClose: true, topImage: 1)
        #expect(!write.identical && !write.equivalent)
        #expect(write.firstDivergence?.reason == "not an interleaving of the simulator's concurrent tasks (multi-segment write)")
        #expect(write.multiSegment.first?.passed == false)
        #expect(write.multiSegment.first?.write == true)
    }

    /// A two-segment write as the simulator logs it (§13): the request coroutine (task 0) maps
    /// segment 1 and launches task 1, whose zero-COW probe runs at once; it maps segment 2 and
    /// launches task 2 (data write, no probe); task 1 then links, task 2 links. Distinct offsets
    /// make every coroutine's events recognizable. Request 1 is a read of slice 0x50000 whose
    /// victim depends on which LINK released its slice last.
    static func twoSegmentWrite() -> EventLog {
        let log = EventLog()
        log.beginRequest(0, location: .line(1))
        log.markMultiSegment(write: true)
        func add(_ task: Int32, _ text: String) {
            log.task = task
            for e in SpecNotation.events(text) { log.append(e) }
            log.task = 0
        }
        add(0, "L2 get 0x40000 hit 0 ; RC get 0x20000 hit 0")  // segment 1: handle_alloc, refcount
        add(1, "L2 get 0x70000 hit 2")  // task 1: zero-COW probe
        add(0, "L2 get 0x60000 hit 1")  // segment 2: handle_copied
        add(1, "L2 get 0x40000 hit 0")  // task 1: LINK
        add(2, "L2 get 0x80000 hit 3")  // task 2: LINK
        log.beginRequest(1, location: .line(2))
        for e in SpecNotation.events("L2 get 0x50000 miss 0") { log.append(e) }
        log.beginClose()
        return log
    }

    @Test("a write whose tasks linked in another order is equivalent and named; a reorder inside one task is not")
    func writeTasksReordered() throws {
        let expected = Self.twoSegmentWrite()
        let e = Array(expected.events(ofRequest: 0))
        let read = SpecNotation.events("L2 get 0x50000 miss 0")
        // Hits are 2 events: [0, 4) segment 1, [4, 6) probe, [6, 8) segment 2, [8, 10) task 1's
        // LINK, [10, 12) task 2's. QEMU: task 2's LINK before task 1's.
        #expect(e.count == 12)
        let swapped = Array(e[0..<8]) + Array(e[10..<12]) + Array(e[8..<10])
        let ok = Comparator.compare(
            expected: expected, actual: qemuLog(requests: [swapped, read], close: [], pooled: [0]), writes: [true, false],
            locations: [.line(1), .line(2)], compareClose: true, topImage: 0)
        #expect(ok.firstDivergence == nil)
        #expect(ok.equivalent)
        #expect(ok.equivalentRequests == [0])
        #expect(ok.multiSegment.first?.passed == true && ok.multiSegment.first?.identicalOrder == false)
        // The same events with the request coroutine's second GET moved before task 1's probe:
        // still one valid interleaving of the three coroutines.
        let early = Array(e[0..<4]) + Array(e[6..<8]) + Array(e[4..<6]) + Array(e[8..<12])
        let ok2 = Comparator.compare(
            expected: expected, actual: qemuLog(requests: [early, read], close: [], pooled: [0]), writes: [true, false],
            locations: [], compareClose: true, topImage: 0)
        #expect(ok2.equivalent)
        // Segment 2's handle_copied GET before segment 1's refcount GET: the request
        // coroutine's own order changed, which no completion order produces.
        let worse = Array(e[0..<2]) + Array(e[6..<8]) + Array(e[2..<6]) + Array(e[8..<12])
        let no = Comparator.compare(
            expected: expected, actual: qemuLog(requests: [worse, read], close: [], pooled: [0]), writes: [true, false],
            locations: [.line(1), .line(2)], compareClose: true, topImage: 0)
        #expect(no.firstDivergence?.request == 0)
        #expect(no.firstDivergence?.reason == "not an interleaving of the simulator's concurrent tasks (multi-segment write)")
        #expect(!no.equivalent)
    }

    @Test("a reordered write followed by a request whose eviction differs is divergent at that request")
    func reorderChangesLaterEviction() {
        let expected = Self.twoSegmentWrite()
        let e = Array(expected.events(ofRequest: 0))
        let swapped = Array(e[0..<8]) + Array(e[10..<12]) + Array(e[8..<10])
        // With task 2's LINK first, QEMU's least recently released slot is another one.
        let c = Comparator.compare(
            expected: expected,
            actual: qemuLog(requests: [swapped, SpecNotation.events("L2 get 0x50000 miss 1")], close: [], pooled: [0]),
            writes: [true, false], locations: [.line(1), .line(2)], compareClose: true, topImage: 0)
        #expect(!c.identical && !c.equivalent)
        #expect(c.equivalentRequests == [0])
        #expect(c.firstDivergence?.request == 1)
        #expect(c.firstDivergence?.reason == "event differs")
    }

    @Test("a hand-built divergence is reported with request, trace line, QEMU log line and both windows")
    func divergenceReport() {
        let reqs = (0..<6).map { SpecNotation.events("L2 get 0x\(String(0x40000 + $0 * 0x1000, radix: 16)) hit 0") }
        var changed = reqs
        changed[4] = SpecNotation.events("L2 get 0x44000 miss 1")
        let expected = makeLog(requests: reqs, close: SpecNotation.events("flush L2 ; flush RC"))
        let actual = qemuLog(requests: changed, close: SpecNotation.events("flush L2 ; flush RC"))
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
        let short = qemuLog(requests: reqs, close: SpecNotation.events("flush L2"))
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
            contentsOf: SpecNotation.events(
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

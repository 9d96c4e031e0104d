import Testing

@testable import TraceKit

@Suite struct RecordMapperTests {
    static let trace = Array("0,R,0,4K\n1,W,1M,8K\n2,D,2M,1M\n3,F,0,0\n".utf8)

    func read(_ o: TraceOptions) -> Outcome {
        TraceFixtures.readBytes(Self.trace, fileName: "m.csv", format: .native, options: o)
    }

    @Test func beyondDiskIsRejectedAtTheRecord() {
        var o = TraceOptions()
        o.diskSize = 2 << 20
        guard case .failure(let e) = read(o) else { Issue.record("accepted"); return }
        #expect(
            e
                == "m.csv:3: error: request at offset 2097152 length 1048576 ends beyond the disk size 2097152 (use --beyond wrap or clip)"
        )
    }

    @Test func wrapAndClip() {
        var o = TraceOptions()
        o.diskSize = (2 << 20) + 4096
        o.beyondDisk = .clip
        if case .success(let r) = read(o) {
            #expect(r[2].offset == 2 << 20 && r[2].length == 4096)
        } else {
            Issue.record("clip failed")
        }
        o.diskSize = 1 << 20
        o.beyondDisk = .wrap
        if case .success(let r) = read(o) {
            #expect(r.map(\.offset) == [0, 0, 0, 0] && r[2].length == 1 << 20)
        } else {
            Issue.record("wrap failed")
        }
        o.beyondDisk = .clip
        if case .success(let r) = read(o) { #expect(r.map(\.op) == [.read, .flush]) } else { Issue.record("clip failed") }
    }

    @Test func offsetShiftAndTimeScale() {
        var o = TraceOptions()
        o.offsetShift = 4096
        o.timeScale = 0.5
        if case .success(let r) = read(o) {
            #expect(r.map(\.offset) == [4096, (1 << 20) + 4096, (2 << 20) + 4096, 0])
            #expect(r.map(\.time) == [0, 0.5, 1, 1.5])
        } else {
            Issue.record("failed")
        }
        o.offsetShift = -8192
        guard case .failure(let e) = read(o) else { Issue.record("accepted"); return }
        #expect(e == "m.csv:1: error: offset 0 shifted by -8192 is negative")
    }

    @Test func outOfOrderTimesAreSortedOrRejected() {
        let t = Array("2,R,0,1\n1,R,1,1\n3,R,2,1\n".utf8)
        guard case .failure(let e) = TraceFixtures.readBytes(t, fileName: "o.csv", format: .native) else {
            Issue.record("accepted"); return
        }
        #expect(
            e
                == "o.csv:2: error: time 1.0 is earlier than the previous record's 2.0 (out of order; use --reorder-window N to sort within N records)"
        )
        var o = TraceOptions()
        o.reorderWindow = 2
        if case .success(let r) = TraceFixtures.readBytes(t, fileName: "o.csv", format: .native, options: o) {
            #expect(r.map(\.offset) == [1, 0, 2])
        } else {
            Issue.record("sort failed")
        }
    }

    // --no-rebase and --time-scale on the four absolute-clock CSV readers. Each trace is 3 rows
    // whose absolute times are worked by hand from the format's definition; default options
    // rebase to the first record in time order, `rebaseTime = false` keeps the absolute clock,
    // and the time scale multiplies either. (Until the readers stopped rebasing themselves,
    // --no-rebase gave the rebased times for these formats.)

    func times(_ text: String, _ format: TraceFormat, rebase: Bool? = nil, scale: Double = 1) -> [Double?] {
        var o = TraceOptions()
        o.rebaseTime = rebase
        o.timeScale = scale
        switch TraceFixtures.readBytes(Array(text.utf8), fileName: "t.csv", format: format, options: o) {
        case .success(let r): return r.map(\.time)
        case .failure(let e): Issue.record("\(e)"); return []
        }
    }

    @Test func msrFiletimeTicksAreRebasedExactlyOrKeptAbsolute() {
        // The first two rows of msr-cambridge1-sample.csv (215 ticks apart), then one 10^7 ticks
        // (1 s) after the first. FILETIME counts 100 ns ticks since 1601-01-01: 128166385295514663
        // ticks = 12816638529.5514663 s (2007-02-22 17:22:09 UTC; Unix time minus 11644473600).
        let t = """
            128166385295514663,hm,0,Write,9056014336,2048,2833
            128166385295514878,hm,0,Write,11855351808,512,2617
            128166385305514663,hm,0,Read,0,4096,100
            """
        // 215 ticks = 2.15e-5 s: the difference taken in integer ticks, then divided once.
        #expect(times(t, .msr) == [0, 2.15e-5, 1])
        #expect(times(t, .msr, scale: 0.5) == [0, 1.075e-5, 0.5])
        #expect(times(t, .msr, rebase: false) == [12_816_638_529.551_4663, 12_816_638_529.551_4878, 12_816_638_530.551_4663])
        #expect(
            times(t, .msr, rebase: false, scale: 0.5) == [
                6_408_319_264.775_733_15, 6_408_319_264.775_743_9, 6_408_319_265.275_733_15,
            ]
        )
    }

    @Test func systorEpochSecondsAreRebasedOrKeptAbsolute() {
        // Rows out of order, sorted by the default reorder window: .25 s, .5 s, then 2.125 s
        // (fractions chosen exact in binary, so every expected value is exact).
        let t = """
            Timestamp,Response,IOType,LUN,Offset,Size
            1456095145.500000000,0.000806000,R,0,4096,4096
            1456095145.250000000,0.008044000,W,0,8192,4096
            1456095147.375000000,0.007571000,R,0,0,512
            """
        #expect(times(t, .systor) == [0, 0.25, 2.125])
        #expect(times(t, .systor, scale: 0.5) == [0, 0.125, 1.0625])
        #expect(times(t, .systor, rebase: false) == [1_456_095_145.25, 1_456_095_145.5, 1_456_095_147.375])
        #expect(times(t, .systor, rebase: false, scale: 0.5) == [728_047_572.625, 728_047_572.75, 728_047_573.6875])
    }

    @Test func systorNanosecondsSurviveTheEpoch() {
        // 1 ns apart: a Double of 1.46e9 s steps by 2.4e-7 s, so only the reader's whole-second
        // origin keeps them apart. Rebased, they are 1e-9 s apart (to 1e-18: two parsed fractions).
        let t = "Timestamp,Response,IOType,LUN,Offset,Size\n1456095145.000000001,0,R,0,0,512\n1456095145.000000002,0,R,0,0,512\n"
        let r = times(t, .systor)
        #expect(r.count == 2 && r[0] == 0 && abs((r[1] ?? 0) - 1e-9) < 1e-18)
    }

    @Test func alibabaEpochMicrosecondsAreRebasedExactlyOrKeptAbsolute() {
        // 1577836800000000 µs = 2020-01-01 00:00:00 UTC; then +1 µs and +1.5 s.
        let t = """
            3,R,0,4096,1577836800000000
            3,W,4096,4096,1577836800000001
            3,R,8192,4096,1577836801500000
            """
        #expect(times(t, .alibaba) == [0, 1e-6, 1.5])
        #expect(times(t, .alibaba, scale: 0.5) == [0, 5e-7, 0.75])
        #expect(times(t, .alibaba, rebase: false) == [1_577_836_800, 1_577_836_800.000_001, 1_577_836_801.5])
        #expect(times(t, .alibaba, rebase: false, scale: 0.5) == [788_918_400, 788_918_400.000_000_5, 788_918_400.75])
    }

    @Test func tencentEpochSecondsAreRebasedOrKeptAbsolute() {
        // The sample's clock (1538323199 = 2018-09-30 15:59:59 UTC); the third row is 1 s early
        // and the reorder window puts it first.
        let t = """
            1538323200,4247200,128,1,1058
            1538323201,13896880,128,0,1063
            1538323199,49413280,16,0,1063
            """
        #expect(times(t, .tencent) == [0, 1, 2])
        #expect(times(t, .tencent, scale: 0.5) == [0, 0.5, 1])
        #expect(times(t, .tencent, rebase: false) == [1_538_323_199, 1_538_323_200, 1_538_323_201])
        #expect(times(t, .tencent, rebase: false, scale: 0.5) == [769_161_599.5, 769_161_600, 769_161_600.5])
    }

    @Test func aFlushHasNoRange() {
        // Found by FuzzTests: native `F,2,0` gave a flush at offset 2. bdrv_co_flush takes no
        // range and TraceRecord documents a flush as offset 0, length 0; the shift and the disk
        // bound do not apply to it either.
        var o = TraceOptions()
        o.offsetShift = 4096
        o.diskSize = 1 << 20
        let t = Array("0,F,2,0\n1,F,0,9\n2,f,1G,1G\n".utf8)
        guard case .success(let r) = TraceFixtures.readBytes(t, fileName: "f.csv", format: .native, options: o) else {
            Issue.record("rejected"); return
        }
        #expect(r == [0.0, 1, 2].map { TraceRecord(time: $0, op: .flush, offset: 0, length: 0) })
    }
}

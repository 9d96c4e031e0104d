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
}

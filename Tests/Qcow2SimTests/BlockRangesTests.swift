import QcowTestSupport
import Testing

@testable import Qcow2Sim

/// `BlockRanges` (the host file's allocated/data block sets) against a plain `Set` of block
/// numbers: random inserts and removes over a few pages, whole and partial, then every query.
@Suite struct BlockRangesTests {
    /// The model's maximal runs, each split into pieces of at most `maxRun`.
    static func modelRuns(_ s: Set<UInt64>, maxRun: UInt64) -> UInt64 {
        var runs: UInt64 = 0
        var start: UInt64?
        var prev: UInt64 = 0
        for b in s.sorted() {
            if let st = start, b == prev + 1 {
                prev = b
                _ = st
                continue
            }
            if let st = start { runs += (prev + 1 - st + maxRun - 1) / maxRun }
            start = b
            prev = b
        }
        if let st = start { runs += (prev + 1 - st + maxRun - 1) / maxRun }
        return runs
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func matchesASetModel(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let universe: UInt64 = 6 * 512
        var a = BlockRanges(), b = BlockRanges()
        var ma = Set<UInt64>(), mb = Set<UInt64>()
        for step in 0..<400 {
            let start = rng.below(universe)
            let len = 1 + rng.below(rng.below(4) == 0 ? 1600 : 70)
            let r = start..<min(universe, start + len)
            let insert = rng.below(3) != 0
            if step % 2 == 0 {
                if insert { a.insert(r); ma.formUnion(r) } else { a.remove(r); ma.subtract(r) }
            } else {
                if insert { b.insert(r); mb.formUnion(r) } else { b.remove(r); mb.subtract(r) }
            }
            #expect(a.count == UInt64(ma.count))
            #expect(b.count == UInt64(mb.count))
            if step % 25 == 0 {
                for x in 0..<(universe + 600) where a.contains(x) != ma.contains(x) {
                    Issue.record("contains(\(x)) wrong at step \(step)")
                    return
                }
                for _ in 0..<40 {
                    let x = rng.below(universe + 600)
                    let nextIn = ma.filter { $0 >= x }.min()
                    var y = x
                    while ma.contains(y) { y += 1 }
                    #expect(a.next(from: x, member: true) == nextIn)
                    #expect(a.next(from: x, member: false) == y)
                }
                for maxRun: UInt64 in [1, 7, 512, 32768] {
                    #expect(a.runCount(maxRun: maxRun) == Self.modelRuns(ma, maxRun: maxRun))
                    #expect(
                        a.runCount(maxRun: maxRun, within: b, inside: true) == Self.modelRuns(ma.intersection(mb), maxRun: maxRun)
                    )
                    #expect(
                        a.runCount(maxRun: maxRun, within: b, inside: false) == Self.modelRuns(ma.subtracting(mb), maxRun: maxRun)
                    )
                    #expect(
                        a.runCount(maxRun: maxRun, cutBy: b)
                            == Self.modelRuns(ma.intersection(mb), maxRun: maxRun)
                            + Self.modelRuns(ma.subtracting(mb), maxRun: maxRun)
                    )
                }
            }
        }
    }

    /// A 16 TiB file written in one go: 2^32 blocks in one range of whole pages.
    @Test func aHugeContiguousRangeIsOneRun() {
        var s = BlockRanges()
        s.insert(0..<(1 << 32))
        s.insert(5..<9)
        #expect(s.count == 1 << 32)
        #expect(s.runCount(maxRun: 32768) == (1 << 32) / 32768)
        s.remove(1000..<1001)
        #expect(s.count == (1 << 32) - 1)
        #expect(s.next(from: 0, member: false) == 1000)
        #expect(s.next(from: 1001, member: false) == 1 << 32)
        #expect(s.runCount(maxRun: 1 << 40) == 2)
    }

    /// `membership` of ranges inside one page (512 blocks): a partly filled page's bits, a whole
    /// page, an absent one; a range over two pages has no answer. Hand-worked: blocks 600 ..< 700
    /// and the whole page 2 (1024 ..< 1536) are in the set.
    @Test func membershipInsideOnePage() {
        var s = BlockRanges()
        s.insert(600..<700)
        s.insert(1024..<1536)
        #expect(s.membership(600..<700) == .all)
        #expect(s.membership(640..<641) == .all)
        #expect(s.membership(599..<601) == .some)
        #expect(s.membership(699..<701) == .some)
        #expect(s.membership(512..<600) == .empty)
        #expect(s.membership(700..<1024) == .empty)
        #expect(s.membership(1100..<1200) == .all)
        #expect(s.membership(0..<512) == .empty)
        #expect(s.membership(1536..<1537) == .empty)
        #expect(s.membership(1000..<1100) == nil)
        #expect(s.membership(5..<5) == nil)
        // After an update elsewhere (the remembered page changes) the answers hold.
        s.remove(650..<651)
        #expect(s.membership(600..<700) == .some)
        #expect(s.membership(651..<700) == .all)
        #expect(s.membership(650..<651) == .empty)
    }
}

/// `RefcountStore`'s range update and run length (the bulk path of UPDATE) against a plain
/// array of refcounts, with single-entry updates mixed in.
@Suite struct RefcountStoreRangeTests {
    @Test(arguments: [11, 12, 13, 14])
    func rangeUpdatesMatchAnArray(seed: UInt64) {
        let g = Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30)
        let n = Int(g.refblockEntries)
        var store = RefcountStore(geometry: g)
        let block: UInt64 = 0x30000
        store.zero(block)
        var model = [UInt64](repeating: 0, count: n)
        var rng = SplitMix64(seed: seed)
        for step in 0..<300 {
            let a = Int(rng.below(UInt64(n)))
            let len = 1 + Int(rng.below(step % 3 == 0 ? 5000 : 40))
            let r = a..<min(n, a + len)
            let v = 1 + rng.below(3)
            if step % 4 == 3 {
                store.set(block, a, v)
                model[a] = v
            } else {
                store.set(block, r, v)
                for i in r { model[i] = v }
            }
            for _ in 0..<20 {
                let i = Int(rng.below(UInt64(n)))
                #expect(store.get(block, i) == model[i])
                let limit = 1 + Int(rng.below(UInt64(n - i)))
                var expected = 1
                while expected < limit && model[i + expected] == model[i] { expected += 1 }
                #expect(store.runLength(block, from: i, limit: limit) == expected)
            }
        }
        for i in 0..<n where store.get(block, i) != model[i] {
            Issue.record("refcount \(i): \(store.get(block, i)) != \(model[i])")
            return
        }
    }
}

import QcowTestSupport
import Testing

@testable import Qcow2Sim

/// The forms of `L2Store` tables (runs, sparse map, dense words) and `RefcountStore` blocks
/// (runs, dense): hand-worked transitions and byte counts, then random operations against a
/// plain dictionary.
@Suite struct StoreFormTests {
    static let cs: UInt64 = 65536
    /// 64 KiB clusters: 8192 entries per L2 table (4096 extended), 32768 16-bit refcounts per
    /// refcount block.
    static func geometry(clusterBits: Int = 16, extendedL2: Bool = false, refcountOrder: Int = 4) -> Geometry {
        Geometry(clusterBits: clusterBits, extendedL2: extendedL2, refcountOrder: refcountOrder, virtualSize: 1 << 40)
    }
    static let table: UInt64 = 5 * cs
    static func linked(_ host: UInt64) -> UInt64 { host | EntryBits.copied }

    // MARK: L2 tables

    @Test func sparseCapacityLimitIsTheDenseSize() {
        // 8192 entries * 8 B = 64 KiB dense; slots of 12 B: 4096 slots = 48 KiB fit, 8192 do not.
        #expect(L2Store(geometry: Self.geometry()).maxSparseCapacity == 4096)
        // Extended: 4096 entries * 16 B = 64 KiB; slots of 20 B: 2048 = 40 KiB fit.
        #expect(L2Store(geometry: Self.geometry(extendedL2: true)).maxSparseCapacity == 2048)
        // 512 B clusters: 64 entries = 512 B; 32 slots = 384 B fit, 64 = 768 B do not.
        #expect(L2Store(geometry: Self.geometry(clusterBits: 9)).maxSparseCapacity == 32)
    }

    @Test func sequentialLinksStayOneRun() {
        var s = L2Store(geometry: Self.geometry())
        let t = Self.table
        s.create(t)
        #expect(s.form(t) == .empty)
        #expect(s.bytes(t) == 0)
        s.linkRun(t, first: 0, count: 4, host: 16 * Self.cs)
        s.linkRun(t, first: 4, count: 2, host: 20 * Self.cs)
        #expect(s.form(t) == .runs)
        #expect(s.bytes(t) == 24)
        #expect(s.entry(t, 5).word == Self.linked(21 * Self.cs))
        #expect(s.entry(t, 6).word == 0)
        // Not contiguous in the host: a second run.
        s.linkRun(t, first: 6, count: 1, host: 40 * Self.cs)
        #expect(s.bytes(t) == 48)
        #expect(s.entry(t, 6).word == Self.linked(40 * Self.cs))
        #expect(s.zeroRunLength(t, from: 7, limit: 100) == 100)
        #expect(s.zeroRunLength(t, from: 0, limit: 100) == 0)
        // A zero written outside the runs needs no storage.
        s.set(t, 3000, word: 0, bitmap: 0)
        #expect(s.form(t) == .runs)
        #expect(s.bytes(t) == 48)
    }

    @Test func seventeenScatteredLinksMoveToTheMap() {
        var s = L2Store(geometry: Self.geometry())
        let t = Self.table
        s.create(t)
        // Every other entry, each from a host cluster 3 apart: 16 separate runs.
        for k in 0..<16 { s.linkRun(t, first: 2 * k, count: 1, host: UInt64(100 + 3 * k) * Self.cs) }
        #expect(s.form(t) == .runs)
        #expect(s.bytes(t) == 16 * 24)
        s.linkRun(t, first: 32, count: 1, host: 148 * Self.cs)
        // 17 entries in the map, at most 3/4 full: 8 slots grow to 16 (7th), 32 (13th); 32 * 12 B.
        #expect(s.form(t) == .sparse)
        #expect(s.bytes(t) == 384)
        for k in 0...16 {
            #expect(s.entry(t, 2 * k).word == Self.linked(UInt64(100 + 3 * k) * Self.cs))
            #expect(s.entry(t, 2 * k + 1).word == 0)
        }
        #expect(s.zeroRunLength(t, from: 33, limit: 50) == 50)
        #expect(s.zeroRunLength(t, from: 31, limit: 50) == 1)
    }

    @Test func sparseBecomesDenseAtThreeEighthsOfTheTable() {
        var s = L2Store(geometry: Self.geometry())
        let t = Self.table
        s.create(t)
        // 3072 entries, 2 apart: the map's 4096 slots (48 KiB), 3/4 full, hold them.
        for k in 0..<3072 { s.set(t, 2 * k, word: Self.linked(UInt64(1000 + 2 * k) * Self.cs), bitmap: 0) }
        #expect(s.form(t) == .sparse)
        #expect(s.bytes(t) == 4096 * 12)
        // The 3073rd would need 8192 slots (96 KiB): dense words, 64 KiB.
        s.set(t, 1, word: Self.linked(7 * Self.cs), bitmap: 0)
        #expect(s.form(t) == .dense)
        #expect(s.bytes(t) == 65536)
        #expect(s.entry(t, 1).word == Self.linked(7 * Self.cs))
        #expect(s.entry(t, 2 * 3071).word == Self.linked(UInt64(1000 + 2 * 3071) * Self.cs))
        #expect(s.entry(t, 3).word == 0)
    }

    @Test func mapOverridesRuns() {
        var s = L2Store(geometry: Self.geometry())
        let t = Self.table
        let host = 64 * Self.cs
        s.create(t)
        s.linkRun(t, first: 0, count: 8192, host: host)  // a preallocated table
        #expect(s.bytes(t) == 24)
        // Discard entry 100: the map holds its zero over the run.
        s.set(t, 100, word: 0, bitmap: 0)
        #expect(s.form(t) == .sparse)
        #expect(s.bytes(t) == 24 + 8 * 12)
        #expect(s.entry(t, 100).word == 0)
        #expect(s.entry(t, 99).word == Self.linked(host + 99 * Self.cs))
        #expect(s.entry(t, 101).word == Self.linked(host + 101 * Self.cs))
        #expect(s.zeroRunLength(t, from: 99, limit: 5) == 0)
        #expect(s.zeroRunLength(t, from: 100, limit: 5) == 1)
        // Linking it again (overlapping the run) updates the map's slot.
        s.linkRun(t, first: 100, count: 1, host: 9000 * Self.cs)
        #expect(s.entry(t, 100).word == Self.linked(9000 * Self.cs))
        #expect(s.bytes(t) == 24 + 8 * 12)
    }

    @Test func extendedEntriesKeepTheirBitmaps() {
        var s = L2Store(geometry: Self.geometry(extendedL2: true))
        let t = Self.table
        s.create(t)
        s.set(t, 7, word: Self.linked(3 * Self.cs), bitmap: 0x0000_0003_0000_000c)
        s.set(t, 9, word: 0, bitmap: 0xffff_ffff_0000_0000)  // all zero subclusters, no cluster
        #expect(s.form(t) == .sparse)
        #expect(s.bytes(t) == 8 * 20)
        #expect(s.entry(t, 7) == (Self.linked(3 * Self.cs), 0x0000_0003_0000_000c))
        #expect(s.entry(t, 9) == (0, 0xffff_ffff_0000_0000))
        #expect(s.zeroRunLength(t, from: 8, limit: 4) == 1)
    }

    @Test func copyingATableIsIndependent() {
        var s = L2Store(geometry: Self.geometry())
        let a = Self.table, b = 9 * Self.cs
        s.create(a)
        s.linkRun(a, first: 0, count: 2, host: 20 * Self.cs)
        s.set(a, 50, word: Self.linked(30 * Self.cs), bitmap: 0)
        s.create(b, copying: a)
        s.set(b, 50, word: 0, bitmap: 0)
        s.set(a, 51, word: Self.linked(31 * Self.cs), bitmap: 0)
        #expect(s.entry(a, 50).word == Self.linked(30 * Self.cs))
        #expect(s.entry(b, 50).word == 0)
        #expect(s.entry(b, 51).word == 0)
        #expect(s.entry(b, 1).word == Self.linked(21 * Self.cs))
    }

    @Test func loadedTablesTakeTheirCheapestForm() {
        var s = L2Store(geometry: Self.geometry())
        s.loader = { offset in
            var w = ContiguousArray<UInt64>(repeating: 0, count: 8192)
            switch offset / Self.cs {
            case 1:  // preallocated: one run
                for i in 0..<8192 { w[i] = Self.linked(UInt64(100 + i) * Self.cs) }
            case 2:  // three entries, one a zero cluster: the map
                w[3] = Self.linked(7 * Self.cs)
                w[70] = EntryBits.zero
                w[8000] = 9 * Self.cs  // shared: no COPIED
            default:  // every other entry, not linked: dense
                for i in stride(from: 0, to: 8192, by: 2) { w[i] = UInt64(100 + i) * Self.cs }
            }
            return w
        }
        #expect(s.entry(1 * Self.cs, 8191).word == Self.linked(8291 * Self.cs))
        #expect(s.form(1 * Self.cs) == .runs)
        #expect(s.bytes(1 * Self.cs) == 24)
        #expect(s.entry(2 * Self.cs, 70).word == EntryBits.zero)
        #expect(s.entry(2 * Self.cs, 8000).word == 9 * Self.cs)
        #expect(s.entry(2 * Self.cs, 4).word == 0)
        #expect(s.form(2 * Self.cs) == .sparse)
        #expect(s.bytes(2 * Self.cs) == 8 * 12)
        #expect(s.entry(3 * Self.cs, 4094).word == 4194 * Self.cs)
        #expect(s.form(3 * Self.cs) == .dense)
    }

    /// Random links, sets, copies and queries on small tables (4 KiB clusters: 512 entries, the
    /// map holding at most 192), against a dictionary of entries.
    @Test(arguments: [(1, false), (2, false), (3, true), (4, true)])
    func l2MatchesADictionary(seed: UInt64, extended: Bool) {
        let g = Self.geometry(clusterBits: 12, extendedL2: extended)
        let n = g.l2Entries
        let cs = g.clusterSize
        var rng = SplitMix64(seed: seed)
        var s = L2Store(geometry: g)
        var model: [UInt64: [Int: (UInt64, UInt64)]] = [:]
        let tables: [UInt64] = (1...6).map { UInt64($0) * cs }
        for t in tables {
            s.create(t)
            model[t] = [:]
        }
        var forms = Set<String>()
        for step in 0..<6000 {
            let t = tables[Int(rng.below(UInt64(tables.count)))]
            switch rng.below(10) {
            case 0...3:
                // Mostly short runs, sometimes long ones; sometimes host-contiguous with the last.
                let first = Int(rng.below(UInt64(n)))
                let count = min(n - first, 1 + Int(rng.below(rng.below(8) == 0 ? 300 : 4)))
                let host = (1000 + rng.below(1 << 20)) * cs
                s.linkRun(t, first: first, count: count, host: host)
                for j in 0..<count { model[t]?[first + j] = ((host + UInt64(j) * cs) | EntryBits.copied, 0) }
            case 4...7:
                let i = Int(rng.below(UInt64(n)))
                let word: UInt64
                switch rng.below(3) {
                case 0: word = 0
                case 1: word = ((2000 + rng.below(1000)) * cs) | EntryBits.copied
                default: word = rng.next() & (EntryBits.offsetMask | EntryBits.zero)
                }
                let bitmap = extended && rng.below(2) == 0 ? rng.next() : 0
                s.set(t, i, word: word, bitmap: bitmap)
                model[t]?[i] = (word, bitmap)
            case 8:
                // COW of another table into this one.
                let from = tables[Int(rng.below(UInt64(tables.count)))]
                guard from != t else { continue }
                s.create(t, copying: from)
                model[t] = model[from]
            default:
                s.create(t)
                model[t] = [:]
            }
            forms.insert("\(s.form(t))")
            // Never more than the dense words plus a full run list.
            #expect(s.bytes(t) <= n * (extended ? 16 : 8) + L2Store.maxRuns * 24)
            if step % 50 == 0 {
                for u in tables {
                    for i in 0..<n {
                        let (w, b) = s.entry(u, i)
                        let m = model[u]?[i] ?? (0, 0)
                        if w != m.0 || b != m.1 {
                            Issue.record("step \(step): table \(u / cs) entry \(i) is \(w)/\(b), model \(m.0)/\(m.1)")
                            return
                        }
                    }
                    for _ in 0..<20 {
                        let i = Int(rng.below(UInt64(n)))
                        let limit = 1 + Int(rng.below(UInt64(n - i)))
                        var expected = 0
                        while expected < limit && (model[u]?[i + expected] ?? (0, 0)) == (0, 0) { expected += 1 }
                        #expect(s.zeroRunLength(u, from: i, limit: limit) == expected, "step \(step) table \(u / cs) from \(i)")
                    }
                }
            }
        }
        #expect(forms == ["empty", "runs", "sparse", "dense"])
    }

    // MARK: refcount blocks

    @Test func refcountRunsSplitAndMerge() {
        var s = RefcountStore(geometry: Self.geometry())
        let b = 2 * Self.cs
        s.zero(b)
        #expect(s.maxRuns == 4096)  // 32768 refcounts * 2 B / 16 B per run
        s.set(b, 0..<10, 1)
        s.set(b, 10, 1)  // extends the run
        #expect(s.form(b) == .runs)
        #expect(s.bytes(b) == 16)
        #expect(s.get(b, 10) == 1)
        #expect(s.get(b, 11) == 0)
        // Freeing 5 splits it.
        s.set(b, 5, 0)
        #expect(s.bytes(b) == 32)
        #expect(s.get(b, 5) == 0)
        #expect(s.runLength(b, from: 0, limit: 100) == 5)
        #expect(s.runLength(b, from: 5, limit: 100) == 1)
        #expect(s.runLength(b, from: 6, limit: 100) == 5)
        #expect(s.firstZero(b, from: 0, end: 100) == 5)
        #expect(s.firstZero(b, from: 6, end: 100) == 11)
        #expect(s.firstNonZero(b, from: 5, end: 100) == 6)
        // Taking it again joins the runs.
        s.set(b, 5, 1)
        #expect(s.bytes(b) == 16)
        #expect(s.runLength(b, from: 0, limit: 100) == 11)
        // A range inside a run: three runs; back to 1: one.
        s.set(b, 3..<8, 2)
        #expect(s.bytes(b) == 48)
        #expect(s.runLength(b, from: 3, limit: 100) == 5)
        #expect(s.get(b, 8) == 1)
        s.set(b, 3..<8, 1)
        #expect(s.bytes(b) == 16)
        // A range spanning a gap and two runs.
        s.set(b, 20..<30, 1)
        s.set(b, 40..<50, 3)
        s.set(b, 25..<45, 2)
        #expect(s.bytes(b) == 4 * 16)
        #expect(s.runLength(b, from: 25, limit: 100) == 20)
        #expect(s.get(b, 24) == 1)
        #expect(s.get(b, 45) == 3)
        #expect(s.firstZero(b, from: 20, end: 100) == 50)
    }

    /// A range set to 0 clears it (the undo of an allocation that met a missing refcount
    /// block frees the clusters it had counted in one step): the front, the middle or all of a
    /// run, and a range with nothing to clear.
    @Test func refcountRangesClearToZero() {
        var s = RefcountStore(geometry: Self.geometry())
        let b = 2 * Self.cs
        s.zero(b)
        s.set(b, 100..<612, 1)
        s.set(b, 100..<356, 0)
        #expect(s.get(b, 355) == 0)
        #expect(s.get(b, 356) == 1)
        #expect(s.runLength(b, from: 356, limit: 1000) == 256)
        #expect(s.firstNonZero(b, from: 0, end: 1000) == 356)
        #expect(s.bytes(b) == 16)
        s.set(b, 400..<410, 0)
        #expect(s.bytes(b) == 32)
        #expect(s.runLength(b, from: 356, limit: 1000) == 44)
        #expect(s.firstNonZero(b, from: 400, end: 1000) == 410)
        s.set(b, 356..<612, 0)
        #expect(s.bytes(b) == 0)
        #expect(s.firstNonZero(b, from: 0, end: 32768) == 32768)
        // Nothing set: still nothing, in runs and in a block never touched.
        s.set(b, 0..<10, 0)
        #expect(s.bytes(b) == 0)
        s.set(4 * Self.cs, 0..<10, 0)
        #expect(s.get(4 * Self.cs, 3) == 0)
    }

    @Test func refcountBlocksGoDenseAtTheirOwnSize() {
        var s = RefcountStore(geometry: Self.geometry())
        let b = 2 * Self.cs
        s.zero(b)
        for k in 0..<4096 { s.set(b, 2 * k, 1) }
        #expect(s.form(b) == .runs)
        #expect(s.bytes(b) == 4096 * 16)
        s.set(b, 8192, 1)
        #expect(s.form(b) == .dense)
        #expect(s.bytes(b) == 32768 * 2)
        #expect(s.get(b, 8190) == 1)
        #expect(s.get(b, 8191) == 0)
        #expect(s.get(b, 8192) == 1)
        s.set(b, 8191, 0xffff)
        #expect(s.get(b, 8191) == 0xffff)
        #expect(s.firstZero(b, from: 8190, end: 9000) == 8193)
        #expect(s.runLength(b, from: 8191, limit: 10) == 1)

        // refcount_bits=64: 8192 refcounts per block, dense words of 8 bytes.
        var w = RefcountStore(geometry: Self.geometry(refcountOrder: 6))
        #expect(w.maxRuns == 4096)
        w.zero(b)
        for k in 0...4096 { w.set(b, 2 * k, 1) }
        #expect(w.form(b) == .dense)
        #expect(w.bytes(b) == 8192 * 8)
        w.set(b, 1, 1 << 40)
        #expect(w.get(b, 1) == 1 << 40)
        #expect(w.runLength(b, from: 0, limit: 5) == 1)
    }

    @Test func loadedRefcountBlocks() {
        var s = RefcountStore(geometry: Self.geometry())
        s.loader = { offset in
            var w = ContiguousArray<UInt64>(repeating: 0, count: 32768)
            if offset == Self.cs {
                for i in 0..<10 { w[i] = 1 }
                w[12] = 2
            } else {
                for i in stride(from: 0, to: 32768, by: 2) { w[i] = 1 }
            }
            return w
        }
        #expect(s.get(Self.cs, 9) == 1)
        #expect(s.get(Self.cs, 12) == 2)
        #expect(s.form(Self.cs) == .runs)
        #expect(s.bytes(Self.cs) == 32)
        #expect(s.get(2 * Self.cs, 4) == 1)
        #expect(s.get(2 * Self.cs, 5) == 0)
        #expect(s.form(2 * Self.cs) == .dense)
    }

    /// Random single and range updates on small blocks (512 B clusters: 256 16-bit or 64 64-bit
    /// refcounts; dense past 32 runs, or 8), against a dictionary.
    @Test(arguments: [(1, 4), (2, 4), (3, 6), (4, 0)])
    func refcountsMatchADictionary(seed: UInt64, order: Int) {
        let g = Self.geometry(clusterBits: 9, refcountOrder: order)
        let n = Int(g.refblockEntries)
        let maxValue = (UInt64(1) << UInt64(min(g.refcountBits, 63))) - 1
        var rng = SplitMix64(seed: seed)
        var s = RefcountStore(geometry: g)
        // 64 refcounts of 64 bits, or 4096 of one bit mostly set in ranges, rarely split into
        // more runs than the default limit: lower it so they go dense too.
        if order != 4 { s.maxRuns = 8 }
        let blocks: [UInt64] = (1...2).map { UInt64($0) * 512 }
        var model: [UInt64: [Int: UInt64]] = [:]
        for b in blocks {
            s.zero(b)
            model[b] = [:]
        }
        var forms = Set<String>()
        for step in 0..<8000 {
            let b = blocks[Int(rng.below(UInt64(blocks.count)))]
            func value() -> UInt64 { min(maxValue, [1, 1, 1, 2, 3, maxValue][Int(rng.below(6))]) }
            // Resets are rare, so blocks fragment until dense.
            switch rng.below(100) {
            case 1..<55:
                let i = Int(rng.below(UInt64(n)))
                let v = rng.below(3) == 0 ? 0 : value()
                s.set(b, i, v)
                model[b]?[i] = v
            case 55..<100:
                let lo = Int(rng.below(UInt64(n)))
                let hi = min(n, lo + 1 + Int(rng.below(rng.below(4) == 0 ? 100 : 6)))
                let v = value()
                s.set(b, lo..<hi, v)
                for i in lo..<hi { model[b]?[i] = v }
            default:
                s.zero(b)
                model[b] = [:]
            }
            forms.insert("\(s.form(b))")
            #expect(s.bytes(b) <= n * (g.refcountBits <= 16 ? 2 : 8) + 16 * 16)
            if step % 40 == 0 {
                for u in blocks {
                    func m(_ i: Int) -> UInt64 { model[u]?[i] ?? 0 }
                    for i in 0..<n where s.get(u, i) != m(i) {
                        Issue.record("step \(step): block \(u) refcount \(i) is \(s.get(u, i)), model \(m(i))")
                        return
                    }
                    for _ in 0..<10 {
                        let i = Int(rng.below(UInt64(n)))
                        let limit = 1 + Int(rng.below(UInt64(n - i)))
                        var run = 1
                        while run < limit && m(i + run) == m(i) { run += 1 }
                        #expect(s.runLength(u, from: i, limit: limit) == run, "step \(step) block \(u) from \(i)")
                        let end = i + limit
                        var z = i
                        while z < end && m(z) != 0 { z += 1 }
                        #expect(s.firstZero(u, from: i, end: end) == z)
                        var nz = i
                        while nz < end && m(nz) == 0 { nz += 1 }
                        #expect(s.firstNonZero(u, from: i, end: end) == nz)
                    }
                }
            }
        }
        #expect(forms.isSuperset(of: ["runs", "dense"]))
    }
}

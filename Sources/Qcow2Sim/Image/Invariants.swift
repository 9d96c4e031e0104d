/// Structural invariants of an image, checked after every simulation in debug builds (and so in
/// every test; the caches check their own, `CacheSystem.finish`): every host cluster's refcount equals the number of references to it (header, refcount table
/// and blocks, L1 table, L2 tables, data clusters), as `qemu-img check` would require.
extension Qcow2Image {
    /// Every problem found; empty when the image is consistent. Refcounts are compared only for
    /// images whose refcounts were right when loaded (`refcountsTrusted`).
    func checkInvariants() -> [String] {
        refcountsTrusted ? refcountProblems(limit: 20) : []
    }

    /// Clusters whose refcount differs from their number of references (at most `limit`).
    ///
    /// - Complexity: O(references + clusters with a refcount), never proportional to the largest
    ///   offset an entry names (a damaged image may name offsets near 2^56).
    func refcountProblems(limit: Int) -> [String] {
        let g = geometry
        let cs = g.clusterSize
        var refs: [UInt64: UInt64] = [:]
        func reference(_ offset: UInt64, _ bytes: UInt64) {
            guard bytes > 0 else { return }
            var c = offset >> UInt64(g.clusterBits)
            let last = (offset + bytes - 1) >> UInt64(g.clusterBits)
            while c <= last {
                refs[c, default: 0] += 1
                c += 1
            }
        }
        reference(0, cs)
        reference(reftableOffset, UInt64(reftable.count) * 8)
        for e in reftable where e & EntryBits.reftableOffsetMask != 0 { reference(e & EntryBits.reftableOffsetMask, cs) }
        reference(l1Offset, UInt64(l1.count) * 8)
        for e in l1 where e & EntryBits.offsetMask != 0 {
            let table = e & EntryBits.offsetMask
            reference(table, cs)
            // As `qemu-img check`: a table two L1 entries share counts its references twice.
            for i in 0..<g.l2Entries {
                let w = l2Store.entry(table, i).word
                switch g.clusterType(w) {
                case .normal, .zeroAlloc: reference(w & EntryBits.offsetMask, cs)
                default: break
                }
            }
        }
        var problems: [String] = []
        func compare(_ k: UInt64, _ rc: UInt64) {
            let expected = refs[k] ?? 0
            if rc != expected && problems.count < limit {
                problems.append("image \(chainIndex): cluster \(k) has refcount \(rc) but \(expected) references")
            }
        }
        // Every cluster with a refcount (walking the refcount blocks), then every referenced
        // cluster without one.
        for (t, e) in reftable.enumerated() where e & EntryBits.reftableOffsetMask != 0 {
            let block = e & EntryBits.reftableOffsetMask
            let base = UInt64(t) << UInt64(g.refblockBits)
            var i = rcStore.firstNonZero(block, from: 0, end: Int(g.refblockEntries))
            while i < Int(g.refblockEntries) {
                compare(base + UInt64(i), rcStore.get(block, i))
                i = rcStore.firstNonZero(block, from: i + 1, end: Int(g.refblockEntries))
            }
        }
        for k in refs.keys {
            let t = Int(g.refblockIndex(ofCluster: k))
            let block = t < reftable.count ? reftable[t] & EntryBits.reftableOffsetMask : 0
            if block == 0 || rcStore.get(block, Int(k & (g.refblockEntries - 1))) == 0 { compare(k, 0) }
        }
        return problems
    }
}

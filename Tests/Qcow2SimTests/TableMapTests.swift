import QcowTestSupport
import Testing

@testable import Qcow2Sim

/// `TableMap` (the stores' offset → table map) against a `Dictionary`: cluster-aligned offsets
/// in a stride that collides in the low bits, random ones, replacements, copies.
@Suite struct TableMapTests {
    final class Box {
        let n: Int
        init(_ n: Int) { self.n = n }
    }

    @Test func agreesWithADictionary() {
        var map = TableMap<Box>()
        var model: [UInt64: Int] = [:]
        var rng = SplitMix64(seed: 3)
        for k in 0..<20_000 {
            // Offsets below 2^56, cluster-aligned, a third of them in a 2^32 stride.
            let key = k % 3 == 0 ? UInt64(k) << 32 : (rng.next() & ((1 << 56) - 1)) & ~0xFFFF
            map.set(key, Box(k))
            model[key] = k
            if k % 7 == 0, let again = model.keys.first {
                // A replacement keeps the count.
                map.set(again, Box(-k))
                model[again] = -k
            }
        }
        #expect(map.count == model.count)
        for (key, n) in model { #expect(map[key]?.n == n) }
        #expect(map[1 << 60] == nil)
        #expect(map[.max] == nil)
        #expect(map.values.count == model.count)
        #expect(Set(map.values.map(\.n)) == Set(model.values))
    }

    /// A copy is a value: setting through one leaves the other as it was.
    @Test func copiesAreIndependent() {
        var a = TableMap<Box>()
        a.set(65536, Box(1))
        var b = a
        b.set(65536, Box(2))
        b.set(131072, Box(3))
        #expect(a[65536]?.n == 1)
        #expect(a[131072] == nil)
        #expect(a.count == 1)
        #expect(b[65536]?.n == 2)
        #expect(b.count == 2)
    }
}

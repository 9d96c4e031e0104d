import QcowTestSupport
import Testing

@testable import Qcow2Sim

/// The stack pass's order structures against plain arrays: `PositionSet`'s counts above a
/// member, and `RecencyStack`'s depths (Mattson et al. 1970: the depth of a lookup is one more
/// than the distinct tables used since the table's last use) over seeded random lookups long
/// enough to renumber the positions many times and grow them. A failure names its seed.
@Suite struct StackDistanceTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func positionSetCountsAboveAsAnArrayDoes(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var set = PositionSet(capacity: 256)
        var members: [Int] = []  // increasing
        var next = 0
        for step in 0..<20_000 {
            if next == set.capacity || rng.below(500) == 0 {
                // Renumber as `RecencyStack.compact` does: members become 0..<k.
                let k = members.count
                set.reset(members: k, capacity: max(set.capacity, k * 8))
                members = Array(0..<k)
                next = k
            }
            if members.isEmpty || rng.below(3) != 0 {
                set.insert(next)
                members.append(next)
                next += 1
            } else {
                let j = Int(rng.below(UInt64(members.count)))
                set.remove(members[j])
                members.remove(at: j)
            }
            if !members.isEmpty {
                let m = members[Int(rng.below(UInt64(members.count)))]
                let expected = members.filter { $0 >= m }.count
                let got = set.atOrAbove(m)
                #expect(got == expected, "seed \(seed) step \(step): \(got) members at or above \(m), expected \(expected)")
                if got != expected { return }
            }
        }
        var listed: [Int] = []
        set.forEach(below: next) { listed.append($0) }
        #expect(listed == members, "seed \(seed)")
    }

    @Test func qemuOrderHandWorked() {
        // Lookups A B C A B D A, each released at once: A's second lookup has B and C above it
        // (depth 3), B's has C and A (3), A's third has B and D (3); a cache of 2 hits none of
        // them, a cache of 3 all three.
        let stack = RecencyStack(byRelease: true)
        var seen = Set<Int>()
        for id in [0, 1, 2, 0, 1, 3, 0] {
            stack.reserve(ids: 4, tables: 4)
            stack.get(id, resident: seen.contains(id), held: false)
            stack.put(id, released: true)
            seen.insert(id)
        }
        #expect(stack.hits(upTo: 2) == 0)
        #expect(stack.hits(upTo: 3) == 3)
        #expect(stack.hits(upTo: 4) == 3)
    }

    @Test(arguments: [(7, 40), (8, 700), (9, 3000)] as [(UInt64, Int)])
    func depthsAsAListKeepsThem(seed: UInt64, tables: Int) {
        // Each lookup released at once (no pins): both orders are the recency list's, whose
        // index of a table is its depth minus one.
        var rng = SplitMix64(seed: seed)
        let qemu = RecencyStack(byRelease: true), lru = RecencyStack(byRelease: false)
        var list: [Int] = []  // most recent first
        var hits = [Int](repeating: 0, count: tables + 2)
        let lookups = 60_000
        for _ in 0..<lookups {
            // A skewed choice, so that both small and large depths occur.
            let id = rng.below(4) == 0 ? Int(rng.below(UInt64(tables))) : Int(rng.below(UInt64(max(tables / 8, 1))))
            let k = list.firstIndex(of: id)
            for s in [qemu, lru] {
                s.reserve(ids: tables, tables: tables)
                s.get(id, resident: k != nil, held: false)
                s.put(id, released: true)
            }
            if let k {
                hits[k + 1] += 1
                list.remove(at: k)
            }
            list.insert(id, at: 0)
        }
        var cumulative = 0
        for n in 1...tables {
            cumulative += hits[n]
            #expect(qemu.hits(upTo: n) == cumulative, "seed \(seed) qemu, \(n) entries")
            #expect(lru.hits(upTo: n) == cumulative, "seed \(seed) lru, \(n) entries")
            if qemu.hits(upTo: n) != cumulative { return }
        }
    }
}

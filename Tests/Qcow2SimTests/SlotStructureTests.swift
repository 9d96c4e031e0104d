import Testing

@testable import Qcow2Sim

/// The cache's slot structures on their own, with hand-worked states: the recency list circular
/// through its sentinel and the doubly linked offset index.
@Suite("cache slot structures")
struct SlotStructureTests {
    /// The list's order from the front, read through `firstUnpinned` with the front slots
    /// pinned one by one.
    private func order(_ list: RecencyList, capacity: Int) -> [Int] {
        var pins = [Int32](repeating: 0, count: capacity)
        var out: [Int] = []
        while let i = pins.withUnsafeBufferPointer({ list.firstUnpinned(PinCounts($0)) }) {
            out.append(i)
            pins[i] = 1
        }
        return out
    }

    @Test("the recency list: empty, one slot, moves to the back, removal at either end and inside")
    func recencyList() {
        var list = RecencyList(capacity: 4)
        #expect(list.head == -1)
        #expect(order(list, capacity: 4) == [])
        list.moveToBack(2)
        #expect(list.head == 2)
        #expect(order(list, capacity: 4) == [2])
        // Moving the only slot, already last, changes nothing.
        list.moveToBack(2)
        #expect(order(list, capacity: 4) == [2])
        list.remove(2)
        #expect(list.head == -1)
        #expect(order(list, capacity: 4) == [])
        // Removing an unlinked slot is a no-op.
        list.remove(2)
        #expect(order(list, capacity: 4) == [])
        for i in [0, 1, 2, 3] { list.moveToBack(i) }
        #expect(order(list, capacity: 4) == [0, 1, 2, 3])
        list.moveToBack(0)  // the front to the back
        #expect(order(list, capacity: 4) == [1, 2, 3, 0])
        list.moveToBack(2)  // from inside
        #expect(order(list, capacity: 4) == [1, 3, 0, 2])
        list.remove(1)  // the front
        #expect(list.head == 3)
        list.remove(2)  // the back
        #expect(order(list, capacity: 4) == [3, 0])
        list.moveToBack(1)  // relinked after removal
        #expect(order(list, capacity: 4) == [3, 0, 1])
        // A pinned front slot is skipped.
        var pins: [Int32] = [0, 0, 0, 1]
        #expect(pins.withUnsafeBufferPointer { list.firstUnpinned(PinCounts($0)) } == 0)
        pins = [1, 1, 0, 1]
        #expect(pins.withUnsafeBufferPointer { list.firstUnpinned(PinCounts($0)) } == nil)
    }

    @Test("the offset index: keys sharing a bucket, removal at the chain's head, middle and tail")
    func offsetIndex() {
        // 4 slots: 16 buckets (the minimum).
        var index = OffsetIndex(capacity: 4)
        #expect(index.find(0) == nil)
        #expect(index.find(0x1_0000) == nil)
        let keys: [UInt64] = [0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000]
        for (slot, key) in keys.enumerated() { index.insert(key, slot) }
        for (slot, key) in keys.enumerated() { #expect(index.find(key) == slot) }
        // Every order of removal leaves the others found, whichever chain position each held.
        for victim in 0..<4 {
            var copy = OffsetIndex(capacity: 4)
            for (slot, key) in keys.enumerated() { copy.insert(key, slot) }
            copy.remove(slot: victim)
            for (slot, key) in keys.enumerated() { #expect(copy.find(key) == (slot == victim ? nil : slot)) }
            // The slot takes a new key; removing it again and an unindexed slot are safe.
            copy.insert(0x9_0000, victim)
            #expect(copy.find(0x9_0000) == victim)
            copy.remove(slot: victim)
            copy.remove(slot: victim)
            #expect(copy.find(0x9_0000) == nil)
            for (slot, key) in keys.enumerated() where slot != victim { #expect(copy.find(key) == slot) }
        }
        // Keys forced into one chain: the bucket is bits 32 up of key × 0x9E3779B97F4A7C15,
        // masked to 16 buckets (bits 32–35), and a key that is a multiple of 2^36 makes a product
        // whose low 36 bits are 0: bucket 0 for all four, one chain, the last inserted first.
        var chain = OffsetIndex(capacity: 4)
        let same: [UInt64] = [1 << 40, 1 << 44, 1 << 48, 1 << 52]
        for (slot, key) in same.enumerated() { chain.insert(key, slot) }
        chain.remove(slot: 1)  // inside the chain (3, 2, 1, 0)
        chain.remove(slot: 3)  // the head (inserted last)
        #expect(chain.find(same[0]) == 0)
        #expect(chain.find(same[1]) == nil)
        #expect(chain.find(same[2]) == 2)
        #expect(chain.find(same[3]) == nil)
        chain.remove(slot: 0)  // the tail
        #expect(chain.find(same[2]) == 2)
        #expect(chain.find(same[0]) == nil)
    }
}

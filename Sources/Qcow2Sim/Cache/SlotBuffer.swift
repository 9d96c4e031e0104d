/// A fixed-size buffer of trivial values with unchecked, retain-free element access, for the
/// per-lookup state of the caches (slot arrays, the offset index, bit sets, recency links).
///
/// Why not `ContiguousArray`: each element store through a class-held array pays a uniqueness
/// check and often a retain/release pair; `qcow2sim-bench read-1e7` spent 80 % of its time in
/// `swift_retain`/`swift_release` with arrays here. The memory is owned by a small class
/// (`storage`), so copies of a `SlotBuffer` alias one buffer: it is used only inside reference
/// types (`MetadataCache`) and the structs they own, never copied to be mutated separately.
struct SlotBuffer<Element: BitwiseCopyable> {
    private final class Storage {
        let base: UnsafeMutablePointer<Element>
        init(count: Int, repeating value: Element) {
            base = UnsafeMutablePointer<Element>.allocate(capacity: max(count, 1))
            base.initialize(repeating: value, count: max(count, 1))
        }
        deinit { base.deallocate() }
    }

    private let storage: Storage
    private let base: UnsafeMutablePointer<Element>
    /// Number of elements.
    let count: Int

    /// `count` copies of `value`.
    init(count: Int, repeating value: Element) {
        storage = Storage(count: count, repeating: value)
        base = storage.base
        self.count = count
    }

    /// Element `i` (unchecked in release builds).
    @inline(__always) subscript(i: Int) -> Element {
        get {
            assert(i >= 0 && i < count, "slot \(i) out of range 0..<\(count)")
            return base[i]
        }
        nonmutating set {
            assert(i >= 0 && i < count, "slot \(i) out of range 0..<\(count)")
            base[i] = newValue
        }
    }

    /// The elements as a read-only buffer.
    @inline(__always) var buffer: UnsafeBufferPointer<Element> { UnsafeBufferPointer(start: base, count: count) }
}

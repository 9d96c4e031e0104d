/// The volumes a reader has seen, in order of first appearance: ``TraceRecord/volume`` is an
/// index into it (from 1; 0 means "not tagged").
///
/// Names are what `--device` takes for the format: a decimal number for Tencent CBS, Alibaba,
/// SYSTOR'17 (LUN), SPC (ASU) and the native formats, `HOST:DISK` for MSR Cambridge, the file
/// name for fio. A reference type, so a reader held inside ``AnyTraceReader`` and the caller
/// see the same table; one table belongs to one reader (not shared between threads).
public final class VolumeTable {
    /// Names by ID − 1.
    public private(set) var names: [String] = []
    private var numbers: [UInt64: UInt32] = [:]
    private var texts: [[UInt8]: UInt32] = [:]
    // The last number looked up: a trace grouped by volume hits it almost always.
    private var lastNumber: UInt64 = 0
    private var lastID: UInt32 = 0

    /// An empty table.
    public init() {}

    /// The ID of the volume with decimal number `n` (its name is `n` in decimal).
    @inline(__always)
    public func intern(number n: UInt64) -> UInt32 {
        if lastID != 0 && lastNumber == n { return lastID }
        let id: UInt32
        if let known = numbers[n] {
            id = known
        } else {
            names.append(String(n))
            id = UInt32(names.count)
            numbers[n] = id
        }
        lastNumber = n
        lastID = id
        return id
    }

    /// The ID of the volume named by `bytes` (UTF-8).
    public func intern<C: Collection>(text bytes: C) -> UInt32 where C.Element == UInt8 {
        let key = Array(bytes)
        if let known = texts[key] { return known }
        names.append(String(decoding: key, as: UTF8.self))
        let id = UInt32(names.count)
        texts[key] = id
        return id
    }

    /// The name of volume `id` (empty for 0 or an unknown ID).
    public func name(_ id: UInt32) -> String {
        id >= 1 && Int(id) <= names.count ? names[Int(id) - 1] : ""
    }

    /// `names` in the order per-volume runs use: numerically when every name is a decimal
    /// number, by UTF-8 bytes otherwise, so the order never depends on where a volume first
    /// appeared.
    public static func sorted(_ names: [String]) -> [String] {
        let numeric = names.allSatisfy { !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && $0.utf8.count <= 19 }
        if numeric { return names.sorted { UInt64($0) ?? 0 < UInt64($1) ?? 0 } }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }
}

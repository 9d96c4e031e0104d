/// One metadata-cache event, in the vocabulary of QEMU 7.2's `qcow2_cache_*` trace events.
///
/// The simulator emits these in the order QEMU prints them, so a simulated event log and a QEMU
/// trace (with `co 0x…` removed) can be compared line by line. `image` replaces QEMU's coroutine
/// pointer: 0 is the base of the backing chain, the top image has the highest index.
public struct CacheEvent: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The QEMU trace event this mirrors.
    public enum Kind: UInt8, Sendable {
        /// `qcow2_cache_get` (offset and read_from_disk are meaningful).
        case get
        /// `qcow2_cache_get_replace_entry` (index).
        case replaceEntry
        /// `qcow2_cache_get_read` (index).
        case getRead
        /// `qcow2_cache_get_done` (index).
        case getDone
        /// `qcow2_cache_flush` (printed by WRITE and FLUSH alike).
        case flush
        /// `qcow2_cache_entry_flush` (index): write-back of one dirty entry.
        case entryFlush

        /// QEMU's trace event name.
        public var qemuName: String {
            switch self {
            case .get: "qcow2_cache_get"
            case .replaceEntry: "qcow2_cache_get_replace_entry"
            case .getRead: "qcow2_cache_get_read"
            case .getDone: "qcow2_cache_get_done"
            case .flush: "qcow2_cache_flush"
            case .entryFlush: "qcow2_cache_entry_flush"
            }
        }
    }

    /// Which event.
    public var kind: Kind
    /// Chain position of the image whose cache printed it (0 = base).
    public var image: Int
    /// `true` for the L2-table cache, `false` for the refcount-block cache (`is_l2_cache`).
    public var isL2: Bool
    /// Host offset of the table or slice (only for `.get`).
    public var offset: UInt64
    /// `read_from_disk` (only for `.get`): false for "get empty" of a brand-new table.
    public var readFromDisk: Bool
    /// Cache entry index (for every kind but `.get` and `.flush`).
    public var index: Int

    /// Creates an event.
    public init(kind: Kind, image: Int, isL2: Bool, offset: UInt64 = 0, readFromDisk: Bool = true, index: Int = 0) {
        self.kind = kind
        self.image = image
        self.isL2 = isL2
        self.offset = offset
        self.readFromDisk = readFromDisk
        self.index = index
    }

    /// The line as QEMU prints it, with `co 0x…` replaced by `image N`, e.g.
    /// `qcow2_cache_get image 0 is_l2_cache 1 offset 0x40000 read_from_disk 1`.
    public var description: String { line(includeImage: true) }

    /// The line with or without the `image N` field (without it, it equals QEMU's line after
    /// stripping `co 0x… `).
    public func line(includeImage: Bool) -> String {
        var s = kind.qemuName
        if includeImage { s += " image \(image)" }
        s += " is_l2_cache \(isL2 ? 1 : 0)"
        switch kind {
        case .get:
            s += " offset 0x" + String(offset, radix: 16) + " read_from_disk \(readFromDisk ? 1 : 0)"
        case .flush:
            break
        case .replaceEntry, .getRead, .getDone, .entryFlush:
            s += " index \(index)"
        }
        return s
    }

    /// Parses a line in the format of `line(includeImage:)`, with or without `image N`, and
    /// with or without QEMU's `co 0x…` field (which is dropped). `image` defaults to
    /// `defaultImage` when absent. Returns nil for lines that are not cache events.
    public init?(parsing text: Substring, defaultImage: Int = 0) {
        var fields = text.split(separator: " ", omittingEmptySubsequences: true)[...]
        guard let name = fields.popFirst() else { return nil }
        let kind: Kind
        switch name {
        case "qcow2_cache_get": kind = .get
        case "qcow2_cache_get_replace_entry": kind = .replaceEntry
        case "qcow2_cache_get_read": kind = .getRead
        case "qcow2_cache_get_done": kind = .getDone
        case "qcow2_cache_flush": kind = .flush
        case "qcow2_cache_entry_flush": kind = .entryFlush
        default: return nil
        }
        var image = defaultImage
        var isL2: Bool?
        var offset: UInt64 = 0
        var rfd = true
        var index = 0
        while let key = fields.popFirst() {
            guard let value = fields.popFirst() else { return nil }
            switch key {
            case "co": continue
            case "image": guard let v = Int(value) else { return nil }; image = v
            case "is_l2_cache": isL2 = value == "1"
            case "offset":
                guard value.hasPrefix("0x"), let v = UInt64(value.dropFirst(2), radix: 16) else { return nil }
                offset = v
            case "read_from_disk": rfd = value == "1"
            case "index": guard let v = Int(value) else { return nil }; index = v
            default: return nil
            }
        }
        guard let isL2 else { return nil }
        self.init(kind: kind, image: image, isL2: isL2, offset: offset, readFromDisk: rfd, index: index)
    }
}

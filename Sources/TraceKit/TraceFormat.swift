/// The trace formats TraceKit reads. Each has one reader file; detection by content is in
/// ``TraceFormat/detect(_:)``. The raw value is the `--trace-format` name.
public enum TraceFormat: String, Sendable, CaseIterable {
    /// qcow2sim's CSV: `[time,]op,offset,length` (``NativeTraceReader``).
    case native
    /// qcow2sim's binary native format: fixed-size records after a header with a magic
    /// (``NativeBinaryTraceReader``, layout in ``NativeBinaryTrace``).
    case binary
    /// blktrace binary per-CPU files (``BlktraceReader``).
    case blktrace
    /// blkparse default text output (``BlkparseReader``).
    case blkparse
    /// fio iolog v2 or v3 (`FioIologFormat`).
    case fio
    /// VMware vscsi binary v1/v2 (``VscsiReader``).
    case vscsi
    /// CloudPhysics vscsi CSV twin `version,time,op,size,lbn` (`CloudPhysicsCSVFormat`).
    case vscsiCSV = "vscsi-csv"
    /// MSR Cambridge CSV (`MSRCambridgeFormat`).
    case msr
    /// SNIA SYSTOR'17 CSV (`SystorFormat`).
    case systor
    /// Tencent CBS CSV (`TencentCBSFormat`).
    case tencent
    /// Alibaba block trace CSV (`AlibabaFormat`).
    case alibaba
    /// SPC / UMass CSV (`SPCFormat`).
    case spc
    /// QEMU's trace log of `blk_co_*` events (`QemuTraceLogFormat`).
    case qemu

    /// Names accepted by `--trace-format`, in help order.
    public static var names: [String] { allCases.map(\.rawValue) }

    /// Parses a `--trace-format` value, throwing a message listing the valid names (exit 64).
    public static func parse(_ name: String) throws -> TraceFormat {
        guard let f = TraceFormat(rawValue: name.lowercased()) else {
            throw TraceError(
                file: "--trace-format", location: .file,
                message: "unknown trace format '\(name)' (expected one of: \(names.joined(separator: ", ")))",
                exitCode: 64)
        }
        return f
    }

    /// qcow2sim's own formats (CSV or binary), whose volume field is a decimal number.
    var isNative: Bool { self == .native || self == .binary }

    /// Whether the format's clock is absolute (epoch, FILETIME, uptime), so the mapping stage
    /// rebases it so the first record is at 0.
    var hasAbsoluteTime: Bool {
        switch self {
        case .native, .binary, .fio, .spc: false
        case .blktrace, .blkparse, .vscsi, .vscsiCSV, .msr, .systor, .tencent, .alibaba, .qemu: true
        }
    }

    /// The default reorder window (see ``TraceOptions/reorderWindow``): the public traces known
    /// to be unsorted get one; everything else must be in order.
    var defaultReorderWindow: Int {
        switch self {
        case .systor, .tencent, .alibaba: 65536
        default: 0
        }
    }

    /// Guesses the format from the first bytes of the (decompressed) input.
    ///
    /// Binary formats are recognised by their magic (qcow2sim binary, blktrace) or record structure (vscsi's
    /// version byte); text formats by their first content line. Falls back to `.native`, whose
    /// reader then reports what it found.
    public static func detect(_ head: ArraySlice<UInt8>) -> TraceFormat {
        if NativeBinaryTrace.hasMagic(head) { return .binary }
        let b = Array(head)
        if b.count >= 4 {
            let le = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
            if le & 0xFFFF_FF00 == Blktrace.magic || le.byteSwapped & 0xFFFF_FF00 == Blktrace.magic { return .blktrace }
        }
        let binary = b.prefix(4096).contains(0)
        if binary, b.count >= 16, b[15] == 1 || b[15] == 2 {
            let size = b[15] == 1 ? 32 : 40
            if b.count < size + 16 || b[size + 15] == b[15] { return .vscsi }
        }
        if binary { return .native }
        return b.withUnsafeBufferPointer { p -> TraceFormat in
            // The first content line, fully inside the head.
            var start = 0
            var firstLine: Range<Int>?
            while start < p.count {
                var end = start
                while end < p.count && p[end] != 0x0A { end += 1 }
                let r = start..<end
                if !Scan.isBlankOrComment(p, r) { firstLine = Scan.trim(p, r); break }
                start = end + 1
            }
            guard let line = firstLine else { return .native }
            if Scan.hasPrefix(p, line, "fio version") { return .fio }
            if containsQemuEvent(p) { return .qemu }
            var words: [Range<Int>] = []
            Scan.words(p, line, into: &words)
            if words.count >= 7, p[words[0]].contains(UInt8(ascii: ",")), Scan.isDigit(p[words[0].lowerBound]),
                p[words[3]].contains(UInt8(ascii: "."))
            {
                return .blkparse
            }
            var f: [Range<Int>] = []
            Scan.split(p, line, separator: UInt8(ascii: ","), into: &f)
            func eq(_ i: Int, _ s: StaticString) -> Bool { i < f.count && Scan.equalsIgnoringCase(p, f[i], s) }
            func num(_ i: Int) -> Bool { i < f.count && !f[i].isEmpty && Scan.isDigit(p[f[i].lowerBound]) }
            if eq(0, "version") { return .vscsiCSV }
            if eq(0, "device_id") { return .alibaba }
            if eq(0, "Timestamp") { return f.count == 7 ? .msr : f.count == 6 ? .systor : .native }
            switch f.count {
            case 7 where eq(3, "Read") || eq(3, "Write"): return .msr
            case 6 where eq(2, "R") || eq(2, "W"): return .systor
            case 5 where eq(1, "R") || eq(1, "W"): return .alibaba
            case 5 where num(0) && num(1) && num(4) && (eq(3, "0") || eq(3, "1")) && num(2): return .tencent
            case 5 where num(0) && (eq(2, "28") || eq(2, "2a") || eq(2, "08") || eq(2, "0a") || eq(2, "88") || eq(2, "8a")):
                return .vscsiCSV
            case 5...16 where eq(3, "r") || eq(3, "w"): return .spc
            default: return .native
            }
        }
    }

    private static func containsQemuEvent(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        let needle = Array("blk_co_p".utf8)
        guard p.count >= needle.count else { return false }
        var i = 0
        while i + needle.count <= p.count {
            if p[i] == needle[0] {
                var k = 1
                while k < needle.count && p[i + k] == needle[k] { k += 1 }
                if k == needle.count { return true }
            }
            i += 1
        }
        return false
    }
}

/// The trace formats TraceKit reads. Each has one reader file; detection by content is in
/// ``TraceFormat/detect(_:)``.
public enum TraceFormat: String, Sendable, CaseIterable {
    /// qcow2sim's CSV: `[time,]op,offset,length` (see ``NativeTraceReader``).
    case native

    /// Names accepted by `--trace-format`, in help order.
    public static var names: [String] { allCases.map(\.rawValue) }

    /// Parses a `--trace-format` value, throwing a message listing the valid names.
    public static func parse(_ name: String) throws -> TraceFormat {
        guard let f = TraceFormat(rawValue: name.lowercased()) else {
            throw TraceError(file: "--trace-format", location: .file,
                             message: "unknown trace format '\(name)' (expected one of: \(names.joined(separator: ", ")))",
                             exitCode: 64)
        }
        return f
    }

    /// Whether the format's clock is absolute (epoch, FILETIME), so readers rebase it to 0.
    var hasAbsoluteTime: Bool {
        switch self {
        case .native: false
        }
    }

    /// The default reorder window (see ``TraceOptions/reorderWindow``).
    var defaultReorderWindow: Int {
        switch self {
        case .native: 0
        }
    }

    /// Guesses the format from the first bytes of the (decompressed) input.
    ///
    /// Binary formats are recognised by their magic or record structure; text formats by their
    /// first non-comment line. Falls back to `.native`, whose reader then reports what it found.
    public static func detect(_ head: ArraySlice<UInt8>) -> TraceFormat {
        .native
    }
}

import TraceKit

/// Typed argument values shared by the trace commands.
enum TraceArgs {
    /// A byte count with optional binary K/M/G/T suffix.
    static func bytes(_ text: String, _ option: String) throws -> UInt64 {
        guard let v = ByteCount.parse(text) else {
            throw UsageError("invalid value '\(text)' for \(option) (expected bytes, optionally with a K, M, G or T suffix)")
        }
        return v
    }

    /// A finite decimal number.
    static func double(_ text: String, _ option: String) throws -> Double {
        guard let v = Double(text), v.isFinite else {
            throw UsageError("invalid value '\(text)' for \(option) (expected a number)")
        }
        return v
    }

    /// A finite number of at least 0; `what` completes the message's "expected a non-negative …"
    /// (`number`, `number of seconds`).
    static func nonNegative(_ text: String, _ option: String, what: String = "number") throws -> Double {
        let v = try double(text, option)
        guard v >= 0 else { throw UsageError("invalid value '\(text)' for \(option) (expected a non-negative \(what))") }
        return v
    }
}

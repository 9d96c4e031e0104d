import Foundation

/// Why a validation run could not produce a comparison, with the sysexits status the CLI
/// returns for it.
public enum ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A QEMU tool (or another required program) is not installed: exit 69 (EX_UNAVAILABLE).
    case toolMissing(tool: String, packages: [String])
    /// A QEMU process failed: its argv, exit status and the tail of what it printed; exit 70.
    case toolFailed(argv: [String], status: Int32, outputTail: String)
    /// A QEMU process made no progress (no output, CPU time or file I/O) for `seconds` and was
    /// killed by the watchdog: its argv and the tail of what it printed; exit 70.
    case toolTimedOut(argv: [String], seconds: Double, outputTail: String)
    /// The configuration or the command line cannot be realised: exit 64 (EX_USAGE).
    case usage(String)
    /// The input trace cannot be replayed (for example a request beyond the disk): exit 65.
    case badTrace(String)
    /// A file the user named cannot be read: exit 66 (EX_NOINPUT).
    case noInput(String)
    /// QEMU's own trace log could not be understood (lost or malformed lines): exit 70.
    case badQemuLog(String)
    /// An operating-system call failed (temporary directory, copy): exit 74 (EX_IOERR).
    case io(String)

    /// The sysexits status for this error.
    public var exitCode: Int32 {
        switch self {
        case .toolMissing: 69
        case .toolFailed, .toolTimedOut, .badQemuLog: 70
        case .usage: 64
        case .badTrace: 65
        case .noInput: 66
        case .io: 74
        }
    }

    /// A lowercase, one-paragraph message quoting the bad value.
    public var description: String {
        switch self {
        case .toolMissing(let tool, let packages):
            let list = packages.joined(separator: " ")
            return "'\(tool)' not found in PATH; install QEMU 7.2 (Debian/Ubuntu: apt-get install \(list))"
        case .toolFailed(let argv, let status, let tail):
            var s = "'\(ValidationError.render(argv))' failed with exit status \(status)"
            let trimmed = tail.trimmingCharacters(in: .whitespacesAndNewlines)
            s += trimmed.isEmpty ? " (it printed nothing)" : "; its output ended with:\n" + trimmed
            return s
        case .toolTimedOut(let argv, let seconds, let tail):
            let time = seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
            var s = "'\(ValidationError.render(argv))' made no progress for \(time) s (no output, CPU time or file I/O) and was killed"
            let trimmed = tail.trimmingCharacters(in: .whitespacesAndNewlines)
            s += trimmed.isEmpty ? " (it printed nothing)" : "; its output ended with:\n" + trimmed
            return s
        case .usage(let m), .badTrace(let m), .noInput(let m), .badQemuLog(let m), .io(let m):
            return m
        }
    }

    /// The argv as one line, each argument quoted only when it needs to be (for messages only:
    /// processes always receive the argv itself, never a shell string).
    public static func render(_ argv: [String]) -> String {
        argv.map { arg in
            let plain = !arg.isEmpty && arg.allSatisfy { $0.isLetter || $0.isNumber || "-_=.,/:+@%".contains($0) }
            return plain ? arg : "'" + arg.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }
}

/// The Debian packages that provide each QEMU tool this target runs.
public enum QemuPackages {
    /// Packages to name when a tool is missing: every QEMU tool validation uses, so one
    /// `apt-get install` fixes all of them.
    public static let all = ["qemu-utils", "qemu-system-x86"]
}

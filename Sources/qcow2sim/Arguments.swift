import Foundation
import Qcow2Sim
import TraceKit
import Validation

/// A command-line usage error: printed as `qcow2sim <command>: error: <message>`, exit 64.
struct UsageError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// A minimal hand-written option parser in the shape of swift-argument-parser: declare the
/// options a command takes, then read typed values; unknown options and missing values are
/// reported with the bad token quoted and the valid choices listed.
struct Arguments {
    /// Positional arguments, in order.
    private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    /// The spelling each option was first given with (for the repeated-option message).
    private var spelling: [String: String] = [:]

    /// Parses `args`. `options` take a value (`--size 1G` or `--size=1G`); `flags` do not.
    /// `aliases` maps short spellings (`-o`) to long names. An option given twice is an error
    /// (it takes one value, and silently keeping the last one hid mistakes) unless it is in
    /// `repeatable` (`--layer`, one setting per use, read with `all`).
    init(
        _ args: [String], options: Set<String>, flags: Set<String> = [], aliases: [String: String] = [:],
        repeatable: Set<String> = []
    ) throws {
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let arg = args[i]
            i += 1
            if onlyPositionals || !arg.hasPrefix("-") || arg == "-" {
                positionals.append(arg)
                continue
            }
            if arg == "--" { onlyPositionals = true; continue }
            var name = arg
            var inline: String?
            if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") {
                name = String(arg[..<eq])
                inline = String(arg[arg.index(after: eq)...])
            }
            let given = name
            name = aliases[name] ?? name
            if options.contains(name), values[name] != nil, !repeatable.contains(name) {
                let first = spelling[name] ?? name
                let also = first == given ? "" : " (as '\(first)' and '\(given)')"
                throw UsageError("option '\(given)' given more than once\(also); it takes one value")
            }
            spelling[name] = spelling[name] ?? given
            if flags.contains(name) {
                if inline != nil { throw UsageError("option '\(name)' takes no value") }
                self.flags.insert(name)
            } else if options.contains(name) {
                if let inline {
                    values[name, default: []].append(inline)
                } else {
                    guard i < args.count else { throw UsageError("option '\(name)' needs a value") }
                    values[name, default: []].append(args[i])
                    i += 1
                }
            } else {
                let valid = (options.union(flags)).sorted().joined(separator: ", ")
                throw UsageError("unknown option '\(arg)' (valid options: \(valid))")
            }
        }
    }

    /// The last value given for `name`, if any.
    func value(_ name: String) -> String? { values[name]?.last }
    /// Every value given for `name`, in order.
    func all(_ name: String) -> [String] { values[name] ?? [] }
    /// Whether the flag was given.
    func has(_ name: String) -> Bool { flags.contains(name) }

    /// The options and flags given, as `--name=value` items sorted by name (a repeated option's
    /// values in their order), without those in `excluding`: what two runs given the same
    /// options in another order have in common (a shard's fingerprint, `--shard`).
    func canonical(excluding: Set<String>) -> [String] {
        values.keys.filter { !excluding.contains($0) }.sorted().flatMap { name in (values[name] ?? []).map { "\(name)=\($0)" } }
            + flags.filter { !excluding.contains($0) }.sorted()
    }

    /// The value of `name` as one of `choices`.
    func choice(_ name: String, _ choices: [String], default def: String) throws -> String {
        guard let v = value(name) else { return def }
        guard choices.contains(v) else {
            throw UsageError("invalid value '\(v)' for \(name) (expected one of: \(choices.joined(separator: ", ")))")
        }
        return v
    }

    /// Exactly `count` positional arguments, named in the error by `what`.
    func positionals(_ count: Int, what: String) throws -> [String] {
        if positionals.count < count { throw UsageError("missing \(what)") }
        if positionals.count > count { throw UsageError("unexpected argument '\(positionals[count])'") }
        return positionals
    }
}

/// How every command reports a failure: located input errors compiler-style as they are
/// (`file:line: error: …`), everything else as `qcow2sim <command>: error: …`; returns the
/// sysexits status (64 usage, 65 bad data, 66 no input, 69 unavailable, 70 internal, 73 an
/// output cannot be created or is refused, 74 an output cannot be written).
func reportFailure(_ error: Error, command: String) -> Int32 {
    switch error {
    case let e as UsageError:
        Console.error(command, e.message)
        return 64
    case let e as TraceError:
        // Usage errors raised while opening a trace name the option in `file`.
        if e.exitCode == 64 {
            Console.error(command, e.file.hasPrefix("--") ? "\(e.file): \(e.message)" : e.message)
        } else {
            Console.printErr(e.description)
        }
        return e.exitCode
    case let e as SimulationError:
        switch e {
        case .trace(let t): Console.printErr(t.description)
        case .image(let message, _): Console.printErr(message)
        case .usage: Console.error(command, e.description)
        }
        return e.exitCode
    case let e as OutputError:
        Console.error(command, e.description)
        return e.exitCode
    case let e as CostFileError:
        // A cost or table file: located as `file:line: error: …`.
        Console.printErr(e.description)
        return e.exitCode
    case let e as AdviceError:
        Console.error(command, e.description)
        return 64
    case let e as ShardError:
        Console.error(command, e.description)
        return e.exitCode
    case let e as ValidationError:
        if case .badTrace = e { Console.printErr(e.description) } else { Console.error(command, e.description) }
        return e.exitCode
    default:
        Console.error(command, "\(error)")
        return 70
    }
}

/// Standard output and standard error through write(2): `FileHandle.write` traps on an error
/// (ENOSPC on `> /dev/full`), so reports go through ``OutputFile`` and messages are best effort.
enum Console {
    static func error(_ command: String, _ message: String) {
        printErr("qcow2sim \(command): error: \(message)")
    }
    static func printErr(_ text: String) {
        let bytes = Array((text.hasSuffix("\n") ? text : text + "\n").utf8)
        // A failure is dropped: there is nowhere left to report it to.
        _ = bytes.withUnsafeBytes { OutputFile.writeAll(2, $0) }
    }
    /// Writes `text` to standard output (an ``OutputError`` with exit 74 when it cannot be written).
    static func print(_ text: String) throws {
        try OutputFile.write(Data(text.utf8), to: "-")
    }
    /// Writes a help text: a failure is reported like any other output error.
    static func help(_ text: String, command: String) -> Int32 {
        do {
            try print(text)
            return 0
        } catch {
            return reportFailure(error, command: command)
        }
    }
}

/// Writes `data` to `path` through ``OutputFile``: a regular file (or a new path, or a symlink's
/// target) is replaced atomically, a character device or FIFO written in place; "-" means
/// standard output.
func writeOutput(_ data: Data, to path: String) throws {
    try OutputFile.write(data, to: path)
}

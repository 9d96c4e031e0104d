import Foundation
import Qcow2Sim
import Testing

/// Something a test needs that a machine may lack (real QEMU, the QEMU 10.0/11.1 chroots, the
/// public traces in ../shared/traces). Tests that need QEMU always run in CI; on a machine without
/// it they skip, and RULES.md asks that they say so: `.requires(_:)` skips with the reason as the
/// skip comment and prints one line per skipped suite and test, so a fresh clone shows what did
/// not run.
public struct Requirement: Sendable {
    /// Why the requirement is not met (nil when it is): what is missing and how to get it.
    public let missing: String?
    /// Printed when the tests run although part of what they could use is missing (e.g. one of
    /// the two extra QEMU versions).
    public let partial: String?

    /// A requirement, unmet when `missing` is not nil.
    public init(missing: String?, partial: String? = nil) {
        self.missing = missing
        self.partial = partial
    }

    /// Whether the tests that need it can run.
    public var available: Bool { missing == nil }

    /// Both requirements: the first one's reason when it is unmet, else the second one's.
    public func and(_ other: Requirement) -> Requirement {
        Requirement(missing: missing ?? other.missing, partial: partial ?? other.partial)
    }
}

/// The lines tests print when they skip all or part of their work.
public enum Skip {
    /// Prints `skipped WHAT: WHY` as one line on standard output, written at once (unbuffered,
    /// so it stands next to Swift Testing's own lines about the test).
    public static func note(_ what: String, _ why: String) {
        FileHandle.standardOutput.write(Data("skipped \(what): \(why)\n".utf8))
    }

    /// Prints a skip line for the test or suite Swift Testing is preparing (or the running test).
    public static func noteCurrent(_ why: String) { note(currentName(), why) }

    /// `test NAME (File.swift:LINE)` or `suite NAME (...)` of `Test.current`.
    static func currentName() -> String {
        guard let test = Test.current else { return "a test" }
        let location = "\(test.sourceLocation.fileName):\(test.sourceLocation.line)"
        return "\(test.isSuite ? "suite" : "test") '\(test.displayName ?? test.name)' (\(location))"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the suite or test only when `requirement` is met; otherwise skips it with the reason
    /// as the skip comment and prints `skipped test 'NAME' (File.swift:LINE): REASON`. Swift
    /// Testing evaluates the condition for a suite and again for each of its tests, so each
    /// skipped test prints its own line.
    public static func requires(_ requirement: Requirement, sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        .enabled(requirement.missing.map { Comment(rawValue: $0) }, sourceLocation: sourceLocation) {
            if let why = requirement.missing {
                Skip.noteCurrent(why)
                return false
            }
            if let part = requirement.partial, Test.current?.isSuite == false { Skip.note("part of \(Skip.currentName())", part) }
            return true
        }
    }
}

/// Paths inside this repository (found from this file's location, so `swift test` works from
/// any directory).
public enum Repository {
    /// The repository's root directory.
    public static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `relative` under the root, e.g. `Traces/guest-ext4.trace.csv`.
    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
}

/// The public traces in ../shared/traces (read in place, never copied into the repository), or
/// the directory `QCOW2SIM_TRACES` names.
public enum SharedTraces {
    /// Where the traces are looked for.
    public static let directory: String = {
        if let d = ProcessInfo.processInfo.environment["QCOW2SIM_TRACES"] { return d }
        return Repository.root.deletingLastPathComponent().appendingPathComponent("shared/traces").path
    }()

    /// The traces are there when their README is.
    public static var available: Bool { FileManager.default.fileExists(atPath: path("README.md")) }

    /// What tests of the public traces need.
    public static var requirement: Requirement {
        Requirement(
            missing: available
                ? nil : "public traces not found (\(directory)/README.md); check out ../shared/traces or set QCOW2SIM_TRACES")
    }

    /// A file of the traces directory.
    public static func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// The directory when the traces are there; otherwise nil, after printing that `what` (the
    /// part of a test that uses them) is skipped and why.
    public static func directoryIfAvailable(for what: String) -> String? {
        if let why = requirement.missing {
            Skip.note("\(what) in \(Skip.currentName())", why)
            return nil
        }
        return directory
    }
}

/// The real QEMU 7.2 tools on PATH: whether they are there (with the reason when not) and
/// small runners for tests that make images with them.
public enum QemuTools {
    /// The full path of `tool` on PATH, or nil.
    public static func find(_ tool: String) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return dirs.filter { !$0.isEmpty }.map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Met when every one of `tools` is on PATH; otherwise names the missing ones and their
    /// Debian packages.
    public static func requirement(_ tools: [String]) -> Requirement {
        let absent = tools.filter { find($0) == nil }
        guard !absent.isEmpty else { return Requirement(missing: nil) }
        let packages = Set(absent.map { $0 == "qemu-system-x86_64" ? "qemu-system-x86" : "qemu-utils" }).sorted()
        return Requirement(
            missing:
                "\(absent.joined(separator: ", ")) not found on PATH; install QEMU 7.2 (Debian/Ubuntu: apt-get install \(packages.joined(separator: " ")))"
        )
    }

    /// qemu-img alone (tests that only create images).
    public static let img = requirement(["qemu-img"])
    /// qemu-img and qemu-io (real images and qemu-io replays).
    public static let io = requirement(["qemu-img", "qemu-io"])
    /// qemu-img, qemu-io and qemu-system-x86_64 (the clean timer, discard=ignore through a VM).
    public static let system = requirement(["qemu-img", "qemu-io", "qemu-system-x86_64"])

    /// Runs a tool found on PATH and returns its standard output; a non-zero exit throws with
    /// its standard error.
    @discardableResult
    public static func run(_ tool: String, _ args: [String]) throws -> Data {
        guard let exe = find(tool) else { throw QemuFailure(text: "\(tool) not found") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw QemuFailure(text: "\(tool) \(args.joined(separator: " ")) failed: \(String(decoding: errData, as: UTF8.self))")
        }
        return data
    }

    /// `qemu-img <sub> --output=json image` parsed.
    public static func json(_ sub: String, _ image: String) throws -> Any {
        try JSONSerialization.jsonObject(with: run("qemu-img", [sub, "--output=json", image]))
    }

    /// `qemu-img create -q -f qcow2 [-o opts] [extra] image size`.
    public static func create(_ image: String, size: String, options: String, extra: [String] = []) throws {
        var args = ["create", "-q", "-f", "qcow2"]
        if !options.isEmpty { args += ["-o", options] }
        try run("qemu-img", args + extra + [image] + (size.isEmpty ? [] : [size]))
    }

    /// `qemu-io -f qcow2 -c cmd ... image`.
    public static func io(_ image: String, _ commands: [String]) throws {
        guard !commands.isEmpty else { return }
        try run("qemu-io", ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image])
    }
}

/// A tool run by `QemuTools.run` that failed or was not found.
public struct QemuFailure: Error, CustomStringConvertible {
    /// The command and its standard error.
    public var text: String
    /// The same text.
    public var description: String { text }
}

/// QEMU 10.0 and 11.1 from `.ci/setup --more-qemu` (Debian trixie and sid chroots under
/// `.build/qemu-VERSION/bin`), when present.
public enum MoreQemu {
    /// The versions the chroots provide.
    public static let versions = [QemuVersion.v10_0, .v11_1]

    /// The chroot's `bin` directory for `v`.
    public static func bin(_ v: QemuVersion) -> String { Repository.path(".build/qemu-\(v.rawValue)/bin") }

    /// Whether `v`'s qemu-io is there.
    public static func has(_ v: QemuVersion) -> Bool { FileManager.default.isExecutableFile(atPath: bin(v) + "/qemu-io") }

    /// Whether at least one of the versions is there.
    public static let any = versions.contains(where: has)

    /// At least one extra version (the tests of a missing one are skipped, and say so).
    public static let requirement: Requirement = {
        let absent = versions.filter { !has($0) }.map { "QEMU \($0.rawValue) (\(bin($0))/qemu-io)" }
        let why = "\(absent.joined(separator: " and ")) not installed; run .ci/setup --more-qemu"
        return Requirement(missing: any ? nil : why, partial: any && !absent.isEmpty ? why : nil)
    }()
}

import Foundation
import Testing

/// Every notebook in `Notebooks/` executes without an error in a virtual environment with the
/// pinned `Notebooks/requirements.txt` (created under `.build/notebook-venv`, reinstalled when the
/// pins change), against the release CLI, which `.ci/run` builds before `swift test`.
///
/// Notebooks replay hundreds of runs of a 113 872-request trace; a debug build takes over ten
/// minutes for notebook 03 alone, the release build about a minute, so the test needs
/// `.build/release/qcow2sim`. Without it, or without python3, it skips locally and says why;
/// under CI (`CI` set) a missing prerequisite fails instead.
@Suite(.serialized) struct NotebookTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let notebooks = repo.appendingPathComponent("Notebooks")
    static let venv = repo.appendingPathComponent(".build/notebook-venv")
    static let release = repo.appendingPathComponent(".build/release/qcow2sim")
    static let inCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" } ?? false

    /// The public traces, found as the notebooks and TraceFixtures find them.
    static let sharedTraces: String? = {
        let env = ProcessInfo.processInfo.environment
        let beside: String? = repo.deletingLastPathComponent().appendingPathComponent("shared/traces").path
        let candidates: [String?] = [env["QCOW2SIM_SHARED_TRACES"], env["QCOW2SIM_TRACES"], beside]
        return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0 + "/README.md") }
    }()

    /// Notebooks that read the shared traces (skipped, with a message, without them).
    static let needShared: Set<String> = [
        "01-sizing-l2-cache.ipynb", "03-policies-and-real-traces.ipynb", "05-comparing-proposals.ipynb",
    ]

    /// The `python3` a user would run: the first on PATH (as the notebooks' README says), else
    /// Debian's.
    static var python: String? {
        let onPath = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/python3" }
        return (onPath + ["/usr/bin/python3"]).first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `tool args` in `dir` with `env` added; returns (status, stdout + stderr). Output goes
    /// to a file, so a chatty child never blocks on a full pipe.
    static func run(_ tool: String, _ args: [String], in dir: URL, env: [String: String] = [:]) throws -> (Int32, String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("qcow2sim-nb-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.currentDirectoryURL = dir
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try handle.close()
        return (p.terminationStatus, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    /// The environment, created or brought up to the pins; nil (with the reason recorded) when
    /// it cannot be.
    static func environment() throws -> String? {
        guard let python else {
            Issue.record("python3 not found (.ci/setup --deps installs python3 and python3-venv)")
            return nil
        }
        let pins = try String(contentsOf: notebooks.appendingPathComponent("requirements.txt"), encoding: .utf8)
        let stamp = venv.appendingPathComponent("requirements.installed")
        let jupyter = venv.appendingPathComponent("bin/jupyter").path
        if (try? String(contentsOf: stamp, encoding: .utf8)) == pins && FileManager.default.isExecutableFile(atPath: jupyter) {
            return jupyter
        }
        var (status, out) = try run(python, ["-m", "venv", venv.path], in: repo)
        guard status == 0 else {
            Issue.record("python3 -m venv \(venv.path) failed (exit \(status)); .ci/setup --deps installs python3-venv:\n\(out)")
            return nil
        }
        (status, out) = try run(
            venv.appendingPathComponent("bin/pip").path,
            ["install", "--quiet", "--disable-pip-version-check", "-r", notebooks.appendingPathComponent("requirements.txt").path],
            in: repo)
        guard status == 0 else {
            Issue.record("pip install -r Notebooks/requirements.txt failed (exit \(status)):\n\(out)")
            return nil
        }
        try Data(pins.utf8).write(to: stamp)
        return jupyter
    }

    static var prerequisitesMessage: String? {
        if !FileManager.default.isExecutableFile(atPath: release.path) {
            return "\(release.path) not found: the notebooks need the release CLI (swift build -c release --product qcow2sim; .ci/run builds it)"
        }
        if python == nil { return "python3 not found: install python3 and python3-venv (.ci/setup --deps)" }
        return nil
    }

    @Test func everyNotebookExecutesWithoutError() throws {
        if let why = Self.prerequisitesMessage {
            if Self.inCI {
                Issue.record("notebooks cannot run in CI: \(why)")
            } else {
                print("NotebookTests: skipping: \(why)")
            }
            return
        }
        guard let jupyter = try Self.environment() else { return }
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.notebooks.path).filter { $0.hasSuffix(".ipynb") }.sorted()
        #expect(names.count >= 5)
        let out = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: out) }
        for name in names {
            if Self.needShared.contains(name) && Self.sharedTraces == nil {
                let why = "\(name) reads the shared public traces, not found (set QCOW2SIM_SHARED_TRACES or keep shared/traces beside the repository)"
                if Self.inCI { Issue.record(Comment(rawValue: why)) } else { print("NotebookTests: skipping \(why)") }
                continue
            }
            let t0 = Date()
            // A cell error makes nbconvert exit non-zero; the executed copy goes to a temporary
            // directory, so the committed notebooks stay as they are. The per-cell timeout only
            // stops a hang; it is no performance assertion.
            var env = ["QCOW2SIM": Self.release.path]
            if let shared = Self.sharedTraces { env["QCOW2SIM_SHARED_TRACES"] = shared }
            let (status, log) = try Self.run(
                jupyter,
                [
                    "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=600", "--output-dir", out,
                    "--output", name, Self.notebooks.appendingPathComponent(name).path,
                ], in: Self.notebooks, env: env)
            #expect(status == 0, "\(name) failed:\n\(log.suffix(4000))")
            print("NotebookTests: \(name) executed in \(String(format: "%.0f", Date().timeIntervalSince(t0))) s")
            // The executed copy holds no error output.
            if status == 0 {
                let executed = try String(contentsOfFile: out + "/" + name, encoding: .utf8)
                #expect(!executed.contains("\"output_type\": \"error\""), "\(name) has an error output")
            }
        }
    }
}

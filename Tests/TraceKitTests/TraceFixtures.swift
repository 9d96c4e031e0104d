import Foundation
import Testing

@testable import TraceKit

/// The public traces in ../shared/traces (read in place, never copied into the repository).
/// Records, or the error's description.
enum Outcome {
    case success([TraceRecord])
    case failure(String)
}

enum TraceFixtures {
    static let directory: String = {
        if let d = ProcessInfo.processInfo.environment["QCOW2SIM_TRACES"] { return d }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return repo.deletingLastPathComponent().appendingPathComponent("shared/traces").path
    }()

    static var available: Bool { FileManager.default.fileExists(atPath: path("README.md")) }

    /// Why tests of the public traces are skipped (a fresh clone without ../shared shows it).
    static let skipMessage = Comment(
        rawValue:
            "public traces not found (\(directory)/README.md): skipping; check out ../shared/traces or set QCOW2SIM_TRACES")

    static func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    static func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path(name)))) }

    /// Every record of a trace file.
    static func read(_ name: String, format: TraceFormat? = nil, options: TraceOptions = TraceOptions()) throws -> [TraceRecord] {
        var r = try TraceFile.open(path: path(name), format: format, options: options)
        var out: [TraceRecord] = []
        while let x = try r.next() { out.append(x) }
        return out
    }

    /// Every record of in-memory bytes, or the error's description.
    static func readBytes(_ b: [UInt8], fileName: String, format: TraceFormat?, options: TraceOptions = TraceOptions()) -> Outcome
    {
        do {
            var r = try TraceFile.open(bytes: b, fileName: fileName, format: format, options: options)
            var out: [TraceRecord] = []
            while let x = try r.next() { out.append(x) }
            return .success(out)
        } catch {
            return .failure("\(error)")
        }
    }

    static func errorText(_ b: [UInt8], fileName: String, format: TraceFormat?, options: TraceOptions = TraceOptions()) -> String?
    {
        if case .failure(let e) = readBytes(b, fileName: fileName, format: format, options: options) { return e }
        return nil
    }
}

import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// Records, or the error's description.
enum Outcome {
    case success([TraceRecord])
    case failure(String)
}

/// Reading the public traces in ../shared/traces (`SharedTraces` finds them) and in-memory bytes.
enum TraceFixtures {
    static func path(_ name: String) -> String { SharedTraces.path(name) }

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

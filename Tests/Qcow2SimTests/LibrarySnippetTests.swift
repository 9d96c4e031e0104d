import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// Issue 8 item 9: the README's "Use as a library" program, built in its own package that
/// depends on this one by path (the repository as a folder named `qcow2sim`), run on a trace.
@Suite struct LibrarySnippetTests {
    static let root = Repository.root

    /// The README's fenced Swift block whose first line is `first`.
    static func block(_ readme: String, startingWith first: String) throws -> String {
        let parts = readme.components(separatedBy: "```swift\n")
        guard let part = parts.first(where: { $0.hasPrefix(first) }), let end = part.range(of: "\n```") else {
            throw SnippetError(message: "README.md has no ```swift block starting with \(first)")
        }
        return String(part[..<end.lowerBound]) + "\n"
    }

    struct SnippetError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// The snippet's policy, as a reference for its output (same text as the README's).
    struct SecondChance: EvictionPolicy {
        static let name = "second-chance"
        static let summary = "CLOCK: a hit gives the entry a second chance"
        var referenced: [Bool]
        var hand = 0
        init(capacity: Int, kind: CacheKind) { referenced = Array(repeating: false, count: capacity) }
        mutating func filled(_ slot: Int, offset: UInt64) { referenced[slot] = false }
        mutating func hit(_ slot: Int, offset: UInt64) { referenced[slot] = true }
        mutating func released(_ slot: Int, offset: UInt64) {}
        mutating func emptied(_ slot: Int, offset: UInt64) { referenced[slot] = false }
        mutating func victim(_ pins: PinCounts) -> Int? {
            for _ in 0..<(2 * pins.count) {
                let slot = hand
                hand = (hand + 1) % pins.count
                if pins.isPinned(slot) { continue }
                if referenced[slot] { referenced[slot] = false } else { return slot }
            }
            return nil
        }
    }

    @Test func readmeProgramBuildsAndRuns() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let manifest = try Self.block(readme, startingWith: "// Package.swift")
        let program = try Self.block(readme, startingWith: "// Sources/secondchance/main.swift")
        #expect(program.split(separator: "\n", omittingEmptySubsequences: false).count <= 41)
        #expect(program.contains(Self.policySource), "the README's policy is the one this test checks against")

        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("qcow2sim-snippet-\(getpid())")
        try? fm.removeItem(at: dir)
        let package = dir.appendingPathComponent("secondchance")
        try fm.createDirectory(at: package.appendingPathComponent("Sources/secondchance"), withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: dir.appendingPathComponent("qcow2sim"), withDestinationURL: Self.root)
        try manifest.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        try program.write(to: package.appendingPathComponent("Sources/secondchance/main.swift"), atomically: true, encoding: .utf8)

        let build = try Self.run(["swift", "build", "--package-path", package.path], in: package)
        #expect(build.status == 0, Comment(rawValue: "swift build of the README snippet failed:\n" + build.output))
        guard build.status == 0 else { return }
        let trace = Self.root.appendingPathComponent("Traces/seed-mixed-uniform-8G-20000-rw50.csv").path
        let ran = try Self.run([package.appendingPathComponent(".build/debug/secondchance").path, trace], in: package)
        #expect(ran.status == 0, Comment(rawValue: ran.output))

        var reader = try TraceFile.open(path: trace)
        let report = try Simulation.run(
            config: SimulationConfig(virtualSize: 8 << 30, driveOptions: try DriveOptions(parsing: "l2-cache-size=256K")),
            reader: &reader,
            policy: SecondChance.self)
        #expect(report.policy == "second-chance")
        #expect(ran.output == "L2 misses: \(report.images[0].l2.misses)\n")
        // The same trace under QEMU's own policy misses differently: the custom policy ran.
        var r2 = try TraceFile.open(path: trace)
        let qemu = try Simulation.run(
            config: SimulationConfig(virtualSize: 8 << 30, driveOptions: try DriveOptions(parsing: "l2-cache-size=256K")),
            reader: &r2)
        #expect(qemu.images[0].l2.misses != report.images[0].l2.misses)
        try? fm.removeItem(at: dir)
    }

    /// The policy's `victim`, which the README must contain verbatim.
    static let policySource = """
            mutating func victim(_ pins: PinCounts) -> Int? {
                for _ in 0..<(2 * pins.count) {
                    let slot = hand
                    hand = (hand + 1) % pins.count
                    if pins.isPinned(slot) { continue }
                    if referenced[slot] { referenced[slot] = false } else { return slot }
                }
                return nil
            }
        """

    static func run(_ argv: [String], in dir: URL) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        p.currentDirectoryURL = dir
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

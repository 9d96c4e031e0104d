import Foundation
import Qcow2Sim

/// The real images of one run, base first.
public struct BuiltImages: Equatable, Sendable {
    /// The directory holding them.
    public var directory: String
    /// Absolute paths, index = chain position (0 = base, last = top).
    public var paths: [String]
    /// The image QEMU opens ("" for no images).
    public var top: String { paths.last ?? "" }

    /// Images already built in `directory`, base first.
    public init(directory: String, paths: [String]) {
        self.directory = directory
        self.paths = paths
    }
}

/// Creates the real image (or chain) that matches a `SimulationConfig`'s initial state
/// (issue 4 item 1): `qemu-img create` with the same `-o` options, the populate modes, backing
/// overlays, or a non-sparse copy of `--image FILE` (the user's file is only ever read).
public struct ImageBuilder: Sendable {
    /// Runs qemu-img and qemu-io.
    public var runner: any ProcessRunner
    /// Piece size of `--populate-mode zero` write-zeroes (qemu-io's request limit).
    public static let zeroPieceBytes: UInt64 = 2_147_483_136
    /// Piece size of `--populate-mode data` writes.
    public static let dataPieceBytes: UInt64 = 64 << 20

    /// Creates a builder.
    public init(runner: any ProcessRunner) {
        self.runner = runner
    }

    /// The file name of chain position `i` of `n` (`base.qcow2`, `top1.qcow2`, …).
    public static func fileName(_ i: Int) -> String { i == 0 ? "base.qcow2" : "top\(i).qcow2" }

    /// The qemu-io commands that populate the base image, in order; empty when nothing is written
    /// by qemu-io (fresh image, or `preallocation=metadata`). Throws for combinations that
    /// cannot be realised.
    public static func populateCommands(_ config: SimulationConfig) throws -> [String] {
        try populateCommands(config, layer: 0)
    }

    /// The qemu-io commands that populate chain image `layer` (its `populatePlan`), in order.
    public static func populateCommands(_ config: SimulationConfig, layer: Int) throws -> [String] {
        let ranges: [ByteRange]
        let plan = config.populatePlan(layer: layer)
        switch plan.populate {
        case .none: return []
        case .full:
            if plan.mode == .metadata { return [] }
            ranges = [ByteRange(start: 0, length: config.virtualSize)]
        case .ranges(let r):
            if plan.mode == .metadata {
                throw ValidationError.usage(
                    "populate mode 'metadata' covers the whole disk only; use 'zero' or 'data' for ranges")
            }
            ranges = r
        }
        let piece = plan.mode == .zero ? zeroPieceBytes : dataPieceBytes
        var commands: [String] = []
        for range in ranges {
            guard range.endsWithin(config.virtualSize) else {
                throw ValidationError.usage(
                    "populate range \(range.start)+\(range.length) ends beyond the disk size \(config.virtualSize)")
            }
            let end = range.start + range.length
            var start = range.start
            while start < end {
                let len = min(piece, end - start)
                commands.append(plan.mode == .zero ? "write -q -z \(start) \(len)" : "write -q \(start) \(len)")
                start += len
            }
        }
        return commands
    }

    /// Builds the images in `directory` (which must exist) and returns their paths: the chain
    /// (created, or copied from `--image FILE` with its backing files), then the populate
    /// session, then each of `config.preparation`'s sessions in order.
    public func build(_ config: SimulationConfig, in directory: String) throws -> BuiltImages {
        guard config.chainLength >= 1 else {
            throw ValidationError.usage("chain length must be at least 1, got \(config.chainLength)")
        }
        var paths: [String] = []
        if let image = config.imageFile {
            if config.populate != .none {
                throw ValidationError.usage(
                    "--populate cannot be combined with --image '\(image)' (the image already has its contents)")
            }
            paths = try copyChain(of: image, into: directory)
            if config.chainLength != 1 && config.chainLength != paths.count {
                throw ValidationError.usage(
                    "--chain \(config.chainLength) cannot be combined with --image '\(image)': its backing chain has \(paths.count) image(s)"
                )
            }
        } else {
            // Each image: qemu-img create with its -o options, then that layer's populate session
            // (qemu-io, unsafe; on an overlay its writes copy from the images below, populated first).
            for i in 0..<config.chainLength {
                var args = ["create", "-q", "-f", "qcow2"]
                if i > 0 { args += ["-b", Self.fileName(i - 1), "-F", "qcow2"] }
                // The rendering of the options the simulation creates image i with.
                let create = config.createOptions(layer: i).rendered
                if !create.isEmpty { args += ["-o", create] }
                let plan = config.populatePlan(layer: i)
                if plan.populate == .full && plan.mode == .metadata { args += ["-o", "preallocation=metadata"] }
                args += [Self.fileName(i), String(config.virtualSize)]
                _ = try runner.runChecked(ProcessRequest(executable: "qemu-img", arguments: args, workingDirectory: directory))
                let commands = try Self.populateCommands(config, layer: i)
                if !commands.isEmpty {
                    let input = Data((commands.joined(separator: "\n") + "\n").utf8)
                    _ = try runner.runChecked(
                        ProcessRequest(
                            executable: "qemu-io", arguments: ["-t", "unsafe", "-f", "qcow2", Self.fileName(i)],
                            standardInput: input, workingDirectory: directory, outputLimit: 8192))
                }
                paths.append(directory + "/" + Self.fileName(i))
            }
        }
        for (n, session) in config.preparation.enumerated() {
            guard session.image >= 0 && session.image < paths.count else {
                throw ValidationError.usage(
                    "preparation session \(n) names image \(session.image), but the chain has \(paths.count)")
            }
            let commands = Self.preparationCommands(session)
            if commands.isEmpty { continue }
            _ = try runner.runChecked(
                ProcessRequest(
                    executable: "qemu-io", arguments: ["-t", "writeback", "-f", "qcow2", Self.fileName(session.image)],
                    standardInput: Data((commands.joined(separator: "\n") + "\n").utf8), workingDirectory: directory,
                    outputLimit: 8192))
        }
        return BuiltImages(directory: directory, paths: paths)
    }

    /// The qemu-io commands of one preparation session: its records in order, default options,
    /// writeback, discards always sent (qemu-io opens with unmap on, as the simulator's
    /// preparation session applies them).
    public static func preparationCommands(_ session: PreparationSession) -> [String] {
        session.records.filter(QemuIOScript.isReplayed).flatMap(QemuIOScript.commands(for:))
    }

    /// The backing chain of a qcow2 file, top first: each backing name as stored in the header,
    /// relative names resolved against the directory of the file that names them (as QEMU and
    /// the simulator do).
    public static func backingChain(of path: String) throws -> [String] {
        var chain: [String] = []
        var seen: [(device: UInt64, inode: UInt64)] = []
        var next: String? = path
        while let p = next {
            guard chain.count < 64 else { throw ValidationError.usage("'\(path)': backing chain deeper than 64 images") }
            chain.append(p)
            let file: Qcow2File
            do {
                file = try Qcow2File(path: p)
            } catch let e as Qcow2FileError {
                throw ValidationError.noInput("cannot read image '\(p)': \(e.description)")
            }
            // The same file again (by device and inode) is a loop, as qemu-img reports it.
            if let id = file.identity {
                if seen.contains(where: { $0 == id }) {
                    throw ValidationError.usage(
                        "'\(path)': backing file '\(p)' creates an infinite loop: \(chain.joined(separator: " -> "))")
                }
                seen.append(id)
            }
            if let format = file.header.backingFormat, format != "qcow2" {
                throw ValidationError.usage("'\(p)': backing file format '\(format)' is not supported (expected qcow2)")
            }
            next = file.header.backingFileName.map { name in
                name.hasPrefix("/") ? name : URL(fileURLWithPath: p).deletingLastPathComponent().appendingPathComponent(name).path
            }
        }
        return chain
    }

    /// Copies `image` and every backing file below it into `directory` (`base.qcow2`,
    /// `top1.qcow2`, …, the user's file last), non-sparse, and points each copy at the copy
    /// below it with `qemu-img rebase -u` (a header-only change). The user's files are only read.
    /// Returns the copies, base first.
    func copyChain(of image: String, into directory: String) throws -> [String] {
        let originals = Array(try Self.backingChain(of: image).reversed())
        var paths: [String] = []
        for (i, original) in originals.enumerated() {
            let copy = directory + "/" + Self.fileName(i)
            try Self.copyNonSparse(from: original, to: copy)
            if i > 0 {
                _ = try runner.runChecked(
                    ProcessRequest(
                        executable: "qemu-img",
                        arguments: ["rebase", "-q", "-u", "-b", Self.fileName(i - 1), "-F", "qcow2", Self.fileName(i)],
                        workingDirectory: directory))
            }
            paths.append(copy)
        }
        return paths
    }

    /// Copies `source` to `destination` writing every byte, zeroes included (`cp --sparse=never`):
    /// a sparse copy would change the host allocation that QEMU's preallocation probe reads
    /// (qcow2-model.md §8.3, §15.2). The source is opened read-only.
    public static func copyNonSparse(from source: String, to destination: String) throws {
        guard let input = FileHandle(forReadingAtPath: source) else {
            throw ValidationError.noInput("cannot read image '\(source)'")
        }
        defer { try? input.close() }
        guard FileManager.default.createFile(atPath: destination, contents: nil),
            let output = FileHandle(forWritingAtPath: destination)
        else {
            throw ValidationError.io("cannot create '\(destination)'")
        }
        defer { try? output.close() }
        do {
            while let chunk = try input.read(upToCount: 8 << 20), !chunk.isEmpty {
                try output.write(contentsOf: chunk)
            }
        } catch {
            throw ValidationError.io("copying '\(source)' to '\(destination)' failed: \(error)")
        }
    }
}

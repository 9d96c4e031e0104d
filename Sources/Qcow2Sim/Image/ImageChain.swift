import Foundation

/// Opening a chain from files, and stopping a run where QEMU's request would fail.
extension Qcow2Image {
    /// The chain `path` heads: the file and its backing files, returned base first. Relative
    /// backing names resolve against the directory of the file that names them.
    ///
    /// - Parameter open: opens one file (`Qcow2File(path:)`; tests and the image fuzz target
    ///   open files held in memory).
    /// - Throws: `SimulationError.image` with the file's located error, or (exit 65) for a chain
    ///   that comes back to a file it already holds (as `qemu-img info --backing-chain`:
    ///   "Backing file '…' creates an infinite loop"), listing the chain, or that is deeper than
    ///   64 images.
    static func loadChain(_ path: String, open: (String) throws -> Qcow2File) throws -> [Qcow2Image] {
        var files: [Qcow2File] = []
        var names: [String] = []
        var next: String? = path
        while let p = next {
            do {
                let f = try open(p)
                // The same file under another name (a symlink, `./x`, an absolute path) is the
                // same image: compare device and inode where the file has them.
                let seen = files.firstIndex { g in
                    if let a = g.identity, let b = f.identity { return a == b }
                    return g.path == f.path
                }
                names.append(p)
                if seen != nil {
                    throw SimulationError.image(
                        "\(path): error: backing file '\(p)' creates an infinite loop: \(names.joined(separator: " -> "))", 65)
                }
                guard files.count < 64 else {
                    throw SimulationError.image(
                        "\(path): error: backing chain deeper than 64 images (the 65th is '\(p)')", 65)
                }
                files.append(f)
                if let b = f.header.backingFileName {
                    next =
                        b.hasPrefix("/") ? b : URL(fileURLWithPath: p).deletingLastPathComponent().appendingPathComponent(b).path
                } else {
                    next = nil
                }
            } catch let e as Qcow2FileError {
                throw SimulationError.image(e.description, e.exitCode)
            }
        }
        var images: [Qcow2Image] = []
        let ops = OpBuffer()
        for (k, f) in files.reversed().enumerated() {
            do {
                images.append(try Qcow2Image(file: f, chainIndex: k, backing: images.last))
                images[k].ops = ops
            } catch let e as Qcow2FileError {
                throw SimulationError.image(e.description, e.exitCode)
            }
        }
        return images
    }

    /// Throws the first recorded `failure` of `chain` (exit 65): the simulation stops at the
    /// request where QEMU would fail or mark an image corrupt.
    static func throwFailure<P>(of chain: [Qcow2Image], caches: CacheSystem<P>) throws {
        for image in chain {
            if let e = image.failure { throw SimulationError.image(e.description, e.exitCode) }
        }
        if let f = caches.failure {
            let image = chain.first { $0.chainIndex == f.image }
            let e = Qcow2FileError(
                file: image?.filePath ?? "image \(f.image)", byteOffset: nil, message: "\(f.field): QEMU 7.2: \(f.qemu)")
            throw SimulationError.image(e.description, e.exitCode)
        }
    }
}

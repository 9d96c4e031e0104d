import Foundation
import Qcow2Sim
import TraceKit

/// Parsing of the options that define a run (image, chain, populate, drive options, cache
/// mode), shared by `validate` and, once it lands, `simulate`: both must build the very same
/// `SimulationConfig` from the same words.
enum RunConfigArguments {
    /// Options taking a value.
    static let options: Set<String> = [
        "--size", "--create-options", "--chain", "--populate", "--populate-mode", "--image", "--drive", "--cache-mode",
    ]
    /// Short spellings.
    static let aliases: [String: String] = ["-o": "--create-options"]

    /// Help lines for these options.
    static let help = """
          --size SIZE           virtual disk size (K, M, G, T suffixes are binary); default: the --image's size
          -o OPTS               qemu-img create -o options (cluster_size=64K,extended_l2=on,…)
          --chain N             images in the backing chain, base first (default 1)
          --populate WHAT       none (default), full, or START:LEN[,START:LEN…] ranges of the base image
          --populate-mode MODE  metadata (preallocation=metadata, full only), zero or data
          --image FILE          start from a copy of this qcow2 file (never modified)
          --drive OPTS          qcow2 runtime options (l2-cache-size=1M,cache-clean-interval=30,…)
          --cache-mode MODE     writeback (default, like a VM) or writethrough (qemu-io's default)
        """

    /// The configuration the arguments describe.
    static func config(_ a: Arguments) throws -> SimulationConfig {
        let image = a.value("--image")
        var size: UInt64
        if let text = a.value("--size") {
            size = try TraceArgs.bytes(text, "--size")
            if size == 0 { throw UsageError("invalid value '0' for --size (expected a positive size)") }
        } else if let image {
            // An image of virtual size 0 is valid qcow2 (QEMU opens it); every request then lies
            // beyond it, which the trace replay reports at the first one.
            size = try virtualSize(ofImage: image)
        } else {
            throw UsageError("missing --size SIZE (or --image FILE)")
        }
        var chain = 1
        if let text = a.value("--chain") {
            guard let n = Int(text), n >= 1, n <= 64 else {
                throw UsageError("invalid value '\(text)' for --chain (expected 1 to 64)")
            }
            chain = n
        }
        let populate = try parsePopulate(a.value("--populate") ?? "none", size: size)
        let modeName = try a.choice(
            "--populate-mode", PopulateMode.allCases.map(\.rawValue), default: PopulateMode.metadata.rawValue)
        let cacheName = try a.choice("--cache-mode", CacheMode.allCases.map(\.rawValue), default: CacheMode.writeback.rawValue)
        size = max(size, 1)
        return SimulationConfig(
            virtualSize: size, createOptions: a.value("--create-options") ?? "", chainLength: chain, populate: populate,
            populateMode: PopulateMode(rawValue: modeName) ?? .metadata, imageFile: image, driveOptions: a.value("--drive") ?? "",
            cacheMode: CacheMode(rawValue: cacheName) ?? .writeback)
    }

    /// `none`, `full`, or comma-separated `START:LEN` ranges.
    static func parsePopulate(_ text: String, size: UInt64) throws -> Populate {
        switch text {
        case "none": return .none
        case "full": return .full
        default:
            var ranges: [ByteRange] = []
            for item in text.split(separator: ",") {
                let parts = item.split(separator: ":")
                guard parts.count == 2, let start = ByteCount.parse(String(parts[0])), let len = ByteCount.parse(String(parts[1]))
                else {
                    throw UsageError("invalid value '\(item)' for --populate (expected none, full or START:LEN ranges)")
                }
                ranges.append(ByteRange(start: start, length: len))
            }
            if ranges.isEmpty {
                throw UsageError("invalid value '\(text)' for --populate (expected none, full or START:LEN ranges)")
            }
            return .ranges(ranges)
        }
    }

    /// The virtual size in a qcow2 image's header; a file that is not a usable qcow2 image
    /// gives the image reader's located error.
    static func virtualSize(ofImage path: String) throws -> UInt64 {
        do {
            return try Qcow2File(path: path).header.virtualSize
        } catch let e as Qcow2FileError {
            throw SimulationError.image(e.description, e.exitCode)
        }
    }
}

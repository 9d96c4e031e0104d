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
        "--layer", "--qemu-version",
    ]
    /// Short spellings.
    static let aliases: [String: String] = ["-o": "--create-options"]
    /// Options that may be given more than once: each `--layer` sets one thing of one image.
    static let repeatable: Set<String> = ["--layer"]

    /// Help lines for these options.
    static let help = """
          --size SIZE           virtual disk size (K, M, G, T suffixes are binary); default: the --image's size
          -o OPTS               qemu-img create -o options (cluster_size=64K,extended_l2=on,…)
          --chain N             images in the backing chain, base first (default 1)
          --populate WHAT       none (default), full, or START:LEN[,START:LEN…] ranges of the base image
          --populate-mode MODE  metadata (preallocation=metadata, full only), zero or data
          --layer N:-o=OPTS     create options for chain image N only (0 = base), after -o's:
                                --layer 1:-o=cluster_size=4K,compat=0.10
          --layer N:populate=WHAT, --layer N:populate-mode=MODE
                                initial contents of image N (an overlay's data writes copy
                                from the images below); repeat --layer for each setting
          --qemu-version V      the QEMU release reproduced: 7.2 (default), 8.2, 10.0, 10.2 or 11.1
                                (discard-no-unref from 8.2; validate refuses other installed versions)
          --image FILE          start from a copy of this qcow2 file (never modified)
          --drive OPTS          qcow2 runtime options (l2-cache-size=1M,cache-clean-interval=30,…)
          --cache-mode MODE     writeback (default, like a VM), writethrough (qemu-io's default),
                                none, directsync or unsafe (QEMU's -t / cache= names)
        """

    /// The configuration the arguments describe.
    static func config(_ a: Arguments) throws -> SimulationConfig {
        let image = a.value("--image")
        if image != nil {
            // The image file defines all of these; accepting them would silently ignore them.
            for (option, spelling, reason) in imageConflicts where a.value(option) != nil {
                throw UsageError("\(spelling) cannot be combined with --image (\(reason))")
            }
        }
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
        var config = SimulationConfig(
            virtualSize: size, chainLength: chain, populate: populate,
            populateMode: PopulateMode(rawValue: modeName) ?? .metadata, imageFile: image,
            cacheMode: CacheMode(rawValue: cacheName) ?? .writeback)
        let version = try a.choice(
            "--qemu-version", QemuVersion.allCases.map(\.rawValue), default: QemuVersion.v7_2.rawValue)
        config.qemuVersion = QemuVersion(rawValue: version) ?? .v7_2
        var layerCreateOptions: [Int: String] = [:]
        for text in a.all("--layer") {
            let (layer, plan) = try parseLayer(text, size: size, into: config.layers, createOptions: &layerCreateOptions)
            if layer >= chain {
                throw UsageError(
                    "invalid value '\(text)' for --layer (image \(layer), but --chain is \(chain): 0 to \(chain - 1))")
            }
            config.layers[layer] = plan
        }
        // QEMU's spellings become typed values here, once, with qemu-img's and QEMU's messages.
        try config.parseCreateOptions(a.value("--create-options") ?? "", layers: layerCreateOptions)
        try config.parseDriveOptions(a.value("--drive") ?? "")
        return config
    }

    /// `N:-o=OPTS`, `N:populate=WHAT` or `N:populate-mode=MODE`, merged into what `existing`
    /// already holds for image N; `-o` text is appended to `createOptions[N]` (parsed with the
    /// chain-wide `-o` by `SimulationConfig.parseCreateOptions`).
    static func parseLayer(
        _ text: String, size: UInt64, into existing: [Int: LayerPlan], createOptions: inout [Int: String]
    ) throws -> (Int, LayerPlan) {
        let bad = "invalid value '\(text)' for --layer (expected N:-o=OPTS, N:populate=WHAT or N:populate-mode=MODE)"
        guard let colon = text.firstIndex(of: ":"), let n = Int(text[..<colon]), n >= 0 else { throw UsageError(bad) }
        let rest = text[text.index(after: colon)...]
        guard let eq = rest.firstIndex(of: "=") else { throw UsageError(bad) }
        let key = rest[..<eq]
        let value = String(rest[rest.index(after: eq)...])
        var plan = existing[n] ?? LayerPlan()
        switch key {
        case "-o", "o":
            let own = createOptions[n] ?? ""
            createOptions[n] = own.isEmpty ? value : own + "," + value
        case "populate":
            plan.populate = try parsePopulate(value, size: size)
        case "populate-mode":
            guard let mode = PopulateMode(rawValue: value) else {
                throw UsageError(
                    "invalid value '\(value)' in --layer \(text) (expected one of: \(PopulateMode.allCases.map(\.rawValue).joined(separator: ", ")))"
                )
            }
            plan.populateMode = mode
        default:
            throw UsageError(bad)
        }
        return (n, plan)
    }

    /// Options that `--image FILE` makes meaningless: (name, spelling in messages, why).
    static let imageConflicts: [(String, String, String)] = [
        ("--size", "--size", "the virtual size is the image's"),
        ("--chain", "--chain", "the chain is the image's backing chain"),
        ("--create-options", "-o", "the image exists; -o is for qemu-img create"),
        ("--populate", "--populate", "the image already has its contents"),
        ("--populate-mode", "--populate-mode", "the image already has its contents"),
    ]

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
                let range = ByteRange(start: start, length: len)
                guard range.endsWithin(size) else {
                    throw UsageError("invalid value '\(item)' for --populate (the range ends beyond the virtual size \(size))")
                }
                ranges.append(range)
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

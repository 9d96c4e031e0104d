import TraceKit

/// How the simulated image's writes reach the disk (QEMU `-t` / `cache=`), with the meaning
/// `bdrv_parse_cache_mode` (block.c) gives each name: `cache.direct` (O_DIRECT on the image
/// file), `cache.no-flush` (flushes stop before the host's fdatasync) and writethrough
/// (`blk_set_enable_write_cache(false)`).
///
/// Only writethrough changes what the metadata caches do: the block layer then adds FUA to every
/// write and write-zeroes request, which qcow2 does not support natively, so `bdrv_driver_pwritev`
/// emulates it with a flush after the request (§7.1). O_DIRECT changes only how the host file is
/// written. `cache.no-flush` does not skip qcow2's own write-back: `bdrv_co_flush` calls the
/// driver's `bdrv_co_flush_to_os` (`qcow2_write_caches`) "even with cache=unsafe" and only then
/// skips the disk flush. Checked against qemu-io 7.2: `none` and `unsafe` give writeback's events,
/// `directsync` writethrough's.
public enum CacheMode: String, Sendable, CaseIterable {
    /// `cache=writeback`: a VM's default; no flush after each write.
    case writeback
    /// `cache=writethrough`: qemu-io's default; WRITE(L2)+WRITE(RC) after every write (§7.1).
    case writethrough
    /// `cache=none`: writeback with O_DIRECT on the image file (`cache.direct=on`).
    case none
    /// `cache=directsync`: writethrough with O_DIRECT.
    case directsync
    /// `cache=unsafe`: writeback with `cache.no-flush=on`; the caches are still written back on
    /// every flush, only the host's fdatasync is skipped.
    case unsafe

    /// Whether the block layer flushes after every write (`cache.writeback=off`).
    public var writethrough: Bool { self == .writethrough || self == .directsync }
}

/// A byte range on the virtual disk.
public struct ByteRange: Equatable, Hashable, Sendable {
    /// First byte.
    public var start: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Creates a range.
    public init(start: UInt64, length: UInt64) {
        self.start = start
        self.length = length
    }

    /// Whether the range ends at or before `size`, computed without overflow (a start near
    /// 2^64 plus a length must not wrap around to a small end).
    public func endsWithin(_ size: UInt64) -> Bool { start <= size && length <= size - start }
}

/// What the base image holds before the trace runs (`--populate`).
public enum Populate: Equatable, Sendable {
    /// A fresh image as `qemu-img create` makes it.
    case none
    /// The whole disk.
    case full
    /// The listed ranges, in order.
    case ranges([ByteRange])
}

/// How populated ranges are filled (`--populate-mode`).
public enum PopulateMode: String, Sendable, CaseIterable {
    /// `qemu-img create -o preallocation=metadata` (whole disk only).
    case metadata
    /// Write-zeroes in pieces of at most 2147483136 bytes, in a separate open/close with
    /// cache mode unsafe.
    case zero
    /// Data writes in pieces of 64 MiB, in a separate open/close with cache mode unsafe.
    case data
}

/// Everything that defines one simulation (and the matching real run): image creation, the
/// chain, the initial contents, the runtime cache options and the cache mode, as typed values.
///
/// QEMU's spellings are parsed once, before the run (`parseCreateOptions`, `parseDriveOptions`,
/// or `CreateOptions.parse` / `DriveOptions(parsing:)`), and rendered back for QEMU
/// (`CreateOptions.rendered`, `DriveOptions.rendered`): what `validate` gives qemu-img, qemu-io
/// and qemu-system is the rendering of the very values the simulation ran with.
public struct SimulationConfig: Sendable {
    /// Virtual size of every image in the chain (`--size`).
    public var virtualSize: UInt64
    /// The chain-wide `qemu-img create -o` options (`-o cluster_size=64K,extended_l2=on`): those
    /// of every image without a `LayerPlan.createOptions` of its own.
    public var createOptions: CreateOptions
    /// Number of images in the backing chain (`--chain`, ≥ 1). Image 0 is the base.
    public var chainLength: Int
    /// Initial contents of the base image.
    public var populate: Populate
    /// How `populate` is realised.
    public var populateMode: PopulateMode
    /// A real qcow2 file to start from (`--image`), instead of creating images.
    public var imageFile: String?
    /// The qcow2 runtime options of each image, top first, as one `-drive` / `--image-opts`
    /// string gives them (`l2-cache-size=1M,backing.l2-cache-size=256K`).
    public var driveOptions: DriveOptions
    /// Writeback (default, like a VM), writethrough (qemu-io's default), none, directsync or unsafe.
    public var cacheMode: CacheMode
    /// Name of the eviction policy (`qemu` reproduces QEMU; see `PolicyRegistry`).
    public var policy: String
    /// Open the top image read-only (qemu-io `-r`): writes are refused, close prints 2 flushes.
    public var readOnly = false
    /// Discards reach qcow2 and punch holes (qemu-io's default, `-drive discard=unmap`); false
    /// models a VM's default `discard=ignore`, where discards never reach the image.
    public var discardUnmap = true
    /// The QEMU release reproduced (`--qemu-version`; default 7.2): which runtime options are
    /// accepted (`discard-no-unref` from 8.1) and where the clean timer runs.
    public var qemuVersion: QemuVersion = .v7_2
    /// Per-layer settings (`--layer N:…`), by chain index (0 = base): that image's own create
    /// options (complete: the chain-wide ones with the layer's applied after them), and its own
    /// populate plan.
    public var layers: [Int: LayerPlan] = [:]
    /// Sessions run before the trace, after populating, each in its own open/close with default
    /// cache options and no metrics: `(chain index, requests)`. Models images prepared with
    /// qemu-io, e.g. `qemu-io -c 'write 64k 64k' overlay.qcow2`.
    public var preparation: [PreparationSession] = []
    /// Proposals QEMU does not implement (`--what-if`): empty for QEMU's own behaviour.
    public var whatIf = WhatIf()
    /// Test only: a multi-segment write's tasks resume in reverse submission order, one of the
    /// other orders QEMU can take when I/O completes differently (§13); proves `validate` tells
    /// a reordered run (`equivalent`) from one whose order changed later cache decisions.
    public var debugReverseTaskResumption = false
    /// Test only: every write takes the general path of ALLOC_HOST and the task, never
    /// `Qcow2Image.quickWrite`, so a test can compare the two.
    public var debugGeneralWrites = false

    /// Creates a configuration; the defaults match `qcow2sim simulate` without options.
    public init(
        virtualSize: UInt64, createOptions: CreateOptions = CreateOptions(), chainLength: Int = 1,
        populate: Populate = .none, populateMode: PopulateMode = .metadata, imageFile: String? = nil,
        driveOptions: DriveOptions = DriveOptions(),
        cacheMode: CacheMode = .writeback, policy: String = "qemu"
    ) {
        self.virtualSize = virtualSize
        self.createOptions = createOptions
        self.chainLength = chainLength
        self.populate = populate
        self.populateMode = populateMode
        self.imageFile = imageFile
        self.driveOptions = driveOptions
        self.cacheMode = cacheMode
        self.policy = policy
    }
}

extension SimulationConfig {
    /// The `qemu-img create -o` options of chain image `layer`: its own, else the chain-wide ones.
    public func createOptions(layer: Int) -> CreateOptions {
        layers[layer]?.createOptions ?? createOptions
    }

    /// The runtime cache options of chain image `layer` (0 = base) in a chain of `chainLength`
    /// images: the `driveOptions` entry `chainLength - 1 - layer` levels below the top.
    public func cacheOptions(layer: Int, chainLength: Int) -> CacheOptions {
        driveOptions[chainLength - 1 - layer]
    }

    /// Parses the chain-wide `-o` text and each layer's own (`--layer N:-o=…`, applied after the
    /// chain-wide text, as qemu-img takes the last value of an option given twice), with
    /// qemu-img's messages prefixed by the option (`-o: `, `--layer 1: -o: `), in chain order.
    /// Sets `createOptions` and each named layer's `LayerPlan.createOptions`.
    public mutating func parseCreateOptions(_ text: String, layers own: [Int: String] = [:]) throws(SimulationError) {
        var chainWide: CreateOptions?
        func parseChainWide() throws(SimulationError) -> CreateOptions {
            if let chainWide { return chainWide }
            do {
                let parsed = try CreateOptions.parse(text)
                chainWide = parsed
                return parsed
            } catch {
                throw SimulationError.usage("-o: \(error.message)")
            }
        }
        let indices = Set(0..<max(chainLength, 1)).union(own.keys).sorted()
        for k in indices {
            guard let mine = own[k], !mine.isEmpty else {
                if k < chainLength { _ = try parseChainWide() }
                continue
            }
            do {
                layers[k, default: LayerPlan()].createOptions = try CreateOptions.parse(text.isEmpty ? mine : text + "," + mine)
            } catch {
                throw SimulationError.usage("--layer \(k): -o: \(error.message)")
            }
        }
        createOptions = try parseChainWide()
    }

    /// Parses a `-drive` / `--image-opts` option string for this chain (`chainLength` images, or
    /// the `imageFile`'s backing chain, checked when it is opened) as `qemuVersion` does, with
    /// QEMU's messages prefixed by `--drive: `. Sets `driveOptions`.
    public mutating func parseDriveOptions(_ text: String) throws(SimulationError) {
        do {
            driveOptions = try DriveOptions(
                parsing: text, depth: imageFile == nil ? max(chainLength, 1) : nil, version: qemuVersion)
        } catch {
            throw SimulationError.usage("--drive: \(error.message)")
        }
    }

    /// What chain image `layer` holds before the trace, and how it is written: the base takes
    /// `populate`/`populateMode` unless its layer plan says otherwise; other images start empty;
    /// a layer plan's populate without a mode is written with data.
    public func populatePlan(layer: Int) -> (populate: Populate, mode: PopulateMode) {
        let plan = layers[layer]
        let populate = plan?.populate ?? (layer == 0 ? self.populate : .none)
        // A layer's own populate plan defaults to data writes; the base's `--populate` keeps
        // `--populate-mode`.
        let mode = plan?.populateMode ?? (layer == 0 && plan?.populate == nil ? populateMode : .data)
        return (populate, mode)
    }
}

/// One chain image's own settings (`--layer N:-o=OPTS`, `--layer N:populate=…`,
/// `--layer N:populate-mode=…`).
public struct LayerPlan: Equatable, Sendable {
    /// The image's create options, complete (the chain-wide `-o` with the layer's own
    /// `cluster_size=4K,compat=0.10` applied after it), or nil for the chain-wide ones.
    public var createOptions: CreateOptions?
    /// Initial contents, or nil for the chain-wide default (the base's `--populate`, else none).
    public var populate: Populate?
    /// How `populate` is written, or nil for the default (the base's `--populate-mode`, else data).
    public var populateMode: PopulateMode?
    /// Creates a plan.
    public init(createOptions: CreateOptions? = nil, populate: Populate? = nil, populateMode: PopulateMode? = nil) {
        self.createOptions = createOptions
        self.populate = populate
        self.populateMode = populateMode
    }
}

/// Requests replayed on one image of the chain in a separate session before the trace.
public struct PreparationSession: Sendable, Equatable {
    /// Chain position of the image (0 = base).
    public var image: Int
    /// The requests, in order.
    public var records: [TraceRecord]
    /// Creates a session.
    public init(image: Int, records: [TraceRecord]) {
        self.image = image
        self.records = records
    }
}

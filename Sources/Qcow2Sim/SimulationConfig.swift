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
/// chain, the initial contents, the runtime cache options and the cache mode.
public struct SimulationConfig: Sendable {
    /// Virtual size of every image in the chain (`--size`).
    public var virtualSize: UInt64
    /// `qemu-img create -o` options as the user typed them (`cluster_size=64K,extended_l2=on`).
    public var createOptions: String
    /// Number of images in the backing chain (`--chain`, ≥ 1). Image 0 is the base.
    public var chainLength: Int
    /// Initial contents of the base image.
    public var populate: Populate
    /// How `populate` is realised.
    public var populateMode: PopulateMode
    /// A real qcow2 file to start from (`--image`), instead of creating images.
    public var imageFile: String?
    /// qcow2 runtime options as QEMU's `-drive` / `--image-opts` spell them
    /// (`l2-cache-size=1M,backing.l2-cache-size=256K`).
    public var driveOptions: String
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
    /// Per-layer settings (`--layer N:…`), by chain index (0 = base): create options added after
    /// `createOptions` for that image, and its own populate plan.
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

    /// Creates a configuration; the defaults match `qcow2sim simulate` without options.
    public init(
        virtualSize: UInt64, createOptions: String = "", chainLength: Int = 1, populate: Populate = .none,
        populateMode: PopulateMode = .metadata, imageFile: String? = nil, driveOptions: String = "",
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
    /// The `qemu-img create -o` options of chain image `layer`: the chain-wide options, then the
    /// layer's own (qemu-img takes the last value of an option given twice).
    public func createOptions(layer: Int) -> String {
        let own = layers[layer]?.createOptions ?? ""
        if own.isEmpty { return createOptions }
        return createOptions.isEmpty ? own : createOptions + "," + own
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
    /// Create options added after the chain-wide `-o` (`cluster_size=4K,compat=0.10`).
    public var createOptions: String
    /// Initial contents, or nil for the chain-wide default (the base's `--populate`, else none).
    public var populate: Populate?
    /// How `populate` is written, or nil for the default (the base's `--populate-mode`, else data).
    public var populateMode: PopulateMode?
    /// Creates a plan.
    public init(createOptions: String = "", populate: Populate? = nil, populateMode: PopulateMode? = nil) {
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

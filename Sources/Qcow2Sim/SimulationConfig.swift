import TraceKit

/// How the simulated image's writes reach the disk (QEMU `-t` / `cache=`).
public enum CacheMode: String, Sendable, CaseIterable {
    /// `cache=writeback`: a VM's default; no flush after each write.
    case writeback
    /// `cache=writethrough`: qemu-io's default; WRITE(L2)+WRITE(RC) after every write (§7.1).
    case writethrough
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
    /// Writeback (default, like a VM) or writethrough (qemu-io's default).
    public var cacheMode: CacheMode
    /// Name of the eviction policy (`qemu` reproduces QEMU; see `PolicyRegistry`).
    public var policy: String
    /// Open the top image read-only (qemu-io `-r`): writes are refused, close prints 2 flushes.
    public var readOnly = false
    /// Discards reach qcow2 and punch holes (qemu-io's default, `-drive discard=unmap`); false
    /// models a VM's default `discard=ignore`, where discards never reach the image.
    public var discardUnmap = true
    /// Sessions run before the trace, after populating, each in its own open/close with default
    /// cache options and no metrics: `(chain index, requests)`. Models images prepared with
    /// qemu-io, e.g. `qemu-io -c 'write 64k 64k' overlay.qcow2`.
    public var preparation: [PreparationSession] = []

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

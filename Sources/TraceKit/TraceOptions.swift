/// How a trace's records are selected and mapped onto the simulated virtual disk.
///
/// Selection (`device`, `event`) is applied by the format's reader; the mapping (offset shift,
/// disk bounds, time scaling, reordering, rebasing) is applied afterwards by ``AnyTraceReader``,
/// identically for every format.
public struct TraceOptions: Sendable, Equatable {
    /// What to do with a request that ends beyond ``diskSize``.
    public enum BeyondDisk: String, Sendable, CaseIterable {
        /// Throw a `TraceError` located at the record (the default).
        case reject
        /// Wrap the offset modulo the disk size (then clip the tail at the end of the disk).
        case wrap
        /// Shorten the request to end at the disk's end; drop it if it starts beyond.
        case clip
    }

    /// Which blktrace action is taken as "the request" (one per I/O).
    public enum BlktraceEvent: String, Sendable, CaseIterable {
        /// `Q`: the request was queued by the block layer (what the guest asked).
        case queue = "Q"
        /// `D`: the request was issued to the driver (the default: what the device saw).
        case issue = "D"
        /// `C`: the request completed (timestamps are completion times).
        case complete = "C"
    }

    /// Which device, volume, host/disk, LUN or ASU to keep; `nil` keeps every record.
    ///
    /// blktrace/blkparse: `MAJ,MIN` of the whole disk (after remap) or of a partition;
    /// MSR Cambridge: `HOST` or `HOST:DISK`; SYSTOR'17: the LUN; Tencent CBS: the volume ID;
    /// Alibaba: the device ID; SPC/UMass: the ASU; fio iolog: the file name.
    public var device: String?
    /// Whether readers set ``TraceRecord/volume`` (off by default: interning a volume name costs
    /// a table lookup per record, and a single-disk replay does not need it). `trace info`
    /// and `--per-volume` turn it on.
    public var tagVolumes = false
    /// blktrace/blkparse: the action that defines a request.
    public var event: BlktraceEvent = .issue
    /// Size of the virtual disk in bytes; `nil` accepts any offset.
    public var diskSize: UInt64?
    /// Policy for requests beyond ``diskSize``.
    public var beyondDisk: BeyondDisk = .reject
    /// Bytes added to every offset (may be negative; a result below 0 is an error).
    public var offsetShift: Int64 = 0
    /// Multiplier applied to every timestamp (0.5 replays twice as fast).
    public var timeScale: Double = 1
    /// Records buffered to sort timestamps that arrive out of order; `0` rejects the first
    /// out-of-order record; `nil` uses the format's default (65536 for the public traces known
    /// to be unsorted: SYSTOR'17, Tencent CBS, Alibaba; 0 otherwise).
    public var reorderWindow: Int?
    /// Whether to subtract the first record's time so the trace starts at 0; `nil` uses the
    /// format's default (rebase absolute clocks such as FILETIME or epoch seconds).
    public var rebaseTime: Bool?

    /// Default options: keep everything, no disk bound, no shift.
    public init() {}
}

/// The mapping stage every reader's records pass through: time scaling and rebasing, bounded
/// reordering, offset shift and disk bounds. Format-independent, so a new format never needs it
/// changed.
struct RecordMapper {
    private let options: TraceOptions
    private let rebase: Bool
    private let window: Int
    private let fileName: String
    private var timeOrigin: Double?
    private var lastTime: Double?
    private var heap: [Pending] = []
    private var sequence = 0

    struct Pending {
        var record: TraceRecord
        var location: TraceLocation
        var sequence: Int
        @inline(__always) func before(_ o: Pending) -> Bool {
            let a = record.time ?? 0
            let b = o.record.time ?? 0
            return a < b || (a == b && sequence < o.sequence)
        }
    }

    init(options: TraceOptions, format: TraceFormat, fileName: String) {
        self.options = options
        rebase = options.rebaseTime ?? format.hasAbsoluteTime
        window = max(0, options.reorderWindow ?? format.defaultReorderWindow)
        self.fileName = fileName
    }

    /// Pulls the next mapped record (and its location) from `source`.
    @inline(__always)
    mutating func next<R: TraceReader>(from source: inout R) throws -> (TraceRecord, TraceLocation)? {
        while true {
            guard let (raw, loc) = try nextOrdered(from: &source) else { return nil }
            // A reader's origin is fixed once it has read its first row, before any record leaves.
            if let mapped = try map(raw, loc, origin: rebase ? .zero : source.timeOrigin) { return (mapped, loc) }
        }
    }

    /// `TraceReader.next(into:admitting:)` over `source`, mapped: the records `next(from:)`
    /// returns, as long as `filter` admits each. `location` ends at the last record read (the
    /// refused one, when one ends the batch), as after as many `next(from:)` calls.
    @inline(__always)
    mutating func next<R: TraceReader>(
        from source: inout R, into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads,
        location: inout TraceLocation
    ) -> (count: Int, end: BatchEnd) {
        filter.fill(buffer) {
            guard let (r, loc) = try next(from: &source) else { return nil }
            location = loc
            return r
        }
    }

    /// `next(from:into:admitting:location:)` for the binary format: records without a time that
    /// `map` would leave as they are (no reordering, no offset shift, inside the disk) go from the
    /// reader's decoded batch or its input buffer straight into `buffer` (`takeUntimed`), without
    /// a call chain and a location per record; any other record takes `next(from:)`, where it is mapped, refused or
    /// reported as before.
    @inline(__always)
    mutating func next(
        from source: inout NativeBinaryTraceReader, into buffer: UnsafeMutableBufferPointer<TraceRecord>,
        admitting filter: PlainReads, location: inout TraceLocation
    ) -> (count: Int, end: BatchEnd) {
        guard window == 0 && options.offsetShift == 0 else {
            return filter.fill(buffer) {
                guard let (r, loc) = try next(from: &source) else { return nil }
                location = loc
                return r
            }
        }
        let admission = UntimedAdmission(filter, diskSize: options.diskSize ?? UInt64.max)
        var n = 0
        while n < buffer.count {
            let k: Int
            do {
                k = try source.takeUntimed(into: buffer, from: n, admitting: admission)
            } catch {
                return (n, .failed(error))
            }
            if k > 0 {
                n &+= k
                location = source.location
                continue
            }
            do {
                guard let (r, loc) = try next(from: &source) else { return (n, .ended) }
                location = loc
                guard filter.admits(r) else { return (n, .refused(r)) }
                buffer[n] = r
                n &+= 1
            } catch {
                return (n, .failed(error))
            }
        }
        return (n, .full)
    }

    @inline(__always)
    private mutating func nextOrdered<R: TraceReader>(from source: inout R) throws -> (TraceRecord, TraceLocation)? {
        if window == 0 {
            guard let r = try source.next() else { return nil }
            let loc = source.location
            try checkOrder(r, loc)
            return (r, loc)
        }
        while heap.count < window, let r = try source.next() {
            push(Pending(record: r, location: source.location, sequence: sequence))
            sequence += 1
        }
        guard let top = pop() else { return nil }
        try checkOrder(top.record, top.location)
        return (top.record, top.location)
    }

    @inline(__always)
    private mutating func checkOrder(_ r: TraceRecord, _ loc: TraceLocation) throws {
        guard let t = r.time else { return }
        if let last = lastTime, t < last {
            let hint =
                window == 0
                ? "use --reorder-window N to sort within N records"
                : "it is more than \(window) records late; raise --reorder-window"
            throw TraceError(
                file: fileName, location: loc,
                message: "time \(t) is earlier than the previous record's \(last) (out of order; \(hint))")
        }
        lastTime = t
    }

    @inline(__always)
    private mutating func map(_ raw: TraceRecord, _ loc: TraceLocation, origin: TraceTimeOrigin) throws -> TraceRecord? {
        var r = raw
        if let t = r.time {
            // The one place times are rebased: to the first record in (sorted) order, or not at all,
            // in which case the reader's origin is added back to give its absolute clock.
            if rebase {
                if timeOrigin == nil { timeOrigin = t }
                r.time = (t - (timeOrigin ?? t)) * options.timeScale
            } else {
                let absolute = origin.absolute(t)
                r.time = options.timeScale != 1 ? absolute * options.timeScale : absolute
            }
            // Checked after scaling: that is the time the simulator's clock will run to.
            if let mapped = r.time, let problem = TraceRecord.timeProblem(mapped) {
                throw TraceError(file: fileName, location: loc, message: problem)
            }
        }
        if r.op == .flush {
            // A flush has no range (bdrv_co_flush takes none): one a reader parsed (native
            // `F,2,0`) is dropped here, so every flush is offset 0, length 0 as TraceRecord says.
            r.offset = 0
            r.length = 0
            return r
        }
        if options.offsetShift != 0 {
            let shift = options.offsetShift
            if shift > 0 {
                let (v, o) = r.offset.addingReportingOverflow(UInt64(shift))
                if o || v.addingReportingOverflow(r.length).overflow {
                    throw TraceError(
                        file: fileName, location: loc, message: "offset \(r.offset) shifted by \(shift) overflows 64 bits")
                }
                r.offset = v
            } else {
                let m = shift.magnitude
                guard r.offset >= m else {
                    throw TraceError(
                        file: fileName, location: loc,
                        message: "offset \(r.offset) shifted by \(shift) is negative")
                }
                r.offset -= m
            }
        }
        guard let size = options.diskSize else { return r }
        let end = r.offset.addingReportingOverflow(r.length)
        if !end.overflow && end.partialValue <= size { return r }
        switch options.beyondDisk {
        case .reject:
            throw TraceError(
                file: fileName, location: loc,
                message:
                    "request at offset \(r.offset) length \(r.length) ends beyond the disk size \(size) (use --beyond wrap or clip)"
            )
        case .wrap:
            guard size > 0 else { return nil }
            r.offset %= size
            r.length = min(r.length, size - r.offset)
            return r
        case .clip:
            guard r.offset < size else { return nil }
            r.length = size - r.offset
            return r
        }
    }

    // A binary min-heap on (time, arrival order): stable, so equal times keep trace order.
    private mutating func push(_ x: Pending) {
        heap.append(x)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].before(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func pop() -> Pending? {
        guard let first = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return first }
        heap[0] = last
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1
            guard l < n else { break }
            var m = l
            if l + 1 < n && heap[l + 1].before(heap[l]) { m = l + 1 }
            guard heap[m].before(heap[i]) else { break }
            heap.swapAt(i, m)
            i = m
        }
        return first
    }
}

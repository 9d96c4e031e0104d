import TraceKit

/// The ordered cache events of one simulated (or real) session, split into phases: the open,
/// one span per trace request, and the close.
///
/// Events are kept in memory only when `retainEvents` is set (validation and tests); a `sink`
/// receives every event as it happens (the `--events FILE` writer), so large traces stream.
public final class EventLog {
    /// Where one request's events start, and how the request was classified.
    public struct RequestMark: Equatable, Sendable {
        /// 0-based request number in the trace.
        public var request: Int
        /// The request's location in the trace file.
        public var location: TraceLocation
        /// Index into `events` of the request's first event.
        public var firstEvent: Int
        /// True when QEMU runs the request as concurrent segments (§13): a write whose first
        /// ALLOC_HOST, or a read whose first MAP, did not cover the whole request. Its global
        /// event order is not deterministic in QEMU; per-image order is.
        public var multiSegment: Bool
        /// True for a multi-segment write (QEMU may even reorder one image's events).
        public var multiSegmentWrite: Bool

        /// Creates a mark.
        public init(
            request: Int, location: TraceLocation, firstEvent: Int, multiSegment: Bool = false, multiSegmentWrite: Bool = false
        ) {
            self.request = request
            self.location = location
            self.firstEvent = firstEvent
            self.multiSegment = multiSegment
            self.multiSegmentWrite = multiSegmentWrite
        }
    }

    /// Every event, when `retainEvents` is true.
    @exclusivity(unchecked) public private(set) var events: [CacheEvent] = []
    /// The coroutine that printed each event of `events`: 0 for the request's own coroutine, k
    /// for the k-th task of a multi-segment write's task pool (§13). QEMU's order within one
    /// coroutine is fixed; between the tasks of a pool it can depend on I/O completion.
    @exclusivity(unchecked) public private(set) var eventTasks: [Int32] = []
    /// The coroutine the next events belong to (set by the write path's task pool).
    @exclusivity(unchecked) public var task: Int32 = 0
    /// One mark per request, in order.
    @exclusivity(unchecked) public private(set) var requests: [RequestMark] = []
    /// Index into `events` where the close sequence starts (nil until `beginClose`).
    @exclusivity(unchecked) public private(set) var closeStart: Int?
    /// Number of events seen (also when not retained).
    @exclusivity(unchecked) public private(set) var count = 0
    /// Whether events are kept in `events`.
    public let retainEvents: Bool
    /// Called with every event as it is emitted.
    @exclusivity(unchecked) public var sink: ((CacheEvent) -> Void)?

    /// Creates a log; `retainEvents` keeps the events in memory.
    public init(retainEvents: Bool = true, sink: ((CacheEvent) -> Void)? = nil) {
        self.retainEvents = retainEvents
        self.sink = sink
    }

    /// Events being held back (innermost last), see `beginCapture`.
    @exclusivity(unchecked) private var captures: [[CacheEvent]] = []

    /// From now on events are held back instead of logged, until `endCapture` (nestable). The
    /// read path uses it to print a backing task's events after its first I/O where QEMU does.
    public func beginCapture() { captures.append([]) }

    /// Stops holding back and returns the events held since the matching `beginCapture`.
    public func endCapture() -> [CacheEvent] { captures.popLast() ?? [] }

    /// Appends one event.
    @inline(__always)
    public func append(_ event: CacheEvent) {
        if !captures.isEmpty {
            captures[captures.count - 1].append(event)
            return
        }
        count += 1
        if retainEvents {
            events.append(event)
            eventTasks.append(task)
        }
        sink?(event)
    }

    /// Marks the start of request `request` (events from now on belong to it).
    public func beginRequest(_ request: Int, location: TraceLocation) {
        if retainEvents {
            requests.append(RequestMark(request: request, location: location, firstEvent: count))
        }
    }

    /// Classifies the request currently being recorded as multi-segment.
    public func markMultiSegment(write: Bool) {
        guard retainEvents, !requests.isEmpty else { return }
        requests[requests.count - 1].multiSegment = true
        if write { requests[requests.count - 1].multiSegmentWrite = true }
    }

    /// Marks the start of the close sequence.
    public func beginClose() { closeStart = count }

    /// The open phase: events before the first request.
    public var openEvents: ArraySlice<CacheEvent> {
        events[0..<(requests.first?.firstEvent ?? closeStart ?? events.count)]
    }

    /// The events of request number `i` (an index into `requests`).
    public func events(ofRequest i: Int) -> ArraySlice<CacheEvent> {
        events[span(ofRequest: i)]
    }

    /// The coroutine tags (`eventTasks`) of the events of request number `i`.
    public func tasks(ofRequest i: Int) -> ArraySlice<Int32> {
        eventTasks[span(ofRequest: i)]
    }

    private func span(ofRequest i: Int) -> Range<Int> {
        let start = requests[i].firstEvent
        let end = i + 1 < requests.count ? requests[i + 1].firstEvent : (closeStart ?? events.count)
        return start..<end
    }

    /// The close phase.
    public var closeEvents: ArraySlice<CacheEvent> { events[(closeStart ?? events.count)...] }
}

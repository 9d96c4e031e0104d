import Qcow2Sim
import TraceKit

/// Where the simulated and the real event streams first part, with context.
public struct Divergence: Equatable, Sendable, Codable {
    /// `open`, `request` or `close`.
    public var phase: String
    /// 0-based request number (phase `request`).
    public var request: Int?
    /// The request's location in the input trace (`12` for line 12), when known.
    public var traceLocation: String?
    /// Index of the first differing event within the phase (or request).
    public var eventIndex: Int
    /// The 1-based line of QEMU's trace log holding the first differing event, if any.
    public var qemuLogLine: Int?
    /// Why: `event differs`, `missing events`, `extra events`, or `not an interleaving …`.
    public var reason: String
    /// Index within the phase of the first line of both windows.
    public var windowStart: Int
    /// Expected events around the divergence (`image N` labels from the simulator).
    public var expected: [String]
    /// QEMU's events around the divergence (image labels inferred).
    public var actual: [String]

    /// Creates a divergence record.
    public init(
        phase: String, request: Int?, traceLocation: String?, eventIndex: Int, qemuLogLine: Int?, reason: String,
        windowStart: Int,
        expected: [String], actual: [String]
    ) {
        self.phase = phase
        self.request = request
        self.traceLocation = traceLocation
        self.eventIndex = eventIndex
        self.qemuLogLine = qemuLogLine
        self.reason = reason
        self.windowStart = windowStart
        self.expected = expected
        self.actual = actual
    }
}

/// The outcome of checking one request that QEMU may run as concurrent segments (§13).
public struct InterleavingCheck: Equatable, Sendable, Codable {
    /// 0-based request number.
    public var request: Int
    /// Its trace location.
    public var traceLocation: String?
    /// Whether the request is a write.
    public var write: Bool
    /// The simulator classified it as multi-segment.
    public var simulatorMarked: Bool
    /// QEMU ran it as a task pool (`qcow2_add_task … pool 0x…`).
    public var qemuPooled: Bool
    /// The global orders were identical.
    public var identicalOrder: Bool
    /// QEMU's order is the simulator's, or an interleaving of the simulator's sequences per
    /// image and coroutine (the request's own and each task's, §13).
    public var passed: Bool

    /// Creates a check record.
    public init(
        request: Int, traceLocation: String?, write: Bool, simulatorMarked: Bool, qemuPooled: Bool, identicalOrder: Bool,
        passed: Bool
    ) {
        self.request = request
        self.traceLocation = traceLocation
        self.write = write
        self.simulatorMarked = simulatorMarked
        self.qemuPooled = qemuPooled
        self.identicalOrder = identicalOrder
        self.passed = passed
    }
}

/// The result of comparing two event streams.
public struct Comparison: Sendable {
    /// Every compared event matched, in order.
    public var identical: Bool { firstDivergence == nil && equivalentRequests.isEmpty }
    /// No divergence, but some requests' events came in another valid concurrent order.
    public var equivalent: Bool { firstDivergence == nil && !equivalentRequests.isEmpty }
    /// Requests (0-based) whose events are a valid interleaving of their concurrent coroutines
    /// in another order than the simulator's.
    public var equivalentRequests: [Int] = []
    /// The first divergence, or nil.
    public var firstDivergence: Divergence?
    /// Number of requests (plus open and close) whose events differ.
    public var divergentSpans: Int = 0
    /// Every multi-segment request, checked.
    public var multiSegment: [InterleavingCheck] = []
    /// Whether the close phase was compared.
    public var closeCompared: Bool
    /// QEMU's events with the image of each inferred (exact where a span matched).
    public var labeled: QemuLog
}

/// Compares a simulated `EventLog` with QEMU's log (qcow2-model.md §13, §15.2).
///
/// Lines are compared without the image field (QEMU does not print one). Each span (open, each
/// request, close) is compared separately, so one divergence does not hide later agreement:
/// * a single-segment request must match exactly;
/// * a request that either side classifies as multi-segment matches exactly, or is
///   *equivalent* when QEMU's order is an interleaving of the simulator's sequences per image
///   and coroutine (`interleave`: the request's own and each write task's, whose relative order
///   depends on I/O completion, §13); anything else is a divergence;
/// * the close is compared only when `compareClose` (qemu-io; qemu-system's tail differs, §10).
///
/// Image attribution: a matching span takes the simulator's labels (or the interleaving's);
/// a divergent span is labelled greedily, event by event, with the image whose next expected
/// event it equals, else the image of the previous event.
public enum Comparator {
    /// Events around a divergence shown before it.
    public static let contextBefore = 5
    /// Events shown from the divergence on.
    public static let contextAfter = 8

    /// Compares `expected` (simulator) with `actual` (QEMU). `writes[i]` says whether request i
    /// is a write (for the multi-segment rule); `locations[i]` names it in the report.
    public static func compare(
        expected: EventLog, actual: QemuLog, writes: [Bool], locations: [TraceLocation], compareClose: Bool, topImage: Int
    ) -> Comparison {
        var result = Comparison(closeCompared: compareClose, labeled: actual)
        var labels = [Int](repeating: topImage, count: actual.events.count)
        var byRequest: [Int: Int] = [:]
        for (k, mark) in expected.requests.enumerated() { byRequest[mark.request] = k }

        func note(_ d: Divergence) {
            result.divergentSpans += 1
            if result.firstDivergence == nil { result.firstDivergence = d }
        }

        // Open.
        let openA = actual.openEvents
        let openE = expected.openEvents
        if let d = compareExact(
            openE, openA, actual: actual, labels: &labels, topImage: topImage, phase: "open", request: nil, location: nil)
        {
            note(d)
        }
        // Requests.
        for i in actual.requestStarts.indices {
            let a = actual.events(ofRequest: i)
            let mark = byRequest[i].map { expected.requests[$0] }
            let e: ArraySlice<CacheEvent> = byRequest[i].map { expected.events(ofRequest: $0) } ?? expected.events[0..<0]
            let loc = (i < locations.count ? locations[i] : mark?.location).map { $0.description }
            let simMulti = mark?.multiSegment ?? false
            let pooled = i < actual.pooled.count && actual.pooled[i]
            if simMulti || pooled {
                let isWrite = (i < writes.count && writes[i]) || (mark?.multiSegmentWrite ?? false)
                var check = InterleavingCheck(
                    request: i, traceLocation: loc, write: isWrite, simulatorMarked: simMulti, qemuPooled: pooled,
                    identicalOrder: false,
                    passed: false)
                let tasks = byRequest[i].map { expected.tasks(ofRequest: $0) }
                if same(e, a) {
                    check.identicalOrder = true
                    check.passed = true
                    for (k, ev) in zip(a.indices, e) { labels[k] = ev.image }
                } else if let found = interleave(expected: e, tasks: tasks, actual: a) {
                    check.passed = true
                    result.equivalentRequests.append(i)
                    for (k, img) in zip(a.indices, found) { labels[k] = img }
                } else {
                    greedyLabels(e, a, labels: &labels, topImage: topImage)
                    note(
                        divergence(
                            e, a, actual: actual, labels: labels, phase: "request", request: i, location: loc,
                            reason:
                                "not an interleaving of the simulator's concurrent tasks (multi-segment \(isWrite ? "write" : "read"))"
                        ))
                }
                result.multiSegment.append(check)
            } else if let d = compareExact(
                e, a, actual: actual, labels: &labels, topImage: topImage, phase: "request", request: i, location: loc)
            {
                note(d)
            }
        }
        // Close.
        if compareClose {
            if let d = compareExact(
                expected.closeEvents, actual.closeEvents, actual: actual, labels: &labels, topImage: topImage, phase: "close",
                request: nil,
                location: nil)
            {
                note(d)
            }
        } else {
            greedyLabels(expected.closeEvents, actual.closeEvents, labels: &labels, topImage: topImage)
        }
        for k in labels.indices { result.labeled.events[k].image = labels[k] }
        return result
    }

    /// Equality without the image field.
    @inline(__always)
    static func matches(_ x: CacheEvent, _ y: CacheEvent) -> Bool {
        x.kind == y.kind && x.isL2 == y.isL2 && x.offset == y.offset && x.readFromDisk == y.readFromDisk && x.index == y.index
    }

    /// Whether two event sequences are equal, event for event, without the image field.
    public static func same(_ e: ArraySlice<CacheEvent>, _ a: ArraySlice<CacheEvent>) -> Bool {
        e.count == a.count && zip(e, a).allSatisfy { matches($0, $1) }
    }

    private static func compareExact(
        _ e: ArraySlice<CacheEvent>, _ a: ArraySlice<CacheEvent>, actual: QemuLog, labels: inout [Int], topImage: Int,
        phase: String,
        request: Int?, location: String?
    ) -> Divergence? {
        if same(e, a) {
            for (k, ev) in zip(a.indices, e) { labels[k] = ev.image }
            return nil
        }
        greedyLabels(e, a, labels: &labels, topImage: topImage)
        return divergence(e, a, actual: actual, labels: labels, phase: phase, request: request, location: location, reason: nil)
    }

    private static func divergence(
        _ e: ArraySlice<CacheEvent>, _ a: ArraySlice<CacheEvent>, actual: QemuLog, labels: [Int], phase: String, request: Int?,
        location: String?, reason: String?
    ) -> Divergence {
        var j = 0
        while j < e.count && j < a.count && matches(e[e.startIndex + j], a[a.startIndex + j]) { j += 1 }
        let why: String
        if let reason {
            why = reason
        } else if j < e.count && j < a.count {
            why = "event differs"
        } else if j < e.count {
            why = "QEMU printed \(e.count - j) fewer events (missing events)"
        } else {
            why = "QEMU printed \(a.count - j) more events (extra events)"
        }
        let from = max(0, j - contextBefore)
        let expectedWindow = e.dropFirst(from).prefix(j - from + contextAfter).map { $0.description }
        var actualWindow: [String] = []
        for k in (a.startIndex + from)..<min(a.endIndex, a.startIndex + j + contextAfter) {
            var ev = a[k]
            ev.image = labels[k]
            actualWindow.append(ev.description)
        }
        let logLine = j < a.count ? actual.logLines[a.startIndex + j] : nil
        return Divergence(
            phase: phase, request: request, traceLocation: location, eventIndex: j, qemuLogLine: logLine, reason: why,
            windowStart: from,
            expected: expectedWindow, actual: actualWindow)
    }

    /// The expected events of each image, in order (keyed by image), or with `tasks` of each
    /// image and coroutine.
    static func perImage(_ e: ArraySlice<CacheEvent>, tasks: ArraySlice<Int32>? = nil) -> [(image: Int, events: [CacheEvent])] {
        struct Key: Hashable {
            var image: Int
            var task: Int32
        }
        var order: [Key] = []
        var seqs: [Key: [CacheEvent]] = [:]
        for (k, ev) in zip(e.indices, e) {
            var task: Int32 = 0
            if let tasks, k - e.startIndex < tasks.count { task = tasks[tasks.startIndex + (k - e.startIndex)] }
            let key = Key(image: ev.image, task: task)
            if seqs[key] == nil { order.append(key) }
            seqs[key, default: []].append(ev)
        }
        return order.map { ($0.image, seqs[$0] ?? []) }
    }

    private static func greedyLabels(_ e: ArraySlice<CacheEvent>, _ a: ArraySlice<CacheEvent>, labels: inout [Int], topImage: Int)
    {
        let seqs = perImage(e)
        var pos = [Int](repeating: 0, count: seqs.count)
        var last = seqs.firstIndex { $0.image == topImage }
        for k in a.indices {
            var chosen: Int?
            if let l = last, pos[l] < seqs[l].events.count, matches(seqs[l].events[pos[l]], a[k]) {
                chosen = l
            } else {
                chosen = seqs.indices.first { pos[$0] < seqs[$0].events.count && matches(seqs[$0].events[pos[$0]], a[k]) }
            }
            if let c = chosen {
                pos[c] += 1
                last = c
                labels[k] = seqs[c].image
            } else {
                labels[k] = last.map { seqs[$0].image } ?? topImage
            }
        }
    }

    /// Largest number of live states the interleaving search keeps per step before giving up.
    public static let interleavingStateLimit = 250_000

    /// Whether `actual` is an interleaving of the per-image subsequences of `expected`
    /// (each image's events in their expected order, the images merged in any order), and if so
    /// the image of every actual event. With `tasks` (the simulator's coroutine tag of each
    /// expected event, `EventLog.eventTasks`) the subsequences are per image and coroutine. Dynamic programming over position vectors, one layer
    /// per actual event; identical position vectors reached in different ways are merged.
    ///
    /// - Complexity: O(m · S · k) for m events, k images and S live states per layer (at most
    ///   the product of the per-image lengths; in practice close to the diagonal).
    public static func interleave(
        expected: ArraySlice<CacheEvent>, tasks: ArraySlice<Int32>? = nil, actual: ArraySlice<CacheEvent>
    ) -> [Int]? {
        guard expected.count == actual.count else { return nil }
        let seqs = perImage(expected, tasks: tasks)
        if seqs.isEmpty { return actual.isEmpty ? [] : nil }
        var layers: [[[Int]]] = [[[Int](repeating: 0, count: seqs.count)]]
        var parents: [[(Int, Int)]] = [[]]
        for ev in actual {
            var next: [[Int]] = []
            var nextParents: [(Int, Int)] = []
            var seen: [[Int]: Int] = [:]
            guard let layer = layers.last else { return nil }
            for (si, state) in layer.enumerated() {
                for m in seqs.indices where state[m] < seqs[m].events.count && matches(seqs[m].events[state[m]], ev) {
                    var ns = state
                    ns[m] += 1
                    if seen[ns] == nil {
                        seen[ns] = next.count
                        next.append(ns)
                        nextParents.append((si, m))
                    }
                }
            }
            if next.isEmpty || next.count > interleavingStateLimit { return nil }
            layers.append(next)
            parents.append(nextParents)
        }
        // Every layer after the last event holds only complete states (counts are equal).
        var result = [Int](repeating: 0, count: actual.count)
        var si = 0
        var step = actual.count
        while step > 0 {
            let (prev, m) = parents[step][si]
            result[step - 1] = seqs[m].image
            si = prev
            step -= 1
        }
        return result
    }
}

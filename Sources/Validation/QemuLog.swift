import Foundation
import Qcow2Sim
import TraceKit

/// QEMU's trace log of one replay, cut into the open, one span per request and the close.
///
/// Every cache event is labelled with the top image; which image of a chain really printed it
/// is decided later by aligning with the simulated log (`Comparator`), because QEMU's
/// `qcow2_cache_*` events carry only a coroutine pointer (qcow2-model.md §13).
public struct QemuLog: Equatable, Sendable {
    /// Every `qcow2_cache_*` event, in the order QEMU printed them.
    public var events: [CacheEvent] = []
    /// The 1-based line of the log file each event came from.
    public var logLines: [Int] = []
    /// Index into `events` of each request's first event.
    public var requestStarts: [Int] = []
    /// Whether QEMU ran the request as a task pool (a `qcow2_add_task` with a non-nil pool).
    public var pooled: [Bool] = []
    /// Index into `events` where the close starts (after the final marker).
    public var closeStart: Int = 0

    /// Creates an empty log.
    public init() {}

    /// The open phase: events before the first marker.
    public var openEvents: ArraySlice<CacheEvent> { events[0..<(requestStarts.first ?? closeStart)] }
    /// The events of request `i`.
    public func events(ofRequest i: Int) -> ArraySlice<CacheEvent> {
        events[requestStarts[i]..<(i + 1 < requestStarts.count ? requestStarts[i + 1] : closeStart)]
    }
    /// The close phase: events after the final marker.
    public var closeEvents: ArraySlice<CacheEvent> { events[closeStart...] }

    /// Parses a QEMU log (`-T` / `-trace` log backend, with or without the `pid@time:` prefix).
    ///
    /// `requestCount` markers plus a final one are expected, carrying
    /// `QemuIOScript.markerOffset`; anything else (a lost line, a foreign blk_co_preadv with
    /// length 0, a malformed cache event) throws `ValidationError.badQemuLog` naming the line.
    /// Events are labelled with `image`.
    public static func parse(_ data: Data, fileName: String, requestCount: Int, virtualSize: UInt64, image: Int) throws -> QemuLog
    {
        var log = QemuLog()
        log.pooled = []
        var markersSeen = 0
        var lineNumber = 0
        var pooledHere = false
        var rest = data[...]
        while !rest.isEmpty {
            lineNumber += 1
            let nl = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
            let raw = rest[rest.startIndex..<nl]
            rest = nl == rest.endIndex ? rest[nl...] : rest[rest.index(after: nl)...]
            var line = Substring(String(decoding: raw, as: UTF8.self))
            // The log backend may prefix `pid@seconds.micros:`.
            if let colon = line.firstIndex(of: ":"), let space = line.firstIndex(of: " "), colon < space,
                line[..<colon].contains("@")
            {
                line = line[line.index(after: colon)...]
            }
            if line.hasPrefix("qcow2_cache_") {
                guard let ev = CacheEvent(parsing: line, defaultImage: image) else {
                    throw ValidationError.badQemuLog("\(fileName):\(lineNumber): error: malformed cache event '\(line)'")
                }
                log.events.append(ev)
                log.logLines.append(lineNumber)
            } else if line.hasPrefix("blk_co_preadv ") {
                let fields = line.split(separator: " ")
                guard let bytesAt = fields.firstIndex(of: "bytes"), bytesAt + 1 < fields.count, fields[bytesAt + 1] == "0" else {
                    continue
                }
                guard let offAt = fields.firstIndex(of: "offset"), offAt + 1 < fields.count, let off = UInt64(fields[offAt + 1])
                else {
                    throw ValidationError.badQemuLog("\(fileName):\(lineNumber): error: malformed marker '\(line)'")
                }
                let want = QemuIOScript.markerOffset(markersSeen, virtualSize: virtualSize)
                guard markersSeen <= requestCount, off == want else {
                    throw ValidationError.badQemuLog(
                        "\(fileName):\(lineNumber): error: expected the marker of request \(markersSeen) (offset \(want)), found offset \(off)"
                    )
                }
                if markersSeen > 0 { log.pooled.append(pooledHere) }
                pooledHere = false
                if markersSeen < requestCount {
                    log.requestStarts.append(log.events.count)
                } else {
                    log.closeStart = log.events.count
                }
                markersSeen += 1
            } else if line.hasPrefix("qcow2_add_task ") {
                if !line.contains("pool (nil)") { pooledHere = true }
            }
        }
        guard markersSeen == requestCount + 1 else {
            throw ValidationError.badQemuLog(
                "\(fileName): error: found \(markersSeen) request markers, expected \(requestCount + 1) (QEMU stopped early or lost trace lines)"
            )
        }
        return log
    }

    /// The log as an `EventLog` (request marks carry `locations`; `multiSegment` is QEMU's own
    /// pool flag). Images are as labelled.
    public func eventLog(locations: [TraceLocation]) -> EventLog {
        let out = EventLog(retainEvents: true)
        for ev in openEvents { out.append(ev) }
        for i in requestStarts.indices {
            out.beginRequest(i, location: i < locations.count ? locations[i] : .file)
            if pooled[i] { out.markMultiSegment(write: false) }
            for ev in events(ofRequest: i) { out.append(ev) }
        }
        out.beginClose()
        for ev in closeEvents { out.append(ev) }
        return out
    }
}

import Foundation
import Qcow2Sim
import TraceKit

/// When the cache-clean timer (qcow2-model.md §3.7) fires during a trace, and how a replay makes
/// QEMU fire it between the same requests as the simulation.
///
/// The simulator ticks image k at trace times I_k, 2·I_k, … up to the last request's time. QEMU
/// 7.2 arms the timer on the virtual clock (`cache_clean_timer_init`, `QEMU_CLOCK_VIRTUAL`), which
/// never runs in qemu-io (§3.7, TV9), so only qemu-system can fire it. A trace of hours must not
/// take hours: time is compressed by scaling the timestamps and every interval by the same factor
/// `secondsPerUnit / unit`, where `unit` is the greatest common divisor of the intervals (QEMU's
/// interval is whole seconds, so every scaled interval stays whole). The VM is started paused
/// (`-S`: the virtual clock stands still while the drive opens, so every timer is armed at the
/// same virtual instant), continued once, and the requests are sent as fast as QMP takes them
/// but never across a unit boundary before its time: the requests of unit m (trace times in
/// [m·unit, (m+1)·unit)) are sent only once the virtual clock has passed m·secondsPerUnit plus a
/// lead, and must all be done before the next tick is due. A replay that cannot keep that pace
/// is detected and retried with a larger factor.
public struct CleanTimerPlan: Equatable, Sendable {
    /// Effective `cache-clean-interval` per image, base first (seconds; 0 = off; QEMU's default
    /// 600 where not given).
    public var intervals: [UInt64]
    /// The last request's trace time (seconds).
    public var traceEnd: Double
    /// Trace seconds per unit: the greatest common divisor of the non-zero intervals.
    public var unit: UInt64

    /// Seconds the replay waits after a unit boundary before sending that unit's requests (the
    /// ticks re-arm at callback time, so they drift late by the callback's latency).
    public static let lead = 0.25
    /// Seconds before the next tick by which a unit's last request must be done.
    public static let guardBand = 0.15
    /// The starting estimate of one request's cost over QMP (marker + command), in seconds: 1.4 ms
    /// was measured on the 2-core CI machine under load (CloudPhysics, 25 000 requests).
    public static let estimatedRequestSeconds = 0.0015

    /// The plan for `records` on a chain with `intervals` (base first), or nil when the
    /// simulation fires no tick (no timestamps, every interval 0, or a trace shorter than the
    /// shortest interval).
    public init?(intervals: [UInt64], records: [TraceRecord]) {
        let end = records.reduce(0.0) { max($0, $1.time ?? 0) }
        let active = intervals.filter { $0 > 0 }
        // A time past the trace time limit (possible from a library caller; the readers refuse
        // it) is refused by the simulation with its location; no plan here, so nothing traps
        // converting it to a unit index.
        guard end <= TraceRecord.maxTime else { return nil }
        guard let shortest = active.min(), end >= Double(shortest) else { return nil }
        self.intervals = intervals
        traceEnd = end
        unit = active.reduce(0) { Self.gcd($0, $1) }
    }

    /// The effective intervals of `config`'s chain of `imageCount` images, base first: each
    /// level's `cache-clean-interval` (`backing.` prefixes for lower images), QEMU's default
    /// where not given. Nil when the drive options name an image below the chain's base (the
    /// simulation reports that).
    public static func intervals(config: SimulationConfig, imageCount: Int) -> [UInt64]? {
        guard let top = try? config.driveOptions.images(depth: imageCount) else { return nil }
        return top.reversed().map { $0.cacheCleanInterval ?? CacheSizing.defaultCleanInterval }
    }

    /// Ticks the simulation fires over the trace, all images together.
    public var simulatedTicks: Int {
        intervals.filter { $0 > 0 }.reduce(0) { $0 + Int(traceEnd / Double($1)) }
    }

    /// The unit a request at trace time `t` belongs to (ticks at the unit's start run before it,
    /// as the simulator runs every tick due by a request's time before the request).
    public func unitIndex(_ t: Double?) -> Int {
        guard let t, t > 0 else { return 0 }
        return Int((t / Double(unit)).rounded(.down))
    }

    /// Whether some image ticks at the start of unit `u` (u ≥ 1).
    public func ticks(atUnit u: Int) -> Bool {
        intervals.contains { $0 > 0 && u % Int($0 / unit) == 0 }
    }

    /// Each ticking image's interval in units (image k ticks at the units that are multiples).
    private var unitsPerInterval: [Int] { intervals.filter { $0 > 0 }.map { Int($0 / unit) } }

    /// The first unit after `u` (≥ 0) at which some image ticks: the smallest next multiple.
    ///
    /// Computed, not searched: with intervals such as 4294967295 and 4294967294 s the unit is
    /// 1 s, and a unit-by-unit search would take billions of steps.
    public func nextTickUnit(after u: Int) -> Int {
        unitsPerInterval.map { (u / $0 + 1) * $0 }.min() ?? u + 1
    }

    /// The tick unit that starts the stretch holding unit `u`: the last unit ≤ u at which some
    /// image ticks (the largest multiple not above `u`), 0 before the first tick.
    ///
    /// - Complexity: O(images), for the reason given at `nextTickUnit(after:)`.
    public func stretch(ofUnit u: Int) -> Int {
        guard u > 0 else { return 0 }
        return unitsPerInterval.map { u / $0 * $0 }.max() ?? 0
    }

    /// The largest number of requests in one stretch between consecutive ticks.
    public func busiestStretch(_ records: [TraceRecord]) -> Int {
        var counts: [Int: Int] = [:]
        var lastUnit = -1
        var current = 0
        for r in records {
            let u = unitIndex(r.time)
            if u != lastUnit {
                current = stretch(ofUnit: u)
                lastUnit = u
            }
            counts[current, default: 0] += 1
        }
        return counts.values.max() ?? 0
    }

    /// Real seconds per unit for a replay that costs `requestSeconds` per request: enough for
    /// the busiest stretch plus the lead and the guard band, whole seconds, at least 1.
    public func secondsPerUnit(_ records: [TraceRecord], requestSeconds: Double = estimatedRequestSeconds) -> UInt64 {
        let needed = Double(busiestStretch(records)) * requestSeconds + Self.lead + Self.guardBand
        return max(1, UInt64(needed.rounded(.up)))
    }

    /// `driveOptions` with every image's `cache-clean-interval` set to its scaled value
    /// `interval / unit × secondsPerUnit` (0 stays 0); the image with `intervals[k]` is `k`
    /// images above the base (level `intervals.count - 1 - k` below the top).
    public func scaledDriveOptions(_ driveOptions: DriveOptions, secondsPerUnit: UInt64) -> DriveOptions {
        var scaled = driveOptions
        for (k, interval) in intervals.enumerated() {
            scaled[intervals.count - 1 - k].cacheCleanInterval = interval == 0 ? 0 : interval / unit * secondsPerUnit
        }
        return scaled
    }

    /// The note a report carries for a replay with this plan.
    public func note(secondsPerUnit: UInt64) -> String {
        let shown = intervals.map(String.init).joined(separator: "/")
        return "clean timer: the trace spans \(Self.seconds(traceEnd)) s with cache-clean-interval \(shown) s (base first), "
            + "so the simulation fires \(simulatedTicks) tick(s); qemu-system replayed it with timestamps and intervals scaled by "
            + "\(secondsPerUnit)/\(unit) (the VM's virtual clock started with the first request), so the ticks fall between "
            + "the same requests"
    }

    /// The warning given before a qemu-io replay of a trace on which the simulation ticks.
    /// From 10.2 qemu-io runs the timer too, but on the real-time clock from its own open, and
    /// the replay does not pace requests by their timestamps, so its ticks fall elsewhere.
    public func qemuIOWarning(version: QemuVersion = .v7_2) -> String {
        let shown = intervals.map(String.init).joined(separator: "/")
        let why =
            version.cleanTimerInTools
            ? "qemu-io \(version.rawValue) fires it on the real-time clock from its own open while validate sends it the "
                + "requests as fast as it takes them, so its ticks (if any) fall between other requests"
            : "qemu-io \(version.rawValue) never does (the timer runs on the virtual clock, which only a VM runs)"
        return "the trace spans \(Self.seconds(traceEnd)) s, longer than cache-clean-interval \(shown) s (base first; "
            + "QEMU's default is 600): the simulation fires the clean timer \(simulatedTicks) time(s), but \(why), "
            + "so results differ from the first tick on; "
            + "use --runner auto or qemu-system (the timer then fires at the same requests), or --drive "
            + "cache-clean-interval=0 (and backing.cache-clean-interval=0 for backing images) to turn it off on both sides"
    }

    static func seconds(_ t: Double) -> String { String(format: "%.0f", t) }

    static func gcd(_ a: UInt64, _ b: UInt64) -> UInt64 { b == 0 ? a : gcd(b, a % b) }
}

/// Thrown by the paced qemu-system replay when a stretch of requests did not finish before the
/// next scaled tick was due; the validator retries with a larger factor.
struct CleanTimerOverrun: Error {
    /// The request that finished too late.
    var request: Int
    /// The measured seconds per request so far.
    var requestSeconds: Double
}

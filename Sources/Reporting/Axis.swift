import Foundation

/// How an axis maps values to positions.
public enum AxisScale: Sendable, Equatable {
    /// Evenly spaced values, ticks at 1-2-5 steps (powers of two for bytes).
    case linear
    /// Powers of two evenly spaced: cache and cluster sizes.
    case log2
    /// Powers of ten evenly spaced: counts spanning decades.
    case log10
}

/// How tick labels and table cells spell a value.
public enum ValueFormat: Sendable, Equatable {
    /// Bytes with binary suffixes, the way QEMU options spell them: `512`, `4K`, `1.5M`, `32M`.
    case bytes
    /// Counts: plain below 10 000, then `12k`, `1.5M`.
    case count
    /// A fraction shown as a percentage: 0.25 → `25%`.
    case percent
    /// A plain decimal number (seconds, request numbers).
    case plain
}

/// One labelled tick.
public struct Tick: Equatable, Sendable {
    /// The value the tick stands at.
    public var value: Double
    /// Its label.
    public var label: String

    /// Creates a tick.
    public init(_ value: Double, _ label: String) {
        self.value = value
        self.label = label
    }
}

/// An axis: its label, scale, value format, and the range and ticks chosen for the data.
public struct Axis: Sendable {
    /// The axis title (with its unit).
    public var label: String
    /// The scale.
    public var scale: AxisScale
    /// How values are spelled.
    public var format: ValueFormat
    /// Linear axes start at 0 unless the data go below it (counts, bytes and rates do not).
    public var includeZero: Bool
    /// A fixed lower bound (otherwise chosen from the data).
    public var minimum: Double?
    /// A fixed upper bound (otherwise chosen from the data).
    public var maximum: Double?

    /// Creates an axis.
    public init(
        _ label: String, scale: AxisScale = .linear, format: ValueFormat = .plain, includeZero: Bool = true,
        minimum: Double? = nil, maximum: Double? = nil
    ) {
        self.label = label
        self.scale = scale
        self.format = format
        self.includeZero = includeZero
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Whether `v` can be drawn on this axis (log axes have no place for 0 or negatives).
    public func accepts(_ v: Double) -> Bool { v.isFinite && (scale == .linear || v > 0) }

    /// The domain and ticks for data spanning `lo...hi`: the domain is widened to whole ticks
    /// so both ends carry a label.
    public func layout(dataMin lo: Double, dataMax hi: Double, maxTicks: Int = 8) -> AxisLayout {
        var lo = minimum ?? lo
        var hi = maximum ?? hi
        if !lo.isFinite || !hi.isFinite || lo > hi { (lo, hi) = scale == .linear ? (0, 1) : (1, 2) }
        switch scale {
        case .linear:
            if includeZero && lo > 0 { lo = 0 }
            if includeZero && hi < 0 { hi = 0 }
            return Ticks.linear(lo, hi, maxTicks: maxTicks, format: format, fixedMin: minimum, fixedMax: maximum)
        case .log2:
            return Ticks.log(lo, hi, base: 2, maxTicks: maxTicks, format: format)
        case .log10:
            return Ticks.log(lo, hi, base: 10, maxTicks: maxTicks, format: format)
        }
    }
}

/// An axis laid out for one chart: the drawn domain and its ticks.
public struct AxisLayout: Sendable, Equatable {
    /// Lowest value drawn.
    public var lower: Double
    /// Highest value drawn.
    public var upper: Double
    /// The scale.
    public var scale: AxisScale
    /// Labelled ticks, ascending.
    public var ticks: [Tick]

    /// Position of `v` along the axis, 0 at `lower` and 1 at `upper`.
    public func fraction(_ v: Double) -> Double {
        switch scale {
        case .linear:
            return upper == lower ? 0 : (v - lower) / (upper - lower)
        case .log2, .log10:
            guard v > 0, lower > 0, upper > lower else { return 0 }
            return (Foundation.log(v) - Foundation.log(lower)) / (Foundation.log(upper) - Foundation.log(lower))
        }
    }
}

/// Tick choice.
public enum Ticks {
    /// Linear ticks at a "nice" step (1, 2, 2.5 or 5 × 10ⁿ; a power of two for bytes) so that at
    /// most `maxTicks` ticks cover `lo...hi`. A fixed end stays where it is given.
    public static func linear(
        _ lo: Double, _ hi: Double, maxTicks: Int, format: ValueFormat, fixedMin: Double? = nil, fixedMax: Double? = nil
    ) -> AxisLayout {
        var lo = lo, hi = hi
        if hi == lo { hi = lo == 0 ? 1 : lo + abs(lo) }
        let n = Double(max(2, maxTicks) - 1)
        let raw = (hi - lo) / n
        let step = format == .bytes ? powerOfTwoStep(raw) : niceStep(raw)
        lo = fixedMin ?? (lo / step).rounded(.down) * step
        hi = fixedMax ?? (hi / step).rounded(.up) * step
        var ticks: [Tick] = []
        var k = (lo / step).rounded(.up)
        while k * step <= hi + step * 1e-9 {
            let v = k * step
            // -0 would print as "-0".
            let value = v == 0 ? 0 : v
            ticks.append(Tick(value, Format.value(value, format)))
            k += 1
        }
        return AxisLayout(lower: lo, upper: hi, scale: .linear, ticks: ticks)
    }

    /// Log ticks at powers of `base`; when there are more than `maxTicks`, every 2nd, 5th, 10th …
    /// power of two, or every k-th power of ten (aligned to multiples of the stride so the labels
    /// stay round). The domain is widened to whole strides. A range inside one decade (base 10)
    /// also gets 2 and 5.
    public static func log(_ lo: Double, _ hi: Double, base: Double, maxTicks: Int, format: ValueFormat) -> AxisLayout {
        let lo = lo > 0 ? lo : (hi > 0 ? hi : 1)
        let hi = max(hi, lo)
        let b = Foundation.log(base)
        // The 1e-9 keeps exact powers (whose logarithm rounds a hair off) on their own exponent.
        var e0 = Int((Foundation.log(lo) / b + 1e-9).rounded(.down))
        var e1 = Int((Foundation.log(hi) / b - 1e-9).rounded(.up))
        if e1 <= e0 { e1 = e0 + 1 }
        // Powers of two step by 1, 2, 5, 10, … exponents, so labels land on K/M/G boundaries
        // (1K, 32K, 1M, 32M, 1G); powers of ten by any whole number of decades.
        let strides = base == 2 ? [1, 2, 5, 10, 20, 30, 40, 50, 60] : Array(1...64)
        var stride = strides[strides.count - 1]
        for s in strides {
            let a = floorDiv(e0, s) * s, z = -floorDiv(-e1, s) * s
            if (z - a) / s + 1 <= max(2, maxTicks) {
                stride = s
                break
            }
        }
        e0 = floorDiv(e0, stride) * stride
        e1 = -floorDiv(-e1, stride) * stride
        var ticks: [Tick] = []
        for e in Swift.stride(from: e0, through: e1, by: stride) {
            let v = Foundation.pow(base, Double(e))
            ticks.append(Tick(v, Format.value(v, format)))
        }
        if base == 10 && e1 - e0 == 1 {
            // One decade: 1, 2, 5, 10 reads better than two lonely ticks.
            let v0 = Foundation.pow(10, Double(e0))
            ticks.insert(contentsOf: [2 * v0, 5 * v0].map { Tick($0, Format.value($0, format)) }, at: 1)
        }
        return AxisLayout(
            lower: Foundation.pow(base, Double(e0)), upper: Foundation.pow(base, Double(e1)), scale: base == 2 ? .log2 : .log10,
            ticks: ticks)
    }

    /// The smallest of 1, 2, 2.5, 5 × 10ⁿ that is at least `raw`.
    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let p = Foundation.pow(10, (Foundation.log10(raw)).rounded(.down))
        for m in [1, 2, 2.5, 5, 10] where m * p >= raw * (1 - 1e-12) { return m * p }
        return 10 * p
    }

    /// The smallest power of two that is at least `raw` (at least 1: bytes are whole).
    static func powerOfTwoStep(_ raw: Double) -> Double {
        guard raw > 1, raw.isFinite else { return 1 }
        return Foundation.pow(2, Foundation.log2(raw).rounded(.up))
    }

    private static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
}

/// Value spelling shared by tick labels and tables.
public enum Format {
    /// `v` in `format`.
    public static func value(_ v: Double, _ format: ValueFormat) -> String {
        switch format {
        case .bytes: return bytes(v)
        case .count: return count(v)
        case .percent: return trimmed(v * 100, decimals: 2) + "%"
        case .plain: return trimmed(v, decimals: 3)
        }
    }

    /// `0`, `512`, `4K`, `1.5M`, `32M`, `2G` (binary units, up to two decimals).
    public static func bytes(_ v: Double) -> String {
        let units = ["", "K", "M", "G", "T", "P"]
        var x = abs(v), u = 0
        while x >= 1024 && u < units.count - 1 {
            x /= 1024
            u += 1
        }
        return (v < 0 ? "-" : "") + trimmed(x, decimals: 2) + units[u]
    }

    /// `950`, `7200`, `12k`, `1.5M`.
    public static func count(_ v: Double) -> String {
        let x = abs(v)
        let sign = v < 0 ? "-" : ""
        if x < 10_000 { return sign + trimmed(x, decimals: 3) }
        for (d, s) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] where x >= d {
            return sign + trimmed(x / d, decimals: 2) + s
        }
        return sign + trimmed(x, decimals: 0)
    }

    /// `v` with at most `decimals` decimals and no trailing zeros.
    public static func trimmed(_ v: Double, decimals: Int) -> String {
        var s = String(format: "%.\(decimals)f", v)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s == "-0" ? "0" : s
    }
}

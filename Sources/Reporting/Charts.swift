import Foundation

/// Escaping for text and attribute values in SVG and HTML.
public enum Markup {
    /// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references (valid in both
    /// element content and quoted attributes), and control characters other than tab and
    /// newline dropped (XML forbids them).
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n": out.unicodeScalars.append(c)
            default:
                if c.value < 0x20 || (0xFFFE...0xFFFF).contains(c.value) { continue }
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// A line's look: colour and dash, picked from a fixed palette so that lines also differ in
/// print and for colour-blind readers.
public struct SeriesStyle: Sendable, Equatable {
    /// CSS colour.
    public var color: String
    /// `stroke-dasharray`, empty for a solid line.
    public var dash: String

    /// The `i`-th style of the palette (colours cycle, dashes change with each cycle).
    public static func palette(_ i: Int) -> SeriesStyle {
        // Okabe & Ito's colour-blind-safe palette.
        let colors = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
        let dashes = ["", "6 3", "2 2", "8 3 2 3"]
        return SeriesStyle(color: colors[i % colors.count], dash: dashes[(i / colors.count) % dashes.count])
    }
}

/// One line of a line chart.
public struct Series: Sendable {
    /// Legend text.
    public var name: String
    /// (x, y) points, drawn in order of x (ties keep their order); a point whose y is NaN
    /// breaks the line there.
    public var points: [(x: Double, y: Double)]
    /// Dots at the points (for short series; long ones are lines only).
    public var showPoints: Bool

    /// Creates a series.
    public init(_ name: String, _ points: [(x: Double, y: Double)], showPoints: Bool = false) {
        self.name = name
        self.points = points
        self.showPoints = showPoints
    }
}

/// A labelled vertical line at one x value ("full coverage", "QEMU default").
public struct Marker: Sendable {
    /// Where it stands.
    public var x: Double
    /// Its label (empty: an unlabelled line, for many markers of one kind).
    public var label: String

    /// Creates a marker.
    public init(x: Double, label: String) {
        self.x = x
        self.label = label
    }
}

/// Plot geometry shared by the charts.
struct Frame {
    var width = 720.0
    var height = 300.0
    var left = 72.0
    var right = 24.0
    var top = 40.0
    var bottom = 56.0
    var plotWidth: Double { width - left - right }
    var plotHeight: Double { height - top - bottom }
}

/// Numbers in SVG coordinates: at most one decimal, no exponent.
func coordinate(_ v: Double) -> String { Format.trimmed(v, decimals: 1) }

/// A line chart with its axes, legend and markers, as one `<svg>` element.
public struct LineChart: Sendable {
    /// Shown above the plot.
    public var title: String
    /// The horizontal axis.
    public var x: Axis
    /// The vertical axis.
    public var y: Axis
    /// The lines.
    public var series: [Series]
    /// Vertical markers.
    public var markers: [Marker] = []
    /// Draw the lines as steps (the value holds until the next point), as resident memory does.
    public var steps = false

    /// Creates a chart.
    public init(title: String, x: Axis, y: Axis, series: [Series], markers: [Marker] = [], steps: Bool = false) {
        self.title = title
        self.x = x
        self.y = y
        self.series = series
        self.markers = markers
        self.steps = steps
    }

    /// The chart as SVG. `standalone` adds the namespace a separate `.svg` file needs; inline
    /// SVG in HTML takes it from the parser.
    public func svg(standalone: Bool = false) -> String {
        var f = Frame()
        let legendRows = (series.count + 2) / 3
        f.height += Double(legendRows) * 18
        let pts = series.map { s in
            s.points.enumerated().filter { x.accepts($0.element.x) && (y.accepts($0.element.y) || $0.element.y.isNaN) }
                .sorted { ($0.element.x, $0.offset) < ($1.element.x, $1.offset) }.map(\.element)
        }
        let xs = pts.flatMap { $0.map(\.x) } + markers.map(\.x).filter { x.accepts($0) }
        let ys = pts.flatMap { $0.map(\.y) }.filter { !$0.isNaN }
        let xl = x.layout(dataMin: xs.min() ?? 0, dataMax: xs.max() ?? 1)
        let yl = y.layout(dataMin: ys.min() ?? 0, dataMax: ys.max() ?? 1, maxTicks: 6)
        let px = { (v: Double) in f.left + xl.fraction(v) * f.plotWidth }
        let py = { (v: Double) in f.top + (1 - yl.fraction(v)) * f.plotHeight }
        var s = SVG.open(title: title, frame: f, standalone: standalone)
        s += SVG.axes(f, x: x, xl: xl, y: y, yl: yl, px: px, py: py)
        s += "<g class=\"markers\">"
        let shown = markers.filter { x.accepts($0.x) && $0.x >= xl.lower && $0.x <= xl.upper }
        for m in shown {
            let mx = coordinate(px(m.x))
            s += "<path class=\"marker\" d=\"M\(mx) \(coordinate(f.top)) V\(coordinate(f.top + f.plotHeight))\"/>"
        }
        // Labels stagger over four rows so neighbouring markers do not overprint.
        for (k, m) in shown.filter({ !$0.label.isEmpty }).enumerated() {
            let anchor = px(m.x) > f.left + f.plotWidth * 0.7 ? "end" : "start"
            let dx = anchor == "end" ? -4.0 : 4.0
            s +=
                "<text class=\"marker-label\" x=\"\(coordinate(px(m.x) + dx))\" y=\"\(coordinate(f.top + 12 + Double(k % 4) * 13))\" text-anchor=\"\(anchor)\">\(Markup.escape(m.label))</text>"
        }
        s += "</g><g class=\"lines\">"
        for (i, p) in pts.enumerated() where !p.isEmpty {
            let st = SeriesStyle.palette(i)
            var d = ""
            // One subpath per run of points between NaN breaks.
            var run: [(Double, Double)] = []
            func flushRun() {
                let screen = Downsample.columns(run)
                for (k, q) in screen.enumerated() {
                    if k == 0 {
                        d += (d.isEmpty ? "" : " ") + "M\(coordinate(q.0)) \(coordinate(q.1))"
                    } else if steps {
                        d += " H\(coordinate(q.0)) V\(coordinate(q.1))"
                    } else {
                        d += " L\(coordinate(q.0)) \(coordinate(q.1))"
                    }
                }
                if screen.count == 1 { d += " h0.1" }  // a lone point still draws (round caps)
                run = []
            }
            for q in p {
                if q.y.isNaN { flushRun() } else { run.append((px(q.x), py(q.y))) }
            }
            flushRun()
            if d.isEmpty { continue }
            let dash = st.dash.isEmpty ? "" : " stroke-dasharray=\"\(st.dash)\""
            s += "<path class=\"series\" d=\"\(d)\" stroke=\"\(st.color)\"\(dash)><title>\(Markup.escape(series[i].name))</title></path>"
            if series[i].showPoints && p.count <= 60 {
                for q in p where !q.y.isNaN { s += "<circle cx=\"\(coordinate(px(q.x)))\" cy=\"\(coordinate(py(q.y)))\" r=\"2.5\" fill=\"\(st.color)\"/>" }
            }
        }
        s += "</g>"
        s += SVG.legend(series.map(\.name), frame: f, line: true)
        return s + "</svg>"
    }
}

/// A grouped bar chart: one group per category, one bar per series in each group.
public struct BarChart: Sendable {
    /// Shown above the plot.
    public var title: String
    /// The group labels along the x axis, in the order given.
    public var categories: [String]
    /// The bars: a name (the legend) and one value per category.
    public var series: [(name: String, values: [Double])]
    /// The value axis.
    public var y: Axis

    /// Creates a chart.
    public init(title: String, categories: [String], series: [(name: String, values: [Double])], y: Axis) {
        self.title = title
        self.categories = categories
        self.series = series
        self.y = y
    }

    /// The chart as SVG (see ``LineChart/svg(standalone:)``).
    public func svg(standalone: Bool = false) -> String {
        var f = Frame()
        f.height += Double((series.count + 2) / 3) * 18
        let values = series.flatMap(\.values).filter { y.accepts($0) }
        let yl = y.layout(dataMin: values.min() ?? 0, dataMax: values.max() ?? 1, maxTicks: 6)
        let py = { (v: Double) in f.top + (1 - yl.fraction(v)) * f.plotHeight }
        let n = max(1, categories.count)
        let groupWidth = f.plotWidth / Double(n)
        let barWidth = groupWidth * 0.8 / Double(max(1, series.count))
        var s = SVG.open(title: title, frame: f, standalone: standalone)
        let xAxis = Axis("")
        let xl = AxisLayout(lower: 0, upper: 1, scale: .linear, ticks: [])
        s += SVG.axes(f, x: xAxis, xl: xl, y: y, yl: yl, px: { f.left + $0 * f.plotWidth }, py: py)
        s += "<g class=\"categories\">"
        for (i, c) in categories.enumerated() {
            let cx = f.left + (Double(i) + 0.5) * groupWidth
            s +=
                "<text class=\"tick-label\" x=\"\(coordinate(cx))\" y=\"\(coordinate(f.top + f.plotHeight + 16))\" text-anchor=\"middle\">\(Markup.escape(c))</text>"
        }
        s += "</g><g class=\"bars\">"
        let base = py(yl.lower)
        for (j, b) in series.enumerated() {
            let st = SeriesStyle.palette(j)
            for (i, v) in b.values.enumerated() where i < categories.count {
                let x0 = f.left + Double(i) * groupWidth + groupWidth * 0.1 + Double(j) * barWidth
                let top = y.accepts(v) ? min(base, py(max(v, yl.lower))) : base
                s +=
                    "<path class=\"bar\" d=\"M\(coordinate(x0)) \(coordinate(base)) V\(coordinate(top)) H\(coordinate(x0 + barWidth - 1)) V\(coordinate(base)) Z\" fill=\"\(st.color)\"><title>\(Markup.escape("\(b.name), \(categories[i]): \(Format.value(v, y.format))"))</title></path>"
                s +=
                    "<text class=\"bar-label\" x=\"\(coordinate(x0 + barWidth / 2))\" y=\"\(coordinate(top - 3))\" text-anchor=\"middle\">\(Markup.escape(Format.value(v, y.format)))</text>"
            }
        }
        s += "</g>"
        s += SVG.legend(series.map(\.name), frame: f, line: false)
        return s + "</svg>"
    }
}

/// SVG pieces shared by the charts.
enum SVG {
    static func open(title: String, frame f: Frame, standalone: Bool) -> String {
        let ns = standalone ? " xmlns=\"http://www.w3.org/2000/svg\"" : ""
        return
            "<svg\(ns) class=\"chart\" viewBox=\"0 0 \(coordinate(f.width)) \(coordinate(f.height))\" width=\"\(coordinate(f.width))\" height=\"\(coordinate(f.height))\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">"
            + "<title>\(Markup.escape(title))</title>"
            + "<rect class=\"background\" x=\"0\" y=\"0\" width=\"\(coordinate(f.width))\" height=\"\(coordinate(f.height))\" fill=\"#ffffff\"/>"
            + "<text class=\"chart-title\" x=\"\(coordinate(f.left))\" y=\"20\" font-size=\"14\" font-weight=\"bold\">\(Markup.escape(title))</text>"
    }

    static func axes(
        _ f: Frame, x: Axis, xl: AxisLayout, y: Axis, yl: AxisLayout, px: (Double) -> Double, py: (Double) -> Double
    ) -> String {
        let bottom = f.top + f.plotHeight
        var s = "<g class=\"axes\" fill=\"#333333\">"
        // Grid lines first, so the data draw over them.
        var grid = ""
        for t in yl.ticks { grid += "M\(coordinate(f.left)) \(coordinate(py(t.value))) H\(coordinate(f.left + f.plotWidth)) " }
        for t in xl.ticks { grid += "M\(coordinate(px(t.value))) \(coordinate(f.top)) V\(coordinate(bottom)) " }
        if !grid.isEmpty { s += "<path class=\"grid\" d=\"\(grid.trimmingCharacters(in: .whitespaces))\"/>" }
        s +=
            "<path class=\"axis\" d=\"M\(coordinate(f.left)) \(coordinate(f.top)) V\(coordinate(bottom)) H\(coordinate(f.left + f.plotWidth))\"/>"
        for t in yl.ticks {
            s +=
                "<text class=\"tick-label\" x=\"\(coordinate(f.left - 6))\" y=\"\(coordinate(py(t.value) + 4))\" text-anchor=\"end\">\(Markup.escape(t.label))</text>"
        }
        for t in xl.ticks {
            s +=
                "<text class=\"tick-label\" x=\"\(coordinate(px(t.value)))\" y=\"\(coordinate(bottom + 16))\" text-anchor=\"middle\">\(Markup.escape(t.label))</text>"
        }
        if !x.label.isEmpty {
            s +=
                "<text class=\"axis-label\" x=\"\(coordinate(f.left + f.plotWidth / 2))\" y=\"\(coordinate(bottom + 36))\" text-anchor=\"middle\">\(Markup.escape(x.label))</text>"
        }
        if !y.label.isEmpty {
            let cy = f.top + f.plotHeight / 2
            s +=
                "<text class=\"axis-label\" x=\"16\" y=\"\(coordinate(cy))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(coordinate(cy)))\">\(Markup.escape(y.label))</text>"
        }
        return s + "</g>"
    }

    /// Three entries a row, under the x-axis label.
    static func legend(_ names: [String], frame f: Frame, line: Bool) -> String {
        guard !names.isEmpty else { return "" }
        var s = "<g class=\"legend\">"
        let y0 = f.top + f.plotHeight + 54
        let colWidth = f.plotWidth / 3
        for (i, name) in names.enumerated() {
            let st = SeriesStyle.palette(i)
            let x = f.left + Double(i % 3) * colWidth
            let y = y0 + Double(i / 3) * 18
            if line {
                let dash = st.dash.isEmpty ? "" : " stroke-dasharray=\"\(st.dash)\""
                s +=
                    "<path class=\"legend-line\" d=\"M\(coordinate(x)) \(coordinate(y - 4)) h24\" stroke=\"\(st.color)\" stroke-width=\"2.5\"\(dash)/>"
            } else {
                s +=
                    "<path class=\"legend-swatch\" d=\"M\(coordinate(x + 6)) \(coordinate(y - 10)) h12 v12 h-12 Z\" fill=\"\(st.color)\"/>"
            }
            s += "<text x=\"\(coordinate(x + 30))\" y=\"\(coordinate(y))\">\(Markup.escape(name))</text>"
        }
        return s + "</g>"
    }
}

/// Thinning of long series to what the screen can show.
enum Downsample {
    /// Screen points grouped by pixel column: each column keeps its first, lowest, highest and
    /// last point in their order, so peaks and drops (a clean-timer release) stay visible while a
    /// million-point series becomes a few thousand path commands.
    static func columns(_ p: [(Double, Double)]) -> [(Double, Double)] {
        guard p.count > 2000 else { return p }
        var out: [(Double, Double)] = []
        var i = 0
        while i < p.count {
            let col = p[i].0.rounded(.down)
            var j = i
            var lo = i, hi = i
            while j < p.count && p[j].0.rounded(.down) == col {
                if p[j].1 < p[lo].1 { lo = j }
                if p[j].1 > p[hi].1 { hi = j }
                j += 1
            }
            for k in Set([i, lo, hi, j - 1]).sorted() { out.append(p[k]) }
            i = j
        }
        return out
    }
}

import Foundation

/// A table of numbers (the data under a chart, or a summary).
public struct Table: Sendable {
    /// Shown above the table.
    public var caption: String
    /// Column headings.
    public var header: [String]
    /// Cells, row by row (already formatted).
    public var rows: [[String]]
    /// Columns to right-align (numbers).
    public var numeric: Set<Int>

    /// Creates a table; by default every column but the first is numeric.
    public init(caption: String, header: [String], rows: [[String]], numeric: Set<Int>? = nil) {
        self.caption = caption
        self.header = header
        self.rows = rows
        self.numeric = numeric ?? Set(1..<max(1, header.count))
    }

    /// The `<table>` element.
    public var html: String {
        var s = "<table>"
        if !caption.isEmpty { s += "<caption>\(Markup.escape(caption))</caption>" }
        s += "<thead><tr>"
        for (i, h) in header.enumerated() { s += "<th\(numeric.contains(i) ? " class=\"num\"" : "") scope=\"col\">\(Markup.escape(h))</th>" }
        s += "</tr></thead><tbody>"
        for r in rows {
            s += "<tr>"
            for (i, c) in r.enumerated() { s += "<td\(numeric.contains(i) ? " class=\"num\"" : "")>\(Markup.escape(c))</td>" }
            s += "</tr>"
        }
        return s + "</tbody></table>"
    }
}

/// One self-contained HTML file: inline SVG and CSS, no scripts, no fonts, images or links to
/// anything outside it, so it reads the same offline and with JavaScript off. The markup is
/// also well-formed XML (void elements are self-closed), which the tests check with a parser.
public struct HTMLPage: Sendable {
    /// A piece of the page, in order.
    public enum Block: Sendable {
        /// A section heading (level 2).
        case heading(String)
        /// A paragraph of plain text.
        case paragraph(String)
        /// Label–value pairs (the run's configuration).
        case facts([(String, String)])
        /// A chart (its `<svg>`), a caption, and the table of its numbers under it.
        case figure(svg: String, caption: String, table: Table?)
        /// A table on its own.
        case table(Table)
        /// Monospaced text (a command line).
        case code(String)
    }

    /// The `<title>` and top heading.
    public var title: String
    /// The content.
    public var blocks: [Block]

    /// Creates a page.
    public init(title: String, blocks: [Block] = []) {
        self.title = title
        self.blocks = blocks
    }

    /// The styles, inline. System fonts only: nothing is fetched.
    static let css = """
        body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222;background:#fff;line-height:1.45}
        h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
        figure{margin:1.5em 0}figcaption{font-size:.92em;color:#444;margin:.3em 0 .6em}
        svg.chart{max-width:100%;height:auto;border:1px solid #ddd}
        svg .grid{stroke:#e4e4e4;stroke-width:1;fill:none}svg .axis{stroke:#333;stroke-width:1;fill:none}
        svg .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
        svg .marker{stroke:#777;stroke-width:1.2;stroke-dasharray:4 3;fill:none}svg .marker-label{fill:#555;font-size:11px}
        svg .bar-label{font-size:10px;fill:#333}
        table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}caption{text-align:left;font-weight:bold;padding:.3em 0}
        th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
        dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{font-weight:bold}dd{margin:0}
        pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
        """

    /// The whole document.
    public func render() -> String {
        var s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
        s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>"
        s += "<title>\(Markup.escape(title))</title><style>\n\(Self.css)\n</style></head><body>\n"
        s += "<h1>\(Markup.escape(title))</h1>\n"
        for b in blocks {
            switch b {
            case .heading(let t): s += "<h2>\(Markup.escape(t))</h2>\n"
            case .paragraph(let t): s += "<p>\(Markup.escape(t))</p>\n"
            case .facts(let pairs):
                s += "<dl>"
                for (k, v) in pairs { s += "<dt>\(Markup.escape(k))</dt><dd>\(Markup.escape(v))</dd>" }
                s += "</dl>\n"
            case .figure(let svg, let caption, let table):
                s += "<figure>\(svg)<figcaption>\(Markup.escape(caption))</figcaption></figure>\n"
                if let table { s += table.html + "\n" }
            case .table(let t): s += t.html + "\n"
            case .code(let t): s += "<pre>\(Markup.escape(t))</pre>\n"
            }
        }
        return s + "</body></html>\n"
    }
}

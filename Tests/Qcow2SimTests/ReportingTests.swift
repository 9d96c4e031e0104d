import Foundation
import Qcow2Sim
import Reporting
import Testing
import TraceKit

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Parses `text` as XML; returns the parse error (nil when well formed), the elements by name
/// with their attributes, and all character data.
final class XMLProbe: NSObject, XMLParserDelegate {
    var elements: [(name: String, attributes: [String: String])] = []
    var text = ""
    var error: String?

    static func parse(_ text: String) -> XMLProbe {
        let probe = XMLProbe()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = probe
        if !parser.parse() { probe.error = parser.parserError.map { "\($0)" } ?? "parse failed at line \(parser.lineNumber)" }
        return probe
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName qName: String?,
        attributes attributeDict: [String: String] = [:]
    ) {
        elements.append((elementName, attributeDict))
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = "\(parseError)" }

    func all(_ name: String) -> [[String: String]] { elements.filter { $0.name == name }.map(\.attributes) }
}

/// The chart and page code of `Reporting`: tick choice on hand-worked ranges, value spelling,
/// escaping, and well-formed, self-contained output.
@Suite struct ReportingTests {
    static let K = 1024.0, M = 1024.0 * 1024, G = 1024.0 * 1024 * 1024

    @Test func byteLabelsAreQemuSpellings() {
        let cases: [(Double, String)] = [
            (0, "0"), (512, "512"), (1024, "1K"), (1536, "1.5K"), (4096, "4K"), (65536, "64K"), (1_310_720, "1.25M"),
            (2_621_440, "2.5M"), (33_554_432, "32M"), (20 * Self.G, "20G"),
        ]
        for (v, s) in cases { #expect(Format.bytes(v) == s, "\(v)") }
    }

    @Test func countAndPercentLabels() {
        #expect(Format.count(950) == "950")
        #expect(Format.count(7200) == "7200")
        #expect(Format.count(20000) == "20k")
        #expect(Format.count(1_500_000) == "1.5M")
        #expect(Format.value(0.25, .percent) == "25%")
        #expect(Format.value(0.98765, .percent) == "98.77%")
    }

    /// 256K…32M (a cache-size sweep): eight powers of two, every one labelled.
    @Test func log2TicksOverACacheSweep() {
        let l = Axis("", scale: .log2, format: .bytes).layout(dataMin: 256 * Self.K, dataMax: 32 * Self.M)
        #expect(l.ticks.map(\.label) == ["256K", "512K", "1M", "2M", "4M", "8M", "16M", "32M"])
        #expect(l.lower == 256 * Self.K && l.upper == 32 * Self.M)
    }

    /// 4K…1G is 2^12…2^30: 19 powers; strides 1 and 2 give 19 and 10 ticks (> 8), stride 5
    /// gives 2^10…2^30 in 5 ticks.
    @Test func log2TicksThinToRoundExponents() {
        let l = Axis("", scale: .log2, format: .bytes).layout(dataMin: 4 * Self.K, dataMax: Self.G)
        #expect(l.ticks.map(\.label) == ["1K", "32K", "1M", "32M", "1G"])
        #expect(l.lower == Self.K && l.upper == Self.G)
    }

    /// 300K…3M: widened to the powers around it, 256K…4M.
    @Test func log2DomainWidensToPowers() {
        let l = Axis("", scale: .log2, format: .bytes).layout(dataMin: 300 * Self.K, dataMax: 3 * Self.M)
        #expect(l.ticks.map(\.label) == ["256K", "512K", "1M", "2M", "4M"])
        #expect(l.ticks.map(\.value) == l.ticks.map(\.value).sorted())
    }

    @Test func log10Ticks() {
        let l = Axis("", scale: .log10, format: .count).layout(dataMin: 37, dataMax: 12_345)
        #expect(l.ticks.map(\.label) == ["10", "100", "1000", "10k", "100k"])
        // Inside one decade: 1, 2, 5, 10 × 100.
        let one = Axis("", scale: .log10, format: .count).layout(dataMin: 300, dataMax: 900)
        #expect(one.ticks.map(\.value) == [100, 200, 500, 1000])
    }

    @Test func linearTicks() {
        let pct = Axis("", format: .percent, minimum: 0, maximum: 1).layout(dataMin: 0.3, dataMax: 0.9, maxTicks: 6)
        #expect(pct.ticks.map(\.label) == ["0%", "20%", "40%", "60%", "80%", "100%"])
        // Bytes step by powers of two: 3.2M / 5 = 640K → 1M.
        let mem = Axis("", format: .bytes).layout(dataMin: 0, dataMax: 3.2 * Self.M, maxTicks: 6)
        #expect(mem.ticks.map(\.label) == ["0", "1M", "2M", "3M", "4M"])
        let mem1 = Axis("", format: .bytes).layout(dataMin: 10, dataMax: Self.M, maxTicks: 6)
        #expect(mem1.ticks.map(\.label) == ["0", "256K", "512K", "768K", "1M"])
        // Counts step 1-2-5: 950 / 5 = 190 → 200.
        let n = Axis("", format: .count).layout(dataMin: 0, dataMax: 950, maxTicks: 6)
        #expect(n.ticks.map(\.label) == ["0", "200", "400", "600", "800", "1000"])
        // 7200 s / 7 = 1029 → 2000.
        let t = Axis("", format: .plain).layout(dataMin: 0, dataMax: 7200, maxTicks: 8)
        #expect(t.ticks.map(\.label) == ["0", "2000", "4000", "6000", "8000"])
    }

    @Test func escaping() {
        #expect(Markup.escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;")
        #expect(Markup.escape("x\u{1}y\u{7}z\tq") == "xyz\tq")
    }

    static let nasty = "misses <&> \"quoted\" 'single' ]]> é"

    static func chart() -> LineChart {
        LineChart(
            title: "Misses " + nasty, x: Axis("l2-cache-size", scale: .log2, format: .bytes),
            y: Axis("misses", scale: .log10, format: .count),
            series: [
                Series(nasty, [(x: 4 * M, y: 120), (x: 256 * K, y: 9000), (x: M, y: 2000), (x: 0, y: 5)], showPoints: true),
                Series("lru", [(x: 256 * K, y: 9100), (x: 4 * M, y: 0), (x: 32 * M, y: 40)]),
            ],
            markers: [Marker(x: M, label: "full coverage"), Marker(x: 32 * M, label: "QEMU default <cap>")])
    }

    @Test func lineChartIsWellFormedAndEscaped() throws {
        let svg = Self.chart().svg(standalone: true)
        let p = XMLProbe.parse(svg)
        #expect(p.error == nil, "\(p.error ?? "")")
        #expect(p.text.contains(Self.nasty))
        let series = p.all("path").filter { $0["class"] == "series" }
        #expect(series.count == 2)
        for s in series { #expect(s["d"]?.hasPrefix("M") == true) }
        // Points a log axis cannot show (x = 0, y = 0) are left out: 3 points, then 2.
        #expect(series[0]["d"]?.split(separator: "L").count == 3)
        #expect(series[1]["d"]?.split(separator: "L").count == 2)
        // Drawn in order of x: the first point is the 256K one, at the left edge of the plot.
        #expect(series[0]["d"]?.hasPrefix("M72 ") == true)
        // The x tick labels, left to right, in numeric order.
        let order = ["256K", "512K", "1M", "2M", "4M", "8M", "16M", "32M"].compactMap { svg.range(of: ">\($0)</text>")?.lowerBound }
        #expect(order.count == 8 && order == order.sorted())
    }

    /// Full coverage at 1M on the 256K…32M axis: 2 of 7 octaves into the 624-pixel plot that
    /// starts at x = 72, i.e. 72 + 624 × 2/7 = 250.3.
    @Test func markerStandsAtItsValue() {
        let svg = Self.chart().svg()
        #expect(svg.contains("<path class=\"marker\" d=\"M250.3 "))
        #expect(svg.contains(">full coverage</text>"))
        #expect(svg.contains(">QEMU default &lt;cap&gt;</text>"))
    }

    @Test func barChartIsWellFormed() {
        let svg = BarChart(
            title: "per image", categories: ["image 1 (top)", "image 0 <base>"],
            series: [("L2 misses", [15260, 16]), ("refcount misses", [1, 0])], y: Axis("count", format: .count)
        ).svg(standalone: true)
        let p = XMLProbe.parse(svg)
        #expect(p.error == nil, "\(p.error ?? "")")
        let bars = p.all("path").filter { $0["class"] == "bar" }
        #expect(bars.count == 4)
        #expect(bars.allSatisfy { ($0["d"] ?? "").hasPrefix("M") && ($0["d"] ?? "").hasSuffix("Z") })
        #expect(p.text.contains("image 0 <base>"))
    }

    /// A million-point series becomes at most four points per pixel column.
    @Test func longSeriesAreThinnedPerColumn() {
        let pts = (0..<1_000_000).map { (x: Double($0), y: Double($0 % 977)) }
        let svg = LineChart(title: "t", x: Axis("x"), y: Axis("y"), series: [Series("s", pts)]).svg()
        let d = svg.components(separatedBy: "class=\"series\" d=\"")[1].prefix { $0 != "\"" }
        let commands = d.split(separator: "L").count
        #expect(commands <= 4 * 626)
        #expect(commands > 624)
    }

    @Test func lineBreaksAtNaN() {
        let svg = LineChart(
            title: "t", x: Axis("x"), y: Axis("y"),
            series: [Series("s", [(x: 0, y: 1), (x: 1, y: 1), (x: 1, y: .nan), (x: 5, y: 2), (x: 6, y: 2)])]
        ).svg()
        let d = svg.components(separatedBy: "class=\"series\" d=\"")[1].prefix { $0 != "\"" }
        #expect(d.filter { $0 == "M" }.count == 2)
    }

    /// Markup that could fetch or run anything: none may appear in a page.
    static let outsideReferences = ["http:", "https:", "src=", "href=", "<script", "url(", "@import", "<link", "<img", "<iframe", "<object"]

    @Test func pageIsWellFormedAndSelfContained() {
        let table = Table(caption: "numbers " + Self.nasty, header: ["size", "misses"], rows: [["1M", "2000"], [Self.nasty, "0"]])
        let page = HTMLPage(
            title: "report " + Self.nasty,
            blocks: [
                .code("qcow2sim simulate 'a b' --drive l2-cache-size=1M"), .facts([("trace", Self.nasty)]), .heading(Self.nasty),
                .paragraph(Self.nasty), .figure(svg: Self.chart().svg(), caption: Self.nasty, table: table), .table(table),
            ]
        ).render()
        let p = XMLProbe.parse(page)
        #expect(p.error == nil, "\(p.error ?? "")")
        #expect(p.all("svg").count == 1)
        #expect(p.all("table").count == 2)
        #expect(p.text.contains("report " + Self.nasty))
        for bad in Self.outsideReferences { #expect(!page.lowercased().contains(bad), "\(bad)") }
    }

    /// TV9's clean case (CacheCleanTests): the table is dropped at the tick at 2 s, one entry;
    /// the thinned counters end on the final counts.
    @Test func timelineRecordsReleasesAndCounters() throws {
        let r = try CacheCleanTests.runReport(gap: 2.5)
        #expect(r.timeline.releases.map { [$0.time, Double($0.image), $0.isL2 ? 1 : 0, Double($0.entries)] } == [[2, 0, 1, 1]])
        let l2 = r.timeline.counterSamples.filter { $0.isL2 }
        #expect(l2.map(\.lookups) == [1, 2])
        #expect(l2.map(\.misses) == [1, 2])
        #expect(l2.map(\.time) == [0.3, 2.8])
    }

    /// 1000 reads with a limit of 4: between 4 and 8 samples kept, plus the latest; cumulative
    /// counts never go back and the last equals the report.
    @Test func counterSamplesAreThinned() throws {
        var config = SimulationConfig(virtualSize: 8 << 30, populate: .full)
        config.readOnly = true
        let timeline = MemoryTimeline(counterLimit: 4)
        var reader = ArrayTraceReader(
            (0..<1000).map { TraceRecord(time: Double($0), op: .read, offset: UInt64($0 * 7919 % 131072) << 16, length: 4096) })
        let report = try Simulation.run(config: config, reader: &reader, memoryTimeline: timeline)
        let l2 = timeline.counterSamples.filter { $0.isL2 }
        #expect(l2.count >= 4 && l2.count <= 9)
        #expect(l2.last?.lookups == report.images[0].l2.lookups)
        #expect(l2.last?.hits == report.images[0].l2.hits)
        #expect(zip(l2, l2.dropFirst()).allSatisfy { $0.lookups < $1.lookups && $0.time <= $1.since && $1.since <= $1.time })
    }
}

import Foundation
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Debian's headless Chromium (`.ci/setup --deps` installs it).
enum Chromium {
    static let path: String? = {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/chromium" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static let skipMessage: Comment = "chromium not found on PATH: skipping the headless-browser checks of the HTML report (apt-get install chromium, or .ci/setup --deps)"

    /// Runs chromium headless on `page` with `mode` (`--dump-dom`, `--screenshot=…`) and console
    /// logging to stderr; returns (status, stdout, stderr). Each run gets its own profile
    /// directory, so parallel tests do not share one.
    static func run(_ mode: [String], page: String, in dir: String) throws -> (Int32, String, String) {
        let profile = dir + "/profile-\(UUID().uuidString)"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path ?? "chromium")
        p.arguments =
            ["--headless", "--disable-gpu", "--no-sandbox", "--user-data-dir=\(profile)", "--enable-logging=stderr", "--v=0"]
            + mode + [URL(fileURLWithPath: page).absoluteString]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        final class Box: @unchecked Sendable { var data = Data() }
        let e = Box()
        let done = DispatchSemaphore(value: 0)
        let errHandle = err.fileHandleForReading
        Thread {
            e.data = errHandle.readDataToEndOfFile()
            done.signal()
        }.start()
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
    }

    /// Chromium's log lines for the page's console (`INFO:CONSOLE(…)`): script errors, failed
    /// loads reported to the console, `console.*` calls.
    static func consoleLines(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains(":CONSOLE") }
    }

    /// Width and height from a PNG's IHDR chunk (bytes 16–23, big-endian), after checking the
    /// signature.
    static func pngSize(_ data: Data) -> (Int, Int)? {
        let b = [UInt8](data.prefix(24))
        guard b.count == 24, b[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], b[12..<16] == [0x49, 0x48, 0x44, 0x52]
        else { return nil }
        let w = b[16..<20].reduce(0) { $0 << 8 | Int($1) }, h = b[20..<24].reduce(0) { $0 << 8 | Int($1) }
        return (w, h)
    }
}

/// `simulate --format html` end to end: the page the CLI writes loads in headless Chromium with no
/// console errors, every chart is an `<svg>` with drawn paths, the screenshot is not blank, and
/// the file references nothing outside itself.
@Suite struct HTMLReportTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Three bursts of reads, 400 s apart, with a 60 s clean timer: the timer drops the tables
    /// between bursts, so the memory chart has releases to show.
    static func burstyTrace(in dir: String) throws -> String {
        var s = "time,op,offset,length\n"
        for b in 0..<3 {
            for i in 0..<600 {
                let t = Double(b) * 400 + Double(i) * 0.05
                s += "\(t),R,\((UInt64(i) * 2_654_435_761 % 131_072) << 16),4096\n"
            }
        }
        let path = dir + "/bursty.csv"
        try Data(s.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The pages under test and how many charts each has: `simulate` on one image with
    /// clean-timer releases and on a 2-image chain with writes (copy-on-write from the backing
    /// file); `mrc` (misses, metadata bytes, miss classes); `sweep` on a chain (the same three and
    /// per-image bars); `compare` on a chain with a varied size (candidates, miss classes,
    /// per-image bars, and the three curve charts); `advise` on a chain (each image's misses,
    /// metadata bytes and miss classes against size, the recommended size marked).
    static func pages(in dir: String) throws -> [(name: String, path: String, charts: Int)] {
        let trace = try burstyTrace(in: dir)
        let chainTrace = repo.appendingPathComponent("Traces/seed-mixed-uniform-8G-20000-rw50.csv").path
        let runs: [(String, [String], Int)] = [
            ("clean-timer", ["simulate", trace, "--size", "8G", "--populate", "full", "--drive", "cache-clean-interval=60"], 4),
            (
                "chain",
                ["simulate", chainTrace, "--size", "8G", "--chain", "2", "--layer", "0:populate=full", "--drive", "l2-cache-size=256K"], 4
            ),
            ("mrc", ["mrc", trace, "--size", "8G", "--populate", "full", "--sizes", "64K..2M*2"], 3),
            ("sweep", ["sweep", trace, "--size", "8G", "--chain", "2", "--layer", "0:populate=full", "--vary", "l2-cache-size=64K,256K,1M"], 4),
            (
                "compare",
                [
                    "compare", trace, "--size", "8G", "--chain", "2", "--layer", "0:populate=full", "--baseline", "policy=qemu",
                    "--candidate", "policy=lru", "--vary", "l2-cache-size=128K,1M",
                ], 6
            ),
            ("advise", Self.adviseArgs(trace), 6),
            // The fleet page: the memory histogram and the totals (two bar charts).
            ("fleet", ["advise", try fleetTrace(in: dir), "--per-volume", "--target-hit-rate", "0.5"], 2),
        ]
        var out: [(String, String, Int)] = []
        for (name, args, charts) in runs {
            let path = dir + "/\(name).html"
            let (status, _, err) = try CLITests.run(args + ["--format", "html", "--output", path])
            #expect(status == 0, "\(name): \(err)")
            out.append((name, path, charts))
        }
        return out
    }

    /// Three volumes of different sizes writing then reading back clusters (a native trace
    /// with a volume column), for `advise --per-volume`'s fleet page.
    static func fleetTrace(in dir: String) throws -> String {
        var text = "time,op,offset,length,volume\n"
        for (v, n) in [(0, 40), (1, 400), (2, 1200)] {
            for op in ["W", "R"] { for i in 0..<n { text += ",\(op),\(i << 22),4096,\(v)\n" } }
        }
        let path = dir + "/fleet.csv"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The fleet page shows what `advise --per-volume --format json` says: one table row per
    /// volume with its advised size, memory and -drive string, the totals, and a histogram
    /// whose bars count every volume once.
    @Test func fleetPageShowsEveryVolume() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["advise", try Self.fleetTrace(in: dir), "--per-volume", "--target-hit-rate", "0.5"]
        let json = dir + "/fleet.json", html = dir + "/fleet.html"
        var (status, _, err) = try CLITests.run(args + ["--format", "json", "--output", json])
        #expect(status == 0, "\(err)")
        (status, _, err) = try CLITests.run(args + ["--format", "html", "--output", html])
        #expect(status == 0, "\(err)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        let page = try String(contentsOfFile: html, encoding: .utf8)
        let volumes = try #require(doc["volumes"] as? [[String: Any]])
        #expect(volumes.count == 3)
        for v in volumes {
            let cells = [
                v["volume"] as? String ?? "?", "\((v["virtual_size"] as? NSNumber)?.uint64Value ?? 0)",
                "\((v["requests"] as? NSNumber)?.intValue ?? 0)", "\((v["l2_cache_size"] as? NSNumber)?.uint64Value ?? 0)",
                "\((v["memory_bytes"] as? NSNumber)?.uint64Value ?? 0)",
            ]
            let row = cells.enumerated().map { i, c in i == 0 ? "<td>\(c)</td>" : "<td class=\"num\">\(c)</td>" }.joined()
            #expect(page.contains("<tr>" + row), "\(cells)")
            #expect(page.contains((v["drive"] as? String) ?? "?"))
        }
        #expect(page.contains("<td class=\"num\">\((doc["total_memory_bytes"] as? NSNumber)?.uint64Value ?? 0)</td>"))
        // The histogram's table: its counts add up to the volumes.
        let bucketRows = page.components(separatedBy: "<caption>Volumes per bucket</caption>").dropFirst().first?
            .components(separatedBy: "</table>").first ?? ""
        let counts = bucketRows.components(separatedBy: "<td class=\"num\">").dropFirst().compactMap {
            Int($0.prefix { $0.isNumber })
        }
        #expect(counts.reduce(0, +) == 3, "\(bucketRows)")
    }

    /// `advise` on the bursty trace over a 2-image chain with a populated base, 1M per image.
    static func adviseArgs(_ trace: String) -> [String] {
        ["advise", trace, "--size", "8G", "--chain", "2", "--layer", "0:populate=full", "--memory-budget", "1M"]
    }

    /// The advise page shows what `advise --format json` says: the -drive string and the libvirt
    /// element in <pre> blocks, each image's recommended size as a marker on its curves next to
    /// full coverage and QEMU's 32M default, and the numbers in the per-image table.
    @Test func advisePageShowsTheSettingsAndTheRecommendedPoint() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = try Self.burstyTrace(in: dir)
        let json = dir + "/advice.json", html = dir + "/advice.html"
        var (status, _, err) = try CLITests.run(Self.adviseArgs(trace) + ["--format", "json", "--output", json])
        #expect(status == 0, "\(err)")
        (status, _, err) = try CLITests.run(Self.adviseArgs(trace) + ["--format", "html", "--output", html])
        #expect(status == 0, "\(err)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        let page = try String(contentsOfFile: html, encoding: .utf8)
        func escaped(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;").replacingOccurrences(of: "'", with: "&#39;")
        }
        let drive = try #require(doc["drive"] as? String), xml = try #require(doc["libvirt_xml"] as? String)
        #expect(drive.contains("backing.l2-cache-size="), "\(drive)")
        #expect(page.contains("<pre>\(escaped(drive))</pre>"))
        #expect(page.contains("<pre>\(escaped(xml))</pre>"))
        // The settings come before the first chart: a reader sees them first.
        let pre = try #require(page.range(of: "<pre>\(escaped(drive))</pre>")), svg = try #require(page.range(of: "<svg"))
        #expect(pre.lowerBound < svg.lowerBound)
        let images = try #require(doc["images"] as? [[String: Any]])
        #expect(images.count == 2)
        for im in images {
            let size = try #require(im["l2_cache_size"] as? Int), full = try #require(im["l2_full_coverage_bytes"] as? Int)
            let curve = try #require(im["curve"] as? [[String: Any]])
            // Each curve point's misses split into the four classes (what the classes chart draws).
            for p in curve {
                let classes = ["misses_cold", "misses_evicted", "misses_cleaned", "misses_discarded"].compactMap { p[$0] as? Int }
                #expect(classes.count == 4 && classes.reduce(0, +) == p["misses"] as? Int, "\(p)")
            }
            #expect(page.contains("<td class=\"num\">\(size)</td>"), "image \(im["index"] ?? "?")")
            // 8G at 64K clusters: full coverage is 8G / 64K × 8 = 1M for both images.
            #expect(full == 1 << 20)
        }
        let marker = { (label: String) in page.components(separatedBy: ">\(label)</text>").count - 1 }
        #expect(marker("full coverage 1M") == 6)
        #expect(marker("QEMU default 32M") == 6)
        let recommended = images.map { "recommended " + Self.bytesLabel(($0["l2_cache_size"] as? Int) ?? 0) }
        for (k, r) in recommended.enumerated() { #expect(marker(r) >= 3, "image \(k): \(r)") }
    }

    /// QEMU-style size labels as the charts print them (512K, 1M, 1.5M).
    static func bytesLabel(_ b: Int) -> String {
        for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] where b >= 1 << shift {
            let v = Double(b) / Double(1 << shift)
            return (v == v.rounded() ? "\(Int(v))" : String(format: "%g", v)) + unit
        }
        return "\(b)"
    }

    /// Locally a missing chromium skips (with the message); under CI, which installs it, it fails.
    @Test(.enabled(if: Chromium.path != nil || NotebookTests.inCI, Chromium.skipMessage))
    func pagesRenderInHeadlessChromium() throws {
        guard Chromium.path != nil else {
            Issue.record("chromium not found on PATH under CI: .ci/setup --deps should have installed it")
            return
        }
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // The console check sees a console error when there is one (a page made to log one).
        let bad = dir + "/console-error.html"
        try Data("<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>".utf8).write(
            to: URL(fileURLWithPath: bad))
        let (_, _, badErr) = try Chromium.run(["--screenshot=\(dir)/bad.png", "--window-size=400,300"], page: bad, in: dir)
        #expect(Chromium.consoleLines(badErr).contains { $0.contains("boom") }, "\(badErr)")

        // A blank page at the same size: what "nothing drawn" compresses to.
        let blank = dir + "/blank.html"
        try Data("<!DOCTYPE html><html><body></body></html>".utf8).write(to: URL(fileURLWithPath: blank))
        let (w, h) = (1000, 2000)
        _ = try Chromium.run(["--screenshot=\(dir)/blank.png", "--window-size=\(w),\(h)"], page: blank, in: dir)
        let blankPNG = try Data(contentsOf: URL(fileURLWithPath: dir + "/blank.png"))
        #expect(Chromium.pngSize(blankPNG).map { [$0.0, $0.1] } == [w, h])

        for page in try Self.pages(in: dir) {
            let shot = dir + "/\(page.name).png"
            let (status, _, err) = try Chromium.run(["--screenshot=\(shot)", "--window-size=\(w),\(h)"], page: page.path, in: dir)
            #expect(status == 0, "\(page.name): \(err)")
            #expect(Chromium.consoleLines(err).isEmpty, "\(page.name): \(Chromium.consoleLines(err))")
            let png = try Data(contentsOf: URL(fileURLWithPath: shot))
            #expect(Chromium.pngSize(png).map { [$0.0, $0.1] } == [w, h], "\(page.name)")
            // Charts, tables and text compress far worse than a white page: the report's
            // screenshot was ~15× the blank one's size when this was written (156 KB vs 10 KB).
            #expect(png.count > 5 * blankPNG.count, "\(page.name): \(png.count) bytes vs blank \(blankPNG.count)")

            // The DOM as Chromium built it: 4 charts, each an <svg> with drawn data paths.
            let (domStatus, dom, domErr) = try Chromium.run(["--dump-dom"], page: page.path, in: dir)
            #expect(domStatus == 0, "\(domErr)")
            let svgs = dom.components(separatedBy: "<svg").dropFirst().map { $0.components(separatedBy: "</svg>")[0] }
            #expect(svgs.count == page.charts, "\(page.name): \(svgs.count) charts")
            for (i, svg) in svgs.enumerated() {
                let drawn = svg.components(separatedBy: "<path ").dropFirst().filter { p in
                    (p.contains("class=\"series\"") || p.contains("class=\"bar\""))
                        && p.range(of: #"d="M[^"]+""#, options: .regularExpression) != nil
                }
                #expect(!drawn.isEmpty, "\(page.name): chart \(i + 1) has no drawn path")
            }
            #expect(dom.contains("</table>"))
        }
    }

    /// Attributes that make a browser fetch something.
    static let fetchingAttributes: Set<String> = [
        "src", "href", "xlink:href", "srcset", "poster", "data", "action", "formaction", "background", "manifest",
    ]

    @Test func pageReferencesNothingOutsideItself() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for page in try Self.pages(in: dir) {
            let html = try String(contentsOfFile: page.path, encoding: .utf8)
            let p = XMLProbe.parse(html)
            #expect(p.error == nil, "\(page.name): not well-formed: \(p.error ?? "")")
            for e in p.elements {
                #expect(!["script", "link", "img", "iframe", "object", "embed", "image", "use", "base"].contains(e.name), "\(e.name)")
                let fetching = Set(e.attributes.keys).intersection(Self.fetchingAttributes)
                #expect(fetching.isEmpty, "\(page.name): <\(e.name) \(fetching.sorted())>")
            }
            let lower = html.lowercased()
            for bad in ReportingTests.outsideReferences { #expect(!lower.contains(bad), "\(page.name): \(bad)") }
            #expect(p.all("svg").count == page.charts, "\(page.name)")
        }
    }

    /// Bad input writes no HTML: exit 65 with the located error, and no file.
    @Test func badTraceWritesNoPage() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = dir + "/bad.csv"
        try Data("R,0,4096\nR,zero,4096\n".utf8).write(to: URL(fileURLWithPath: trace))
        let out = dir + "/r.html"
        let (status, _, err) = try CLITests.run(["simulate", trace, "--size", "1G", "--format", "html", "--output", out])
        #expect(status == 65)
        #expect(err.hasPrefix("\(trace):2:"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}

/// `--request-markers`: a `# request N OP OFFSET LENGTH` line before each request's events.
@Suite struct RequestMarkerTests {
    @Test func markersPrecedeEachRequestAndStripToThePlainLog() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = dir + "/t.csv"
        try Data("R,0,4096\nW,65536,4096\nF,0,0\nZ,1073741824,65536\n".utf8).write(to: URL(fileURLWithPath: trace))
        let marked = dir + "/marked.log", plain = dir + "/plain.log"
        var (status, _, err) = try CLITests.run(["simulate", trace, "--size", "2G", "--events", marked, "--request-markers"])
        #expect(status == 0, "\(err)")
        (status, _, err) = try CLITests.run(["simulate", trace, "--size", "2G", "--events", plain])
        #expect(status == 0, "\(err)")
        let m = try String(contentsOfFile: marked, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        let p = try String(contentsOfFile: plain, encoding: .utf8)
        #expect(m.filter { $0.hasPrefix("#") } == [
            "# request 1 read 0 4096", "# request 2 write 65536 4096", "# request 3 flush 0 0",
            "# request 4 write_zeroes 1073741824 65536", "# close",
        ])
        // Without the markers the log is the plain one, byte for byte.
        #expect(m.filter { !$0.hasPrefix("#") }.joined(separator: "\n") == p)
    }

    /// TV1 (qcow2-model.md §16: `write 0 4k`, `read 0 4k` on a fresh 1 GiB image, writeback): the
    /// spec's 53 events are 44 for the write, 2 for the read (MAP) and 7 for the close, so the
    /// markers stand at lines 1, 46 and 49 of the marked log.
    @Test func markersSplitTV1AsTheSpecListsIt() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = dir + "/tv1.csv"
        try Data("W,0,4096\nR,0,4096\n".utf8).write(to: URL(fileURLWithPath: trace))
        let log = dir + "/tv1.log"
        let (status, _, err) = try CLITests.run(["simulate", trace, "--size", "1G", "--events", log, "--request-markers"])
        #expect(status == 0, "\(err)")
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count == 53 + 3)
        let marks = lines.indices.filter { lines[$0].hasPrefix("#") }
        #expect(marks == [0, 45, 48])
        #expect(lines[0] == "# request 1 write 0 4096")
        #expect(lines[1] == "qcow2_cache_get image 0 is_l2_cache 0 offset 0x20000 read_from_disk 1")
        #expect(lines[45] == "# request 2 read 0 4096")
        #expect(lines[46] == "qcow2_cache_get image 0 is_l2_cache 1 offset 0x40000 read_from_disk 1")
        #expect(lines[48] == "# close")
        #expect(lines[49] == "qcow2_cache_flush image 0 is_l2_cache 1")
    }

    @Test func markersNeedAnEventLog() throws {
        let trace = try CLITests.trace("R,0,4096\n")
        let (status, out, err) = try CLITests.run(["simulate", trace, "--size", "1G", "--request-markers"])
        #expect(status == 64)
        #expect(out.isEmpty)
        #expect(err == "qcow2sim simulate: error: --request-markers needs --events FILE\n")
    }
}

import Foundation
import Qcow2Sim
import Reporting
import Testing

/// The miss-ratio figures the sweep, mrc and compare pages share.
@Suite struct MissRatioCurvePageTests {
    /// §2's `max_l2_bytes`: one 8-byte entry (16 with extended L2) per guest cluster, rounded up
    /// to whole clusters.
    @Test func fullCoverage() {
        // 8 GiB / 64 KiB = 131072 entries × 8 = 1 MiB.
        #expect(
            MissRatioCurve.fullCoverage(Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 8 << 30)) == 1
                << 20)
        // TV8: 1 GiB / 4 KiB = 262144 entries × 8 = 2 MiB (512 tables of 4 KiB).
        #expect(
            MissRatioCurve.fullCoverage(Geometry(clusterBits: 12, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30)) == 2
                << 20)
        // Extended L2: 16384 entries × 16 = 256 KiB.
        #expect(
            MissRatioCurve.fullCoverage(Geometry(clusterBits: 16, extendedL2: true, refcountOrder: 4, virtualSize: 1 << 30))
                == 256 << 10)
        // 100 MiB / 64 KiB = 1600 entries × 8 = 12800 bytes, rounded up to one 64 KiB cluster.
        #expect(
            MissRatioCurve.fullCoverage(Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 100 << 20))
                == 64 << 10)
    }

    static func stats(misses: Int, cold: Int, bytes: UInt64) -> CacheStats {
        var s = CacheStats()
        s.misses = misses
        s.missesCold = cold
        s.missesEvicted = misses - cold
        s.bytesRead = bytes
        return s
    }

    @Test func figuresMarkTheSizesAndListTheNumbers() {
        let series = CurveSeries(
            "L2",
            [
                CurvePoint(size: 1 << 20, stats: Self.stats(misses: 16, cold: 16, bytes: 1 << 20)),
                CurvePoint(size: 64 << 10, stats: Self.stats(misses: 18_768, cold: 256, bytes: 76_873_728)),
            ])
        // Drawn by size whatever the order given.
        #expect(series.points.map(\.size) == [64 << 10, 1 << 20])
        let blocks = MissRatioCurve.figures(
            [series], sizeLabel: "l2-cache-size", fullCoverage: 1 << 20, extraMarkers: [MissRatioCurve.recommended(512 << 10)])
        #expect(blocks.count == 3)
        let html = HTMLPage(title: "t", blocks: blocks).render()
        #expect(html.components(separatedBy: "<svg").count - 1 == 3)
        for label in ["full coverage 1M", "QEMU default 32M", "recommended 512K"] {
            #expect(html.components(separatedBy: ">\(label)</text>").count - 1 == 3, "\(label)")
        }
        // The tables under the charts: misses, bytes read, and the classes adding up.
        #expect(html.contains("<td>64K (65536)</td><td class=\"num\">18768</td>"))
        #expect(html.contains("<td>1M (1048576)</td><td class=\"num\">1048576</td>"))
        #expect(html.contains("<td>64K</td><td class=\"num\">18768</td><td class=\"num\">256</td><td class=\"num\">18512</td>"))
        // Misses span more than two decades and none is 0: a log axis with power-of-ten ticks.
        #expect(html.contains(">10k</text>") && html.contains(">100</text>"))
    }
}

import Foundation
import Qcow2Sim
import QcowTestSupport
import Testing
import TraceKit

/// `qcow2sim explain`: one request step by step, checked against the spec's listings
/// (qcow2-model.md §16, TV8 and TV5) and values worked out by hand from the spec's layout rules
/// (§12) and index math (§1.2, §3.2).
@Suite struct ExplainTests {
    /// TV8's request `write 0x1c600000 4096` (i = 1816 of i = 0…2300): request 1817 counted from 1.
    static func tv8() throws -> ExplainReport {
        var config = SimulationConfig(virtualSize: 1 << 30, createOptions: try CreateOptions(parsing: "cluster_size=4096"))
        config.cacheMode = .writeback
        var reader = ArrayTraceReader((0...2300).map { TraceRecord(op: .write, offset: UInt64($0) * 262_144, length: 4096) })
        return try Explain.run(config: config, reader: &reader, request: 1817, trace: "tv8")
    }

    /// The spec's TV8 listing, as printed there.
    static let tv8Listing = SpecNotation.tv8Request1816

    @Test func tv8EventsAreTheSpecListing() throws {
        let r = try Self.tv8()
        #expect(r.request.offset == 0x1c60_0000 && r.request.op == "write" && r.request.number == 1817)
        #expect(r.events.map { $0.replacingOccurrences(of: " image 0", with: "") } == SpecNotation.lines(Self.tv8Listing))
        // The compact listing is the spec's, item for item.
        let items = Self.tv8Listing.split(separator: "\n").flatMap { $0.split(separator: ";") }.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        #expect(r.listing == items)
    }

    @Test func tv8WalkAndChanges() throws {
        let r = try Self.tv8()
        // 4 KiB clusters: 512 entries per L2 table, one L1 entry covers 2 MiB; 0x1c600000 / 2 MiB = 227,
        // (0x1c600000 >> 12) mod 512 = 0. The table lands at host cluster 2047, the data at 2048.
        let l = try #require(r.walk.first?.layers.first)
        #expect(l.l1Index == 227 && l.l1Span == 2 << 20 && l.l2Index == 0 && l.slice == 0 && l.sliceEntries == 512)
        #expect(l.l1Entry.word == "0x0" && l.l1EntryAfter?.word == "0x80000000007ff000" && l.l1EntryAfter?.copied == true)
        #expect(l.l2Entry == nil && l.l2EntryAfter?.word == "0x8000000000800000" && l.l2EntryAfter?.type == "normal")
        #expect(l.sliceOffset == 0x7ff000)
        #expect(r.refcountChanges.map { [$0.cluster, $0.before, $0.after] } == [[2047, 0, 1], [2048, 0, 1], [2049, 0, 1]])
        #expect(
            r.refcountChanges.map(\.what) == ["L2 table of L1 index 227", "data of guest cluster 0x1c600000", "refcount block 1"])
        #expect(
            r.tableChanges.map { "\($0.table)[\($0.index)] \($0.before) \($0.after)" } == [
                "l1[227] 0x0 0x80000000007ff000", "refcount_table[1] 0x0 0x801000",
            ])
        #expect(r.cow.isEmpty)
    }

    @Test func tv8VictimsAndStamps() throws {
        let r = try Self.tv8()
        let misses = r.operations.filter { $0.result == "miss" }
        #expect(
            misses.map { [$0.cache ?? "", $0.op, "\($0.slot ?? -1)", $0.missClass ?? ""] } == [
                ["l2", "get_empty", "509", "cold"], ["refcount", "get_empty", "1", "cold"],
            ])
        // §3.2: start = (offset / table_size × 4) mod n: 2047 × 4 mod 512 = 508 (held by the table
        // of i = 1815's neighbour), so the scan takes the first empty slot after it, 509;
        // 0x801 × 4 mod 4 = 0, slot 0 holds block 0, slot 1 is empty.
        let l2 = try #require(misses.first?.victim)
        #expect(l2.startIndex == 508 && l2.startFormula == "(0x7ff000 / 4096 × 4) mod 512 = 508" && l2.evictedOffset == nil)
        let rc = try #require(misses.last?.victim)
        #expect(rc.startIndex == 0 && rc.slot == 1 && rc.evictedOffset == nil)
        // The flush inside ALLOCATE_L2 writes back slot 473 (dirty, depending on the refcount
        // cache: the refcount cache is flushed in the middle) and the new slot 509.
        let flush = try #require(r.operations.first { $0.op == "write" && $0.cache == "l2" })
        #expect(flush.events == ["flush L2", "wb L2 473", "flush RC", "wb L2 509"])
        #expect(flush.writebacks == ["L2 slot 473", "L2 slot 509"])
        // Stamps: a release sets the slot's stamp to the clock (§3.3); the LINK's GET (the last
        // operation) releases slot 509 one tick after the ALLOCATE_NEW release before it.
        let gets = r.operations.filter { $0.cache == "l2" && $0.op == "get" }
        let link = try #require(gets.last)
        #expect(link.markedDirty && link.stampAfter == (link.stampBefore ?? 0) + 1)
    }

    @Test func tv8Text() throws {
        let text = try Self.tv8().text()
        for line in [
            "request 1817 of tv8", ": write 0x1c600000 +4096 (guest bytes [476053504, 476057600))",
            "      L1[227] (covers guest [0x1c600000, 0x1c800000)): 0x0 (no L2 table)",
            "        after: 0x80000000007ff000 (COPIED, L2 table 0x7ff000)",
            "        victim: start index (0x7ff000 / 4096 × 4) mod 512 = 508;",
            "  image 0 host cluster 2049 (0x801000): 0 → 1, refcount block 1",
            "  L2 get 0x7ff000 empty miss 509",
        ] {
            #expect(text.contains(line), "\(line)")
        }
    }

    /// TV5's `write 130k 4k` on a 2-image chain (the base written 0–256K, the overlay 64K–128K):
    /// an allocating partial write over backing data, so a real COW from the backing file.
    static func tv5(format: String) throws -> (Int32, String, String) {
        let trace = try CLITests.trace("R,0,4K\nW,130K,4K\n")
        return try CLITests.run([
            "explain", trace, "--request", "2", "--size", "1G", "--chain", "2", "--layer", "0:populate=0:256K", "--layer",
            "1:populate=64K:64K", "--cache-mode", "writeback", "--format", format,
        ])
    }

    @Test func chainCowWriteIsTheSpecListing() throws {
        let (status, out, err) = try Self.tv5(format: "json")
        #expect(status == 0, "\(err)")
        let r = try JSONDecoder.snakeCase.decode(ExplainReport.self, from: Data(out.utf8))
        #expect(r.schemaVersion == 1 && r.command == "explain")
        // TV5's listing for the write, [top] = image 1, [backing1] = image 0.
        let expected = SpecNotation.events(
            """
            [image 1] L2 get 0x40000 hit 0 (x2)
            [image 1] RC get 0x20000 miss 0
            [image 1] RC get 0x20000 hit 0 (x13)
            [image 1] L2 get 0x40000 hit 0
            [image 0] RC get 0x20000 miss 0
            [image 0] RC get 0x20000 hit 0 (x8)
            [image 0] L2 get 0x40000 hit 0
            [image 1] L2 get 0x40000 hit 0
            [image 0] L2 get 0x40000 hit 0
            [image 1] L2 get 0x40000 hit 0
            """
        ).map { $0.line(includeImage: true) }
        #expect(r.events == expected)

        // By hand: 130K = 0x20800 is guest cluster 2 (64 KiB clusters), 0x800 into it; L1 index 0,
        // L2 index 2. The base's data clusters follow its L2 table (cluster 4): guest cluster 2
        // is host cluster 7 (0x70000). The overlay holds header, refcount table, block, L1, its
        // L2 table and one data cluster (clusters 0–5): the write allocates cluster 6.
        let walk = try #require(r.walk.first)
        #expect(walk.from == 0x20800 && walk.to == 0x21800)
        #expect(walk.layers.map(\.image) == [1, 0])
        let top = walk.layers[0], base = walk.layers[1]
        #expect(top.guestCluster == 2 && top.offsetInCluster == 0x800 && top.l1Index == 0 && top.l2Index == 2)
        #expect(top.l2Entry?.word == "0x0" && top.l2EntryAfter?.word == "0x8000000000060000")
        #expect(base.l2Entry?.word == "0x8000000000070000" && base.resolution.hasPrefix("data at host offset 0x70800"))
        // COW (§7.5, no extended L2): the untouched head [128K, 130K) and tail [134K, 192K); the
        // gap between them (4 KiB) is at most 16 KiB, so one READ of the whole cluster (64 KiB),
        // and 2 + 58 KiB written.
        #expect(r.cow.map { "\($0.part) \($0.from) \($0.to)" } == ["head 131072 133120", "tail 137216 196608"])
        #expect(r.cowOutcome.contains { $0.hasPrefix("copied: 65536 bytes read") && $0.contains("61440 bytes written") })
        #expect(r.refcountChanges.map { [UInt64($0.image), $0.cluster, $0.before, $0.after] } == [[1, 6, 0, 1]])
        // The backing image's first lookup this session is a miss into an empty slot.
        let backingMiss = try #require(r.operations.first { $0.image == 0 && $0.result == "miss" })
        #expect(backingMiss.cache == "refcount" && backingMiss.slot == 0 && backingMiss.missClass == "cold")
        #expect(r.operations.contains { $0.op == "depends_on_flush" && $0.image == 1 })
    }

    @Test func chainText() throws {
        let (status, out, err) = try Self.tv5(format: "text")
        #expect(status == 0, "\(err)")
        #expect(
            out.contains(
                "      → unallocated here: falls through to image 0 (the backing file); after the request: host offset 0x60800 (host cluster 0x60000)"
            ))
        #expect(out.contains("  head of guest cluster 0x20000: [0x20000, 0x20800), 2048 bytes"))
        #expect(out.contains("  [image 1] RC get 0x20000 hit 0 (x13)"))
    }

    /// TV4 (extended L2, 2 KiB subclusters): `write 0 4k`, then `write 6k 1k`, the request
    /// explained. Its events follow the spec's notes on TV4: KEEP_EXISTING's lookup, the one-time
    /// probe of the 6-cluster file, IS_ZERO_FAST(cow_end [7K, 8K)) and LINK.
    @Test func extendedL2SubclusterWrite() throws {
        var config = SimulationConfig(virtualSize: 1 << 30, createOptions: try CreateOptions(parsing: "extended_l2=on"))
        config.cacheMode = .writeback
        var reader = ArrayTraceReader([
            TraceRecord(op: .write, offset: 0, length: 4096), TraceRecord(op: .write, offset: 6144, length: 1024),
        ])
        let r = try Explain.run(config: config, reader: &reader, request: 2, trace: "tv4")
        #expect(
            r.events.map { $0.replacingOccurrences(of: " image 0", with: "") }
                == SpecNotation.lines(
                    "L2 get 0x40000 hit 0 ; RC get 0x20000 hit 0 (x6) ; L2 get 0x40000 hit 0 (x2)"))
        let l = try #require(r.walk.first?.layers.first)
        // 6K is subcluster 3; write 1 allocated subclusters 0–1 (bitmap 0x3) of host cluster 5;
        // this write sets alloc bit 3 (0xb). Subcluster 3 is UNALLOCATED_ALLOC, so COW_META copies
        // only to the next subcluster boundary: the tail [7K, 8K), no head.
        #expect(l.subclusters == "3" && l.subclusterTypes == ["unallocated_alloc"])
        #expect(l.l2Entry?.bitmap == "0x3" && l.l2EntryAfter?.bitmap == "0xb")
        #expect(l.l2EntryAfter?.allocBits == "1101" + String(repeating: "0", count: 28))
        #expect(l.l2Entry?.word == "0x8000000000050000")
        #expect(r.cow.map { "\($0.part) \($0.from) \($0.to)" } == ["tail 7168 8192"])
        #expect(r.cowOutcome.contains { $0.contains("found the regions zero") })
        #expect(r.refcountChanges.isEmpty)
        #expect(r.text().contains("      subclusters 3: unallocated_alloc\n"))
    }

    /// TV11: `read 0 192k` over a chain runs as a task pool; the backing task's miss waits in
    /// its read while the top image maps the next segments. The spec's listing: top miss 1;
    /// backing get / replace / read (index 1); top hit 1 twice; backing get_done 1; backing hit 1.
    @Test func taskPoolReadHoldsTheBackingMiss() throws {
        let trace = try CLITests.trace("R,600M,64K\nR,0,192K\n")
        let (status, out, err) = try CLITests.run([
            "explain", trace, "--request", "2", "--size", "1G", "--chain", "2", "--layer", "0:populate=0:256K,600M:64K",
            "--layer",
            "1:populate=64K:64K,700M:64K", "--drive", "l2-cache-size=8K,backing.l2-cache-size=8K", "--format", "json",
        ])
        #expect(status == 0, "\(err)")
        let r = try JSONDecoder.snakeCase.decode(ExplainReport.self, from: Data(out.utf8))
        #expect(
            r.events == [
                "qcow2_cache_get image 1 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_replace_entry image 1 is_l2_cache 1 index 1",
                "qcow2_cache_get_read image 1 is_l2_cache 1 index 1",
                "qcow2_cache_get_done image 1 is_l2_cache 1 index 1",
                "qcow2_cache_get image 0 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_replace_entry image 0 is_l2_cache 1 index 1",
                "qcow2_cache_get_read image 0 is_l2_cache 1 index 1",
                "qcow2_cache_get image 1 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_done image 1 is_l2_cache 1 index 1",
                "qcow2_cache_get image 1 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_done image 1 is_l2_cache 1 index 1",
                "qcow2_cache_get_done image 0 is_l2_cache 1 index 1",
                "qcow2_cache_get image 0 is_l2_cache 1 offset 0x40000 read_from_disk 1",
                "qcow2_cache_get_done image 0 is_l2_cache 1 index 1",
            ])
        #expect(
            r.listing == [
                "[image 1] L2 get 0x40000 miss 1", "[image 0] L2 get 0x40000 miss 1 (get_done later)",
                "[image 1] L2 get 0x40000 hit 1 (x2)",
                "[image 0] L2 get_done 1", "[image 0] L2 get 0x40000 hit 1",
            ])
        // The backing lookup is a miss by the slot state even though its events come later.
        #expect(r.operations.filter { $0.image == 0 && $0.result != nil }.map { $0.result ?? "" } == ["miss", "hit"])
        #expect(r.notes.contains { $0.hasPrefix("QEMU runs this request as a task pool") })
    }

    /// TV6 (read-only, preallocated metadata, 4 KiB slices): `read 0`, `read 32M`, `read 0`,
    /// then `read 64M 4k` explained. With 2 slots every start index is 0 and no slot is empty:
    /// the victim is slot 1, whose stamp 2 is older than slot 0's 3 (the spec's note). With 3
    /// slots the start is (0x42 × 4) mod 3 = 0 and slot 0 is still empty.
    @Test func tv6VictimByStamp() throws {
        let trace = try CLITests.trace("R,0,4K\nR,32M,4K\nR,0,4K\nR,64M,4K\n")
        for (size, slot, empty) in [("8K", 1, false), ("12K", 0, true)] {
            let (status, out, err) = try CLITests.run([
                "explain", trace, "--request", "4", "--size", "4G", "--populate", "full", "--populate-mode", "metadata",
                "--read-only",
                "--drive", "l2-cache-size=\(size)", "--format", "json",
            ])
            #expect(status == 0, "\(err)")
            let r = try JSONDecoder.snakeCase.decode(ExplainReport.self, from: Data(out.utf8))
            #expect(r.listing == ["L2 get 0x42000 miss \(slot)"], "\(size)")
            let v = try #require(r.operations.first?.victim)
            #expect(v.startIndex == 0 && v.slot == slot && (v.evictedOffset == nil) == empty, "\(size)")
            if !empty {
                #expect(v.evictedOffset == 0x41000 && v.evictedStamp == 2)
                #expect(v.reason.hasSuffix("stamps in scan order: slot 0 3, slot 1 2"), "\(v.reason)")
            }
        }
    }

    /// The clean timer: HTMLReportTests' bursty trace (600 reads, 400 s of idle time, 600 more)
    /// with a 60 s interval. The first burst loads all 16 L2 tables of the 8 GiB disk (the 1 MiB
    /// cache covers it); the idle ticks drop them all, so request 601's lookup is a miss of class
    /// "cleaned" into the empty start slot, and the note says what the ticks dropped.
    @Test func cleanTimerBeforeTheRequest() throws {
        let dir = try CLIRun.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trace = try HTMLReportTests.burstyTrace(in: dir)
        let (status, out, err) = try CLITests.run([
            "explain", trace, "--request", "601", "--size", "8G", "--populate", "full", "--drive", "cache-clean-interval=60",
            "--format", "json",
        ])
        #expect(status == 0, "\(err)")
        let r = try JSONDecoder.snakeCase.decode(ExplainReport.self, from: Data(out.utf8))
        #expect(r.request.time == 400)
        let first = try #require(r.operations.first)
        #expect(first.result == "miss" && first.missClass == "cleaned" && first.victim?.evictedOffset == nil)
        #expect(
            r.notes.contains(
                "the cache-clean timer ran before this request and dropped 16 L2 and 0 refcount entries of image 0 (DocC: the cache algorithm)"
            ))
    }

    /// Bad requests: exact messages, sysexits codes, no output.
    @Test(arguments: [
        (["--request", "3"], 64, "qcow2sim explain: error: --request 3: {T} has 2 requests\n"),
        (
            ["--request", "0"], 64,
            "qcow2sim explain: error: invalid value '0' for --request (expected a request number, 1 or more)\n"
        ),
        ([], 64, "qcow2sim explain: error: missing --request N (the request to explain, from 1)\n"),
        (
            ["--request", "1", "--policy", "opt"], 64,
            "qcow2sim explain: error: explain runs the live cache layer; --policy opt (Belady's MIN over a recording) has no victim scan to show\n"
        ),
    ])
    func badRequests(args: [String], status: Int32, message: String) throws {
        let trace = try CLITests.trace("R,0,4K\nW,64K,4K\n")
        let (s, out, err) = try CLITests.run(["explain", trace, "--size", "1G"] + args)
        #expect(s == status)
        #expect(out.isEmpty)
        #expect(err == message.replacingOccurrences(of: "{T}", with: trace))
    }

    @Test func badTraceIsLocated() throws {
        let trace = try CLITests.trace("R,0,4K\nR,x,4K\n")
        let (s, out, err) = try CLITests.run(["explain", trace, "--size", "1G", "--request", "2"])
        #expect(s == 65)
        #expect(out.isEmpty)
        #expect(err.hasPrefix("\(trace):2: error:"), "\(err)")
    }
}

extension JSONDecoder {
    /// A decoder for the snake_case documents the CLI writes.
    static var snakeCase: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}

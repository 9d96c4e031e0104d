import Foundation
import Qcow2Sim
import TraceKit
import Validation

// Deterministic benchmarks of qcow2sim. Each benchmark runs in its own child process so its
// peak RSS (VmHWM) is its own. Usage:
//   qcow2sim-bench                 run every benchmark
//   qcow2sim-bench NAME…           run the named ones (see --list)
//   qcow2sim-bench --single NAME   run one in this process (used by the parent)
//   qcow2sim-bench --read FILE     read a trace file end to end and print the ingestion rate
//   qcow2sim-bench --write-blktrace FILE IOS
//                                  write parse's synthetic blktrace (IOS I/Os) to FILE, so that
//                                  `valgrind --tool=callgrind … --read FILE` profiles the reader alone
//   qcow2sim-bench peer            qcow2sim against a reference LRU on the same requests
//   qcow2sim-bench core            the write benchmarks' requests replayed from memory and
//                                  from the generator, side by side
//   qcow2sim-bench calibrate [DIR] calibrate --dir through qemu-io, then the calibrated model's
//                                  IOPS against qemu-io's measured IOPS on the seed benchmark

/// One benchmark: a simulation over a generated workload.
struct Benchmark {
    var name: String
    var summary: String
    var config: SimulationConfig
    var workload: WorkloadSpec
}

let TiB: UInt64 = 1 << 40
/// `--drive l2-cache-size=1M`.
let l2OneMiB = DriveOptions([CacheOptions(l2CacheSize: 1 << 20)])

let benchmarks: [Benchmark] = [
    Benchmark(
        name: "read-1e6", summary: "10^6 uniform 4 KiB reads, 1 TiB populated (preallocation=metadata), 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: l2OneMiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "read-1e7", summary: "10^7 uniform 4 KiB reads, 1 TiB populated, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: l2OneMiB),
        workload: WorkloadSpec(pattern: .uniform, count: 10_000_000, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "read-1e6-64T", summary: "10^6 uniform 4 KiB reads, 64 TiB populated, 1 MiB L2 cache (memory vs virtual size)",
        config: SimulationConfig(virtualSize: 64 * TiB, populate: .full, driveOptions: l2OneMiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: 64 * TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "write50-1e6", summary: "10^6 uniform 4 KiB requests, 50 % writes, fresh 1 TiB image, default caches",
        config: SimulationConfig(virtualSize: TiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 0.5, seed: 1)),
    Benchmark(
        name: "write50-1e6-4T",
        summary: "10^6 uniform 4 KiB requests, 50 % writes scattered over a fresh 4 TiB image (~61 entries per L2 table)",
        config: SimulationConfig(virtualSize: 4 * TiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: 4 * TiB, requestSize: 4096, readRatio: 0.5, seed: 1)
    ),
    Benchmark(
        name: "write50-1e6-1M", summary: "10^6 uniform 4 KiB requests, 50 % writes, fresh 1 TiB image, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, driveOptions: l2OneMiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 0.5, seed: 1)),
    Benchmark(
        name: "zipf-1e7", summary: "10^7 zipf(0.99) 4 KiB reads, 1 TiB populated, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: l2OneMiB),
        workload: WorkloadSpec(
            pattern: .zipf(theta: 0.99), count: 10_000_000, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)),
]

func peakRSS() -> UInt64 {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { UInt64($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func runSingle(_ b: Benchmark) throws {
    // Time the generator alone first, so the simulation's share is visible.
    var gen = try WorkloadGenerator(b.workload)
    let g0 = now()
    var n = 0
    while let _ = gen.next() { n += 1 }
    let genSeconds = now() - g0

    var reader = try WorkloadGenerator(b.workload)
    let t0 = now()
    let report = try Simulation.run(config: b.config, reader: &reader)
    let seconds = now() - t0
    let top = report.images[report.images.count - 1]
    let line = String(
        format:
            "%-15@ %9d req  replay %6.3f s = %6.2f M req/s  setup %5.2f s  (generator alone %4.0f M/s)  peak RSS %6.1f MiB  L2 hit rate %.4f",
        b.name as NSString, n, report.replaySeconds, Double(n) / report.replaySeconds / 1e6, report.setupSeconds,
        Double(n) / genSeconds / 1e6, Double(peakRSS()) / 1_048_576, top.l2.hitRate)
    _ = seconds
    print(line)
}

func runParse() throws {
    for r in try TraceBenchmarks.parseThroughput(ios: 1_000_000, repeats: 3) {
        print("parse \(r)  peak RSS \(String(format: "%.1f", Double(peakRSS()) / 1_048_576)) MiB")
    }
}

/// Reads 4 KiB reads at the given offsets, from memory.
struct OffsetReader: TraceReader {
    let offsets: [UInt64]
    var position = 0
    let fileName = "<peer>"
    mutating func next() throws -> TraceRecord? {
        guard position < offsets.count else { return nil }
        position += 1
        return TraceRecord(op: .read, offset: offsets[position - 1], length: 4096)
    }
    var location: TraceLocation { .line(position) }
}

/// The reference cache of peer mode: a plain LRU over L2 slice ids with a direct-index table
/// (slice id → node) and a doubly linked list in arrays, the shape of libCacheSim's `LRU_get`
/// (one lookup; a hit moves the node to the head, a miss evicts the tail and inserts at the
/// head). It does the least any cache simulator must per request.
struct ReferenceLRU {
    private var slot: [Int32]
    private var ids: [Int32]
    private var prev: [Int32]
    private var next: [Int32]
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var used: Int32 = 0
    private(set) var hits = 0
    private(set) var misses = 0

    init(capacity: Int, idSpace: Int) {
        slot = [Int32](repeating: -1, count: idSpace)
        ids = [Int32](repeating: -1, count: capacity)
        prev = [Int32](repeating: -1, count: capacity)
        next = [Int32](repeating: -1, count: capacity)
    }

    private mutating func unlink(_ n: Int32) {
        let p = prev[Int(n)]
        let x = next[Int(n)]
        if p >= 0 { next[Int(p)] = x } else { head = x }
        if x >= 0 { prev[Int(x)] = p } else { tail = p }
    }

    private mutating func pushFront(_ n: Int32) {
        prev[Int(n)] = -1
        next[Int(n)] = head
        if head >= 0 { prev[Int(head)] = n }
        head = n
        if tail < 0 { tail = n }
    }

    /// One access; returns whether it hit.
    @inline(__always)
    mutating func get(_ id: Int) -> Bool {
        let n = slot[id]
        if n >= 0 {
            hits += 1
            if n != head {
                unlink(n)
                pushFront(n)
            }
            return true
        }
        misses += 1
        let node: Int32
        if used < Int32(ids.count) {
            node = used
            used += 1
        } else {
            node = tail
            unlink(node)
            slot[Int(ids[Int(node)])] = -1
        }
        ids[Int(node)] = Int32(id)
        slot[id] = node
        pushFront(node)
        return false
    }
}

/// Peer mode: the same requests (10^7 uniform 4 KiB reads over a preallocated 1 TiB image, 1 MiB
/// L2 cache = 256 slices of 4 KiB, each slice 512 L2 entries = 32 MiB of guest space) through
/// qcow2sim (QEMU's policy and plain LRU) and through ``ReferenceLRU`` in this process, in CPU
/// time. qcow2sim's setup (preallocating the image) is measured with a one-request run and
/// subtracted. Prints both rates, their ratio, and whether the LRU miss counts agree; with
/// `rounds` > 1 (`peer`: 3), the three run in turn that many times and the ratio printed is the
/// median of the rounds' (`peer-1e6`, the callgrind benchmark, runs once).
func runPeer(count: Int, rounds: Int) throws {
    let spec = WorkloadSpec(pattern: .uniform, count: count, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)
    var offsets: [UInt64] = []
    offsets.reserveCapacity(count)
    for r in try WorkloadGenerator(spec) { offsets.append(r.offset) }
    let sliceShift: UInt64 = 25  // 4 KiB slice = 512 entries × 64 KiB clusters = 32 MiB
    func simulate(_ policy: String, _ offs: [UInt64]) throws -> (Double, Int) {
        var config = SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: l2OneMiB)
        config.policy = policy
        var reader = OffsetReader(offsets: offs)
        let c0 = TraceBenchmarks.cpuSeconds()
        let report = try Simulation.run(config: config, reader: &reader)
        let cpu = TraceBenchmarks.cpuSeconds() - c0
        return (cpu, report.images[report.images.count - 1].l2.misses)
    }
    func replay(_ policy: String) throws -> (Double, Int) {
        let (setup, _) = try simulate(policy, [0])
        let (all, misses) = try simulate(policy, offsets)
        return (max(all - setup, 1e-9), misses)
    }
    let n = Double(count)
    func rate(_ cpu: Double) -> String { String(format: "%6.2f M req/s (%.3f CPU s)", n / cpu / 1e6, cpu) }
    func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
    print("peer: \(count) uniform 4 KiB reads, 1 TiB preallocated, L2 cache 256 x 4 KiB slices, CPU time")
    // Rounds of the three in turn: this machine's speed drifts over seconds, so each round's
    // ratio compares runs made moments apart, and the medians are printed last.
    var qemuTimes: [Double] = [], lruTimes: [Double] = [], refTimes: [Double] = []
    var qemuRatios: [Double] = [], lruRatios: [Double] = []
    var agree = true
    for round in 1...rounds {
        let (qemuCPU, qemuMisses) = try replay("qemu")
        let (lruCPU, lruMisses) = try replay("lru")
        var lru = ReferenceLRU(capacity: 256, idSpace: Int(TiB >> sliceShift))
        let c0 = TraceBenchmarks.cpuSeconds()
        for o in offsets { _ = lru.get(Int(o >> sliceShift)) }
        let refCPU = max(TraceBenchmarks.cpuSeconds() - c0, 1e-9)
        if lruMisses != lru.misses { agree = false }
        qemuTimes.append(qemuCPU)
        lruTimes.append(lruCPU)
        refTimes.append(refCPU)
        qemuRatios.append(qemuCPU / refCPU)
        lruRatios.append(lruCPU / refCPU)
        let label = rounds > 1 ? " (round \(round))" : ""
        print("  qcow2sim, qemu policy   \(rate(qemuCPU))  L2 misses \(qemuMisses)\(label)")
        print("  qcow2sim, lru policy    \(rate(lruCPU))  L2 misses \(lruMisses)\(label)")
        print("  reference LRU           \(rate(refCPU))  misses    \(lru.misses)\(label)")
    }
    if rounds > 1 {
        print(
            "  medians of \(rounds) rounds: qemu policy \(rate(median(qemuTimes))), lru policy \(rate(median(lruTimes))), reference \(rate(median(refTimes)))"
        )
    }
    print(
        String(
            format: "  ratio reference / qcow2sim: %.2fx (qemu policy), %.2fx (lru policy)%@; LRU misses %@",
            median(qemuRatios), median(lruRatios), (rounds > 1 ? ", medians of the rounds' ratios" : "") as NSString,
            (agree ? "agree" : "DIFFER") as NSString))
}

/// A generated workload held in memory, 8 bytes a request: the offset with the op in bit 0
/// (0 read, 1 write), every request `length` bytes, untimed; `core` replays it beside the
/// generator, so the generator's share of a benchmark's time shows (about 2 % of write50-1e6's:
/// its batch loop draws a request in a few dozen instructions).
struct PackedReader: TraceReader {
    let packed: [UInt64]
    let length: UInt64
    var position = 0
    let fileName = "<core>"

    init(_ spec: WorkloadSpec) throws {
        var p: [UInt64] = []
        p.reserveCapacity(spec.count)
        for r in try WorkloadGenerator(spec) {
            precondition(r.time == nil && r.length == spec.requestSize && r.offset & 1 == 0 && (r.op == .read || r.op == .write))
            p.append(r.offset | (r.op == .write ? 1 : 0))
        }
        packed = p
        length = spec.requestSize
    }

    init(packed: [UInt64], length: UInt64) {
        self.packed = packed
        self.length = length
    }

    @inline(__always) func record(_ i: Int) -> TraceRecord {
        let v = packed[i]
        return TraceRecord(op: v & 1 == 0 ? .read : .write, offset: v & ~1, length: length)
    }

    mutating func next() throws -> TraceRecord? {
        guard position < packed.count else { return nil }
        position += 1
        return record(position - 1)
    }

    /// The batch in one loop (the protocol's default calls `next()` per record).
    mutating func next(into buffer: UnsafeMutableBufferPointer<TraceRecord>, admitting filter: PlainReads) -> (
        count: Int, end: BatchEnd
    ) {
        var n = 0
        while n < buffer.count {
            guard position < packed.count else { return (n, .ended) }
            let r = record(position)
            position += 1
            guard filter.admits(r) else { return (n, .refused(r)) }
            buffer[n] = r
            n += 1
        }
        return (n, .full)
    }

    var location: TraceLocation { .line(position) }
}

/// `core`: the write benchmarks' requests replayed from memory (`PackedReader`), the replay core's
/// rate in CPU time (the image's setup, measured with a one-request run, subtracted), beside the
/// same requests drawn from the generator in the same round (as `write50-1e6` and the others run
/// them), `rounds` rounds in turn, medians last. Both runs of a round must count the same.
func runCore(rounds: Int) throws {
    let names = ["write50-1e6", "write50-1e6-4T", "read-1e6"]
    let chosen = names.compactMap { n in benchmarks.first { $0.name == n } }
    let readers = try chosen.map { try PackedReader($0.workload) }
    func cpuRun<R: TraceReader>(_ b: Benchmark, _ reader: R) throws -> (Double, SimulationReport) {
        var r = reader
        let c0 = TraceBenchmarks.cpuSeconds()
        let report = try Simulation.run(config: b.config, reader: &r)
        return (TraceBenchmarks.cpuSeconds() - c0, report)
    }
    print("core: requests replayed from memory (8 bytes each) and from the generator, CPU time, setup subtracted")
    var memory = [[Double]](repeating: [], count: chosen.count)
    var generated = [[Double]](repeating: [], count: chosen.count)
    func rate(_ n: Int, _ cpu: Double) -> String { String(format: "%6.2f M req/s (%.3f CPU s)", Double(n) / cpu / 1e6, cpu) }
    for round in 1...rounds {
        for (k, b) in chosen.enumerated() {
            let n = readers[k].packed.count
            let one = PackedReader(packed: Array(readers[k].packed.prefix(1)), length: readers[k].length)
            let (setup, _) = try cpuRun(b, one)
            let (all, report) = try cpuRun(b, readers[k])
            let (allGenerated, reportGenerated) = try cpuRun(b, try WorkloadGenerator(b.workload))
            let top = report.images[report.images.count - 1]
            let want = reportGenerated.images[reportGenerated.images.count - 1]
            guard top.l2 == want.l2 && top.refcount == want.refcount else {
                throw SimulationError.usage("\(b.name): the replay from memory counted differently from the generated run")
            }
            let cpu = max(all - setup, 1e-9)
            let cpuGenerated = max(allGenerated - setup, 1e-9)
            memory[k].append(cpu)
            generated[k].append(cpuGenerated)
            print(
                String(
                    format: "  %-16@ %9d req  from memory %@  generated %@  L2 hit rate %.4f (round %d)", b.name as NSString,
                    n, rate(n, cpu) as NSString, rate(n, cpuGenerated) as NSString, top.l2.hitRate, round))
        }
    }
    func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
    for (k, b) in chosen.enumerated() {
        let n = readers[k].packed.count
        print(
            String(
                format: "  median of %d rounds: %-16@ from memory %@  generated %@", rounds, b.name as NSString,
                rate(n, median(memory[k])) as NSString, rate(n, median(generated[k])) as NSString))
    }
}

/// Reads a trace file end to end through TraceFile (detection, reader, mapping stage) and prints
/// the ingestion rate in CPU time.
func runRead(_ path: String) throws {
    let c0 = TraceBenchmarks.cpuSeconds()
    var reader = try TraceFile.open(path: path)
    var n = 0
    var bytes: UInt64 = 0
    while let r = try reader.next() {
        n += 1
        bytes &+= r.length
    }
    let cpu = TraceBenchmarks.cpuSeconds() - c0
    var st = stat()
    let size = stat(path, &st) == 0 ? Double(st.st_size) : 0
    print(
        String(
            format: "read %@ (%@): %d records, %.0f MB in %.3f CPU s = %.0f MB/s, %.2f M records/s (checksum %llu)",
            path as NSString, reader.format.rawValue as NSString, n, size / 1e6, cpu, size / cpu / 1e6,
            Double(n) / cpu / 1e6, bytes))
}

/// `calibrate [DIR]`: issue 12's figure, predicted against measured IOPS (needs qemu-io).
func runCalibrate(directory: String?) throws {
    let dir = directory ?? (NSTemporaryDirectory() as NSString).appendingPathComponent("qcow2sim-bench-calibrate-\(getpid())")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let check = try SeedBenchmarkCalibration.run(runner: SystemProcessRunner(), directory: dir) {
        FileHandle.standardError.write(Data("calibrate: \($0)\n".utf8))
    }
    for line in check.lines { print(line) }
}

let args = Array(CommandLine.arguments.dropFirst())
if args.first == "calibrate", args.count <= 2 {
    do { try runCalibrate(directory: args.count == 2 ? args[1] : nil) } catch {
        FileHandle.standardError.write(Data("qcow2sim-bench: error: \(error)\n".utf8))
        exit(69)
    }
    exit(0)
}
if args.first == "--read", args.count == 2 {
    do { try runRead(args[1]) } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        exit(65)
    }
    exit(0)
}
if args.first == "--write-blktrace", args.count == 3, let ios = Int(args[2]), ios > 0 {
    let bytes = TraceBenchmarks.syntheticBlktrace(ios: ios)
    guard FileManager.default.createFile(atPath: args[1], contents: Data(bytes)) else {
        FileHandle.standardError.write(Data("qcow2sim-bench: error: cannot create \(args[1])\n".utf8))
        exit(73)
    }
    exit(0)
}
if args.first == "--list" {
    for b in benchmarks { print("\(b.name): \(b.summary)") }
    print("parse: blktrace binary, blkparse text, native CSV and binary parse throughput")
    print(
        "peer: read-1e7's requests through qcow2sim and a reference LRU in this process, three rounds in turn, rates and their ratio"
    )
    print("peer-1e6: the same with 10^6 requests, one round")
    print(
        "core: write50-1e6, write50-1e6-4T and read-1e6 replayed from memory and from the generator, side by side, five rounds in turn, medians"
    )
    print(
        "calibrate [DIR]: calibrate --dir through qemu-io, then predicted against measured IOPS on the seed benchmark (not run by default)"
    )
    exit(0)
}
if args.first == "--single", args.count == 2 {
    if args[1] == "peer" || args[1] == "peer-1e6" {
        do { try runPeer(count: args[1] == "peer" ? 10_000_000 : 1_000_000, rounds: args[1] == "peer" ? 3 : 1) } catch {
            FileHandle.standardError.write(Data("qcow2sim-bench: error: \(error)\n".utf8))
            exit(70)
        }
        exit(0)
    }
    if args[1] == "core" {
        do { try runCore(rounds: 5) } catch {
            FileHandle.standardError.write(Data("qcow2sim-bench: error: \(error)\n".utf8))
            exit(70)
        }
        exit(0)
    }
    if args[1] == "parse" {
        do { try runParse() } catch {
            FileHandle.standardError.write(Data("qcow2sim-bench: error: \(error)\n".utf8))
            exit(70)
        }
        exit(0)
    }
    guard let b = benchmarks.first(where: { $0.name == args[1] }) else {
        FileHandle.standardError.write(Data("qcow2sim-bench: error: unknown benchmark '\(args[1])'\n".utf8))
        exit(64)
    }
    do { try runSingle(b) } catch {
        FileHandle.standardError.write(Data("qcow2sim-bench: error: \(error)\n".utf8))
        exit(70)
    }
    exit(0)
}
let names = args.isEmpty ? benchmarks.map(\.name) + ["parse", "peer", "core"] : args
for name in names {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    p.arguments = ["--single", name]
    do {
        try p.run()
        p.waitUntilExit()
    } catch {
        FileHandle.standardError.write(Data("qcow2sim-bench: error: cannot run '\(name)': \(error)\n".utf8))
        exit(70)
    }
}

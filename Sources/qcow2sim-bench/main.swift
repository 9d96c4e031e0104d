import Foundation
import Qcow2Sim
import TraceKit

// Deterministic benchmarks of qcow2sim. Each benchmark runs in its own child process so its
// peak RSS (VmHWM) is its own. Usage:
//   qcow2sim-bench                 run every benchmark
//   qcow2sim-bench NAME…           run the named ones (see --list)
//   qcow2sim-bench --single NAME   run one in this process (used by the parent)

/// One benchmark: a simulation over a generated workload.
struct Benchmark {
    var name: String
    var summary: String
    var config: SimulationConfig
    var workload: WorkloadSpec
}

let TiB: UInt64 = 1 << 40

let benchmarks: [Benchmark] = [
    Benchmark(
        name: "read-1e6", summary: "10^6 uniform 4 KiB reads, 1 TiB populated (preallocation=metadata), 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: "l2-cache-size=1M"),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "read-1e7", summary: "10^7 uniform 4 KiB reads, 1 TiB populated, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: "l2-cache-size=1M"),
        workload: WorkloadSpec(pattern: .uniform, count: 10_000_000, diskSize: TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "read-1e6-64T", summary: "10^6 uniform 4 KiB reads, 64 TiB populated, 1 MiB L2 cache (memory vs virtual size)",
        config: SimulationConfig(virtualSize: 64 * TiB, populate: .full, driveOptions: "l2-cache-size=1M"),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: 64 * TiB, requestSize: 4096, readRatio: 1, seed: 1)),
    Benchmark(
        name: "write50-1e6", summary: "10^6 uniform 4 KiB requests, 50 % writes, fresh 1 TiB image, default caches",
        config: SimulationConfig(virtualSize: TiB),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 0.5, seed: 1)),
    Benchmark(
        name: "write50-1e6-1M", summary: "10^6 uniform 4 KiB requests, 50 % writes, fresh 1 TiB image, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, driveOptions: "l2-cache-size=1M"),
        workload: WorkloadSpec(pattern: .uniform, count: 1_000_000, diskSize: TiB, requestSize: 4096, readRatio: 0.5, seed: 1)),
    Benchmark(
        name: "zipf-1e7", summary: "10^7 zipf(0.99) 4 KiB reads, 1 TiB populated, 1 MiB L2 cache",
        config: SimulationConfig(virtualSize: TiB, populate: .full, driveOptions: "l2-cache-size=1M"),
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

let args = Array(CommandLine.arguments.dropFirst())
if args.first == "--read", args.count == 2 {
    do { try runRead(args[1]) } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        exit(65)
    }
    exit(0)
}
if args.first == "--list" {
    for b in benchmarks { print("\(b.name): \(b.summary)") }
    print("parse: blktrace binary and blkparse text parse throughput")
    exit(0)
}
if args.first == "--single", args.count == 2 {
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
let names = args.isEmpty ? benchmarks.map(\.name) + ["parse"] : args
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

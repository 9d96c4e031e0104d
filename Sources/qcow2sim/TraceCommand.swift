import Foundation
import TraceKit

/// `qcow2sim trace info|convert`: summarize a trace or convert it to the native format or a
/// qemu-io script.
enum TraceCommand {
    static let help = """
        usage: qcow2sim trace info TRACE [--format text|json] [--cluster-size 64K] [mapping options]
               qcow2sim trace convert TRACE -o OUT [--to native|binary|qemu-io] [mapping options]

        TRACE is any supported trace (compressed with gzip, bzip2, xz or zstd too), '-' for
        standard input, or a directory of blktrace per-CPU files. `--to binary` writes the
        binary native format (fixed 32-byte records; the fastest to read; layout in README).

        mapping options:
          --trace-format NAME   \(TraceFormat.names.joined(separator: ", ")) (default: by content)
          --device ID           keep one device: MAJ,MIN (blktrace/blkparse), HOST[:DISK] (msr),
                                LUN (systor), volume (tencent), device (alibaba), ASU (spc),
                                file (fio), blk pointer (qemu)
          --event Q|D|C         blktrace/blkparse action that defines a request (default D)
          --size BYTES          disk size; requests beyond it are rejected unless --beyond says
          --beyond reject|wrap|clip
          --offset-shift BYTES  added to every offset (may be negative)
          --time-scale X        multiply timestamps by X
          --reorder-window N    sort timestamps within N records (0 = reject out-of-order)
          --no-rebase           keep absolute timestamps

        """

    static func run(_ args: [String]) -> Int32 {
        guard let sub = args.first, sub != "--help", sub != "-h" else {
            let status = Console.help(help, command: "trace")
            return args.isEmpty && status == 0 ? 64 : status
        }
        if args.contains("--help") || args.contains("-h") {
            return Console.help(help, command: "trace")
        }
        let rest = Array(args.dropFirst())
        do {
            switch sub {
            case "info": return try info(rest)
            case "convert": return try convert(rest)
            default: throw UsageError("unknown subcommand '\(sub)' (expected info or convert)")
            }
        } catch {
            return reportFailure(error, command: "trace \(sub)")
        }
    }

    static let mappingOptions: Set<String> = [
        "--trace-format", "--device", "--event", "--size", "--beyond",
        "--offset-shift", "--time-scale", "--reorder-window",
    ]

    /// Opens the trace named by the single positional argument with the mapping options;
    /// `diskSize` applies when `--size` is not given.
    static func open(_ a: Arguments, diskSize: UInt64? = nil) throws -> AnyTraceReader {
        let path = try a.positionals(1, what: "TRACE argument")[0]
        let (format, o) = try mapping(a, diskSize: diskSize)
        return try TraceFile.open(path: path, format: format, options: o)
    }

    /// The trace format and mapping options the arguments give (`sweep` opens many traces,
    /// each once per point, with them).
    static func mapping(_ a: Arguments, diskSize: UInt64? = nil) throws -> (TraceFormat?, TraceOptions) {
        var o = TraceOptions()
        o.device = a.value("--device")
        if let e = a.value("--event") {
            guard let ev = TraceOptions.BlktraceEvent(rawValue: e.uppercased()) else {
                throw UsageError("invalid value '\(e)' for --event (expected one of: Q, D, C)")
            }
            o.event = ev
        }
        o.diskSize = try a.value("--size").map { try TraceArgs.bytes($0, "--size") } ?? diskSize
        if let b = a.value("--beyond") {
            guard let v = TraceOptions.BeyondDisk(rawValue: b) else {
                throw UsageError("invalid value '\(b)' for --beyond (expected one of: reject, wrap, clip)")
            }
            o.beyondDisk = v
        }
        if let s = a.value("--offset-shift") {
            let negative = s.hasPrefix("-")
            let magnitude = try TraceArgs.bytes(negative ? String(s.dropFirst()) : s, "--offset-shift")
            guard magnitude <= UInt64(Int64.max) else {
                throw UsageError("invalid value '\(s)' for --offset-shift (out of range)")
            }
            o.offsetShift = negative ? -Int64(magnitude) : Int64(magnitude)
        }
        if let t = a.value("--time-scale") {
            // A negative scale reverses time, which every reader would then reject record by record.
            o.timeScale = try TraceArgs.nonNegative(t, "--time-scale")
        }
        if let w = a.value("--reorder-window") {
            guard let n = Int(w), n >= 0 else {
                throw UsageError("invalid value '\(w)' for --reorder-window (expected a non-negative integer)")
            }
            o.reorderWindow = n
        }
        if a.has("--no-rebase") { o.rebaseTime = false }
        let format = try a.value("--trace-format").map { try TraceFormat.parse($0) }
        return (format, o)
    }

    static func info(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: mappingOptions.union(["--format", "--cluster-size"]), flags: ["--no-rebase"])
        let output = try a.choice("--format", ["text", "json"], default: "text")
        let cluster = try a.value("--cluster-size").map { try TraceArgs.bytes($0, "--cluster-size") } ?? 65536
        guard cluster >= 512, cluster <= 2 << 20, cluster & (cluster - 1) == 0 else {
            throw UsageError(
                "invalid value '\(a.value("--cluster-size") ?? "")' for --cluster-size (expected a power of two from 512 to 2M)")
        }
        let path = try a.positionals(1, what: "TRACE argument")[0]
        var (format, o) = try mapping(a)
        o.tagVolumes = true
        var reader = try TraceFile.open(path: path, format: format, options: o)
        var summary = TraceSummary(clusterSize: cluster)
        var volumes = VolumeIndex(footprint: true)
        while let r = try reader.next() {
            summary.add(r)
            volumes.add(r, names: r.volume > 0 ? reader.volumeNames : [])
        }
        let text: String
        if output == "json" {
            // The summary's object with one more key, the volumes (empty for a format without
            // a volume field).
            var json = summary.json()
            if json.hasSuffix("\n}\n") { json.removeLast(3) }
            text = json + ",\n  \"volumes\": " + volumes.jsonArray(indent: "  ") + "\n}\n"
        } else {
            text = "format         \(reader.format.rawValue)\n" + summary.text() + (volumes.volumes.isEmpty ? "" : volumes.text())
        }
        try Console.print(text)
        return 0
    }

    static func convert(_ args: [String]) throws -> Int32 {
        let a = try Arguments(
            args, options: mappingOptions.union(["--to", "--output"]), flags: ["--no-rebase"], aliases: ["-o": "--output"])
        let to = try a.choice("--to", ["native", "binary", "qemu-io"], default: "native")
        guard let outPath = a.value("--output") else { throw UsageError("missing -o OUT (use '-o -' for standard output)") }
        var reader = try open(a)
        let out = try OutputFile(path: outPath)
        do {
            if to == "native" {
                // The time column is kept when the first record has one.
                let first = try reader.next()
                var w = NativeTraceWriter(withTime: first?.time != nil)
                if let first { w.append(first) }
                while let r = try reader.next() {
                    w.append(r)
                    if w.bytes.count >= 1 << 20 { try out.write(w.take()) }
                }
                try out.write(w.take())
            } else if to == "binary" {
                var w = NativeBinaryTraceWriter()
                while let r = try reader.next() {
                    w.append(r)
                    if w.bytes.count >= 1 << 20 { try out.write(w.take()) }
                }
                try out.write(w.take())
                if w.count == 0 { throw TraceError(file: reader.fileName, location: .file, message: "empty trace (no records)") }
                try w.finish(out, path: outPath, announced: nil)
            } else {
                var w = QemuIOScriptWriter()
                while let r = try reader.next() {
                    w.append(r)
                    if w.bytes.count >= 1 << 20 { try out.write(w.take()) }
                }
                try out.write(w.take())
            }
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return 0
    }
}

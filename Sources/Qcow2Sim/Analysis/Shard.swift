import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `--shard K/N` (issue 16, item 4): this process runs shard K of N (K from 0, as Slurm numbers
/// array tasks). A run's work is a list of units with stable indices (a (trace, point) pair for
/// `sweep`, a point for `mrc`, a (configuration, trace, candidate size) triple for `advise`);
/// shard K runs the units whose index is K modulo N: round-robin over the sorted list, so the
/// shards differ by at most one unit and the assignment depends on nothing but K, N and the
/// command line (not on the machine or `--jobs`).
public struct ShardSpec: Equatable, Sendable, CustomStringConvertible {
    /// K: this shard, 0 ..< `count`.
    public var index: Int
    /// N: how many shards the run is split into.
    public var count: Int

    /// The most shards a run may be split into (Slurm's default `MaxArraySize` is 1001).
    public static let maxCount = 1_000_000

    /// Shard `index` of `count`.
    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// Parses `K/N` (the value of `--shard`).
    public static func parse(_ text: String) throws -> ShardSpec {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), parts[0].allSatisfy(\.isNumber),
            parts[1].allSatisfy(\.isNumber), n >= 1, n <= maxCount, k >= 0, k < n
        else {
            throw SimulationError.usage(
                "invalid value '\(text)' for --shard (expected K/N with N from 1 to \(maxCount) and K from 0 to N-1, e.g. --shard $SLURM_ARRAY_TASK_ID/4)"
            )
        }
        return ShardSpec(index: k, count: n)
    }

    /// Whether unit `unit` is this shard's.
    public func owns(_ unit: Int) -> Bool { unit % count == index }

    /// This shard's units of a run of `total` units, in order.
    public func units(of total: Int) -> [Int] { Array(stride(from: index, to: total, by: count)) }

    /// `K/N`.
    public var description: String { "\(index)/\(count)" }
}

/// A shard file that cannot be merged, or shards that do not make one run: exit 65 (data) or
/// 66 (a file that cannot be read).
public struct ShardError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong, naming the files.
    public var description: String
    /// The sysexits status.
    public var exitCode: Int32

    /// An error.
    public init(_ description: String, exitCode: Int32 = 65) {
        self.description = description
        self.exitCode = exitCode
    }
}

/// A trace file as the shards saw it: size and modification time, so that shards run on
/// different copies or versions of a trace are refused (a content hash would read every trace
/// once more; on a cluster's shared file system the size and mtime are the same for every node).
public struct TraceStamp: Codable, Equatable, Sendable {
    /// The trace as given on the command line.
    public var path: String
    /// Its size in bytes (nil: not a regular file, e.g. standard input).
    public var size: UInt64?
    /// Its modification time, nanoseconds since the epoch.
    public var mtimeNs: Int64?

    /// The stamp of `path` now (size and mtime nil when it cannot be stat'ed: the run then
    /// reports the trace's own error).
    public static func of(_ path: String) -> TraceStamp {
        var st = stat()
        guard path != "-", stat(path, &st) == 0 else { return TraceStamp(path: path, size: nil, mtimeNs: nil) }
        return TraceStamp(
            path: path, size: UInt64(st.st_size), mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    /// `PATH (SIZE bytes, modified DATE)`, for messages.
    public var text: String {
        guard let size, let mtimeNs else { return "\(path) (not a file)" }
        let seconds = Double(mtimeNs) / 1e9
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return "\(path) (\(size) bytes, modified \(f.string(from: Date(timeIntervalSince1970: seconds))))"
    }

    enum CodingKeys: String, CodingKey {
        case path, size
        case mtimeNs = "mtime_ns"
    }
}

/// What one shard writes (`--shard K/N`): the run's fingerprint (the command, its canonical
/// options and its traces' stamps), K/N, the run's unit count, this shard's unit indices and
/// each unit's results; `qcow2sim merge` checks the fingerprints and assembles the output.
public struct ShardFile: Codable, Equatable, Sendable {
    /// Marks the file as a shard (`qcow2sim-shard`).
    public var kind = ShardFile.kindName
    /// The file format's version (1).
    public var version = 1
    /// `sweep`, `mrc` or `advise`.
    public var command: String
    /// The command's arguments as given, without `--shard K/N`: what `merge` parses again to
    /// rebuild the grid and the output.
    public var arguments: [String]
    /// The options as the run understood them, sorted by name (`--size=8G`), without those that
    /// do not change the results (`--shard`, `--output`, `--format`, `--jobs`, progress):
    /// shards with the same options given in another order are the same run.
    public var options: [String]
    /// The traces, in order.
    public var traces: [TraceStamp]
    /// K.
    public var shard: Int
    /// N.
    public var shards: Int
    /// How many units the whole run has.
    public var units: Int
    /// This shard's results, one per unit, in unit order.
    public var results: [ShardUnit]

    /// `kind`'s value.
    public static let kindName = "qcow2sim-shard"

    /// A shard file.
    public init(
        command: String, arguments: [String], options: [String], traces: [TraceStamp], spec: ShardSpec, units: Int,
        results: [ShardUnit]
    ) {
        self.command = command
        self.arguments = arguments
        self.options = options
        self.traces = traces
        shard = spec.index
        shards = spec.count
        self.units = units
        self.results = results
    }

    /// The file's JSON (one unit per line: a large sweep's shard stays greppable).
    public func json() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self) + Data("\n".utf8)
    }

    /// Reads a shard file; `name` is the path as given, for messages.
    public static func read(_ name: String) throws -> ShardFile {
        guard let data = FileManager.default.contents(atPath: name) else {
            let why = FileManager.default.fileExists(atPath: name) ? "cannot be read" : "No such file or directory"
            throw ShardError("\(name): \(why)", exitCode: 66)
        }
        let file: ShardFile
        do {
            file = try JSONDecoder().decode(ShardFile.self, from: data)
        } catch {
            throw ShardError("\(name): not a qcow2sim shard file (expected the JSON that sweep, mrc or advise --shard K/N writes)")
        }
        guard file.kind == kindName, file.version == 1 else {
            throw ShardError("\(name): not a qcow2sim shard file of version 1 (kind '\(file.kind)', version \(file.version))")
        }
        let spec = ShardSpec(index: file.shard, count: file.shards)
        guard file.shards >= 1, file.shard >= 0, file.shard < file.shards, file.units >= 0,
            file.results.map(\.index) == spec.units(of: file.units)
        else {
            throw ShardError("\(name): damaged shard file (its units are not those of shard \(file.shard)/\(file.shards) of \(file.units))")
        }
        return file
    }

    /// Checks that `files` (path, contents) are every shard of one run, each once, and returns
    /// every unit's results in unit order with the first shard's file. The messages name the files.
    public static func assemble(_ files: [(name: String, file: ShardFile)]) throws -> (first: ShardFile, units: [ShardUnit]) {
        guard let (name0, f0) = files.first else { throw ShardError("no shard files given", exitCode: 64) }
        for (name, f) in files.dropFirst() {
            if f.command != f0.command {
                throw ShardError("\(name) is a shard of \(f.command), \(name0) of \(f0.command): they are not one run")
            }
            if f.shards != f0.shards {
                throw ShardError(
                    "\(name) is shard \(f.shard)/\(f.shards) but \(name0) is shard \(f0.shard)/\(f0.shards): every shard of a run has the same N"
                )
            }
            if f.options != f0.options {
                let a = Set(f0.options), b = Set(f.options)
                let only0 = f0.options.filter { !b.contains($0) }, only1 = f.options.filter { !a.contains($0) }
                var what: [String] = []
                if !only0.isEmpty { what.append("only \(name0) has \(only0.joined(separator: " "))") }
                if !only1.isEmpty { what.append("only \(name) has \(only1.joined(separator: " "))") }
                if what.isEmpty { what.append("a repeated option's values are in another order") }
                throw ShardError("\(name) and \(name0) are shards of different runs: the options differ (\(what.joined(separator: "; ")))")
            }
            if f.traces.map(\.path) != f0.traces.map(\.path) {
                throw ShardError(
                    "\(name) and \(name0) are shards of different runs: the traces differ (\(name0): \(f0.traces.map(\.path).joined(separator: " ")); \(name): \(f.traces.map(\.path).joined(separator: " ")))"
                )
            }
            for (t0, t) in zip(f0.traces, f.traces) where t0 != t {
                throw ShardError(
                    "\(name) and \(name0) saw different versions of trace \(t.path): \(name0) \(t0.text), \(name) \(t.text)")
            }
            if f.units != f0.units {
                throw ShardError("\(name) and \(name0) are shards of different runs: \(f.units) units against \(f0.units)")
            }
        }
        var byShard = [Int: String]()
        for (name, f) in files {
            if let other = byShard[f.shard] {
                throw ShardError("\(other) and \(name) are both shard \(f.shard)/\(f.shards)")
            }
            byShard[f.shard] = name
        }
        let missing = (0..<f0.shards).filter { byShard[$0] == nil }
        if !missing.isEmpty {
            let list = missing.prefix(10).map { "\($0)/\(f0.shards)" }.joined(separator: ", ") + (missing.count > 10 ? ", …" : "")
            let given = files.sorted { $0.file.shard < $1.file.shard }.map { "\($0.name) (\($0.file.shard)/\($0.file.shards))" }
            throw ShardError(
                "missing \(missing.count == 1 ? "shard" : "\(missing.count) shards") \(list): merge needs every K from 0 to \(f0.shards - 1) of --shard K/\(f0.shards) (given: \(given.joined(separator: ", ")))"
            )
        }
        var units = [ShardUnit?](repeating: nil, count: f0.units)
        for (_, f) in files { for u in f.results { units[u.index] = u } }
        let sorted = files.sorted { $0.file.shard < $1.file.shard }
        return (sorted[0].file, units.compactMap { $0 })
    }
}

/// One unit's results in a shard file: the rows of a `sweep` or `mrc` point, or one candidate
/// point of `advise`'s curve.
public struct ShardUnit: Codable, Equatable, Sendable {
    /// The unit's index in the run.
    public var index: Int
    /// `sweep` and `mrc`: the point's rows.
    public var rows: [ShardRow]?
    /// `sweep` and `mrc`: the L2 bytes that cover the point's top image (the HTML page's marker).
    public var fullCoverage: UInt64?
    /// `advise`: the candidate's counts.
    public var sample: CurveSample?
    /// `--per-volume`: the volume's virtual size (merge rebuilds the first volume's grid with it).
    public var volumeSize: UInt64?
    /// `advise --per-volume`: the volume's advice.
    public var advice: VolumeAdvice?

    /// A unit.
    public init(
        index: Int, rows: [ShardRow]? = nil, fullCoverage: UInt64? = nil, sample: CurveSample? = nil, volumeSize: UInt64? = nil,
        advice: VolumeAdvice? = nil
    ) {
        self.advice = advice
        self.index = index
        self.rows = rows
        self.fullCoverage = fullCoverage
        self.sample = sample
        self.volumeSize = volumeSize
    }

    enum CodingKeys: String, CodingKey {
        case index, rows
        case fullCoverage = "full_coverage"
        case sample
        case volumeSize = "volume_size"
        case advice
    }
}

/// A ``SweepRow`` without what the grid gives back at merge time (trace, values, policy), its
/// numbers exact: counters as integers, doubles as their IEEE bit patterns (a decimal rendering
/// would have to round-trip exactly for the output to be byte-identical).
public struct ShardRow: Codable, Equatable, Sendable {
    /// ``SweepRow/image``.
    public var image: Int
    /// ``SweepRow/cache``.
    public var cache: String
    /// ``SweepRow/entrySize``.
    public var entrySize: UInt64
    /// ``SweepRow/entries``.
    public var entries: Int
    /// ``SweepRow/stats``, as ``EncodedStats``.
    public var stats: EncodedStats
    /// ``SweepRow/memoryMean``'s bit pattern.
    public var memoryMean: UInt64
    /// ``SweepRow/requests``.
    public var requests: Int
    /// ``SweepRow/whatIf``.
    public var whatIf: [String]
    /// ``SweepRow/prediction``: latency and IOPS bit patterns.
    public var prediction: [UInt64]?
    /// ``SweepRow/method``.
    public var method: String?
    /// `--per-volume`: the row's values (each volume has its own grid), as (text, number) pairs.
    public var values: [EncodedValue]?
    /// `--per-volume`: ``SweepRow/policy``.
    public var policy: String?
    /// `--per-volume`: ``SweepRow/volume``.
    public var volume: String?
    /// `--per-volume`: ``SweepRow/virtualSize``.
    public var virtualSize: UInt64?

    /// A sweep value in a shard file.
    public struct EncodedValue: Codable, Equatable, Sendable {
        /// ``SweepValue/text``.
        public var text: String
        /// ``SweepValue/number``.
        public var number: UInt64?
    }

    /// The row as a shard stores it; `keepingPoint` keeps the values, policy and volume (a
    /// `--per-volume` row, whose grid is its volume's).
    public init(_ r: SweepRow, keepingPoint: Bool = false) {
        if keepingPoint {
            values = r.values.map { EncodedValue(text: $0.text, number: $0.number) }
            policy = r.policy
            volume = r.volume
            virtualSize = r.virtualSize
        }
        image = r.image
        cache = r.cache
        entrySize = r.entrySize
        entries = r.entries
        stats = EncodedStats(r.stats)
        memoryMean = r.memoryMean.bitPattern
        requests = r.requests
        whatIf = r.whatIf
        prediction = r.prediction.map { [$0.latencyUs.bitPattern, $0.iops.bitPattern] }
        method = r.method
    }

    /// The row back, with what the grid gives (`point`; nil for a row that kept its own).
    public func row(trace: String, point: SweepPoint?) throws -> SweepRow {
        var p: Prediction?
        if let bits = prediction {
            guard bits.count == 2 else { throw ShardError("damaged shard row: a prediction of \(bits.count) numbers") }
            var q = Prediction(latencyUs: 0, iops: 0)
            q.latencyUs = Double(bitPattern: bits[0])
            q.iops = Double(bitPattern: bits[1])
            p = q
        }
        guard let values = point?.values ?? values?.map({ SweepValue(text: $0.text, number: $0.number) }),
            let policy = point?.config.policy ?? policy
        else { throw ShardError("damaged shard row: no point values") }
        return SweepRow(
            trace: trace, values: values, policy: policy, image: image, cache: cache, entrySize: entrySize,
            entries: entries, stats: try stats.stats(), memoryMean: Double(bitPattern: memoryMean), requests: requests,
            whatIf: whatIf, prediction: p, method: method, volume: volume, virtualSize: virtualSize)
    }

    enum CodingKeys: String, CodingKey {
        case image, cache
        case entrySize = "entry_size"
        case entries, stats
        case memoryMean = "memory_mean_bits"
        case requests
        case whatIf = "what_if"
        case prediction = "prediction_bits"
        case method, values, policy, volume
        case virtualSize = "virtual_size"
    }
}

/// ``CacheStats`` as one array of numbers (the counters in declaration order, the byte-seconds
/// integral as its bit pattern), exact whatever the values.
public struct EncodedStats: Codable, Equatable, Sendable {
    /// The numbers.
    public var values: [UInt64]

    /// The counters of `s`.
    public init(_ s: CacheStats) {
        let counts = [
            s.lookups, s.hits, s.misses, s.emptyGets, s.evictions, s.dirtyEvictions, s.writebacks, s.flushes, s.cleaned,
            s.missesCold, s.missesEvicted, s.missesCleaned, s.missesDiscarded,
        ]
        values =
            counts.map { UInt64(bitPattern: Int64($0)) } + [
                s.bytesRead, s.bytesWritten, s.memoryBytes, s.memoryPeakBytes, s.memoryByteSeconds.bitPattern,
            ]
    }

    /// The counters back.
    public func stats() throws -> CacheStats {
        guard values.count == 18 else { throw ShardError("damaged shard row: \(values.count) counters instead of 18") }
        let n = values.map { Int(Int64(bitPattern: $0)) }
        var s = CacheStats()
        (s.lookups, s.hits, s.misses, s.emptyGets, s.evictions, s.dirtyEvictions, s.writebacks) = (n[0], n[1], n[2], n[3], n[4], n[5], n[6])
        (s.flushes, s.cleaned, s.missesCold, s.missesEvicted, s.missesCleaned, s.missesDiscarded) = (n[7], n[8], n[9], n[10], n[11], n[12])
        (s.bytesRead, s.bytesWritten, s.memoryBytes, s.memoryPeakBytes) = (values[13], values[14], values[15], values[16])
        s.memoryByteSeconds = Double(bitPattern: values[17])
        return s
    }

    /// Decodes the array alone.
    public init(from decoder: Decoder) throws { values = try [UInt64](from: decoder) }
    /// Encodes the array alone.
    public func encode(to encoder: Encoder) throws { try values.encode(to: encoder) }
}

/// One candidate point of `advise`'s curve on one trace: what the choice and the document need
/// of its run (``Advisor``).
public struct CurveSample: Codable, Equatable, Sendable {
    /// Trace records replayed.
    public var requests: Int
    /// Each image's L2 counters, base first.
    public var l2: [EncodedStats]
    /// With a cost model, at the largest candidate (full coverage): the predicted mean latency
    /// (µs)'s bit pattern, as `CostModel.predict` gives it.
    public var latencyBits: UInt64?

    /// The sample of `report` (a run of `config`).
    public init(_ report: SimulationReport, config: SimulationConfig, cost: CostModel?) {
        requests = report.requests
        l2 = report.images.map { EncodedStats($0.l2) }
        latencyBits = cost.map { $0.predict(report, config: config).latencyUs.bitPattern }
    }

    enum CodingKeys: String, CodingKey {
        case requests, l2
        case latencyBits = "latency_bits"
    }
}

/// One volume's advice in a shard file (`advise --per-volume --shard`): the document as a
/// base64 binary property list, whose doubles are their 8 bytes (a decimal rendering would
/// have to round-trip exactly for the fleet summary to be byte-identical).
public struct VolumeAdvice: Codable, Equatable, Sendable {
    /// The volume.
    public var volume: String
    /// The ``AdviceDocument``, binary plist, base64.
    public var document64: String

    /// Encodes `document`.
    public init(volume: String, _ document: AdviceDocument) throws {
        self.volume = volume
        let e = PropertyListEncoder()
        e.outputFormat = .binary
        document64 = try e.encode(document).base64EncodedString()
    }

    /// The document back.
    public func document() throws -> AdviceDocument {
        guard let data = Data(base64Encoded: document64),
            let d = try? PropertyListDecoder().decode(AdviceDocument.self, from: data)
        else { throw ShardError("damaged shard: the advice of volume \(volume) cannot be read") }
        return d
    }

    enum CodingKeys: String, CodingKey {
        case volume
        case document64 = "document_plist_base64"
    }
}

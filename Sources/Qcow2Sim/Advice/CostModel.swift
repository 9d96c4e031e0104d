import Foundation

/// Prices the host I/O a simulated run did (issue 12, item 2): a guest request at queue depth 1
/// takes `request_us` plus, for every count the simulation reports, count × its cost; the mean
/// latency is the total over the requests and IOPS = 1 / latency.
///
/// Assumptions (README, "Advice and predicted IOPS"): one request in flight (queue depth 1), the
/// host page cache off (`cache=none`, O_DIRECT, so every metadata load reaches the device), and
/// costs that do not depend on where on the device the I/O lands. The model breaks with deep
/// queues (requests overlap, misses of one hide behind another's data I/O), with the host page
/// cache on (a miss is then a memory copy after the first one) and for devices whose latency
/// depends on the pattern (rotating disks, thin-provisioned volumes).
///
/// The file is JSON (`--cost FILE`, written by `qcow2sim calibrate`); every key is in
/// `CodingKeys`, unknown keys are refused (a misspelt key would silently price nothing).
public struct CostModel: Codable, Equatable, Sendable {
    /// The schema version this code writes and reads.
    public static let currentSchemaVersion = 1

    /// `schema_version`.
    public var schemaVersion = Self.currentSchemaVersion
    /// Where the numbers come from (`calibrate --dir …`, `calibrate --fit …`); informational.
    public var source: String?
    /// Microseconds every guest request costs whatever it does (the block layer, the syscalls,
    /// and the device round trip of a small data request).
    public var requestUs: Double
    /// Microseconds per KiB of guest data read from a data cluster.
    public var dataReadUsPerKiB: Double = 0
    /// Microseconds per KiB of guest data written.
    public var dataWriteUsPerKiB: Double = 0
    /// c0 of a metadata load: microseconds per cache miss that reads an entry from the image
    /// file (L2 slice or refcount block), whatever its size.
    public var metadataLoadUs: Double
    /// c1 of a metadata load: microseconds per KiB of the entry loaded, so a load of an entry of
    /// s KiB costs c(s) = c0 + c1·s.
    public var metadataLoadUsPerKiB: Double
    /// Microseconds per cache entry written back, whatever its size.
    public var writebackUs: Double = 0
    /// Microseconds per KiB of a written-back entry.
    public var writebackUsPerKiB: Double = 0
    /// Microseconds per KiB read by copy-on-write.
    public var cowReadUsPerKiB: Double = 0
    /// Microseconds per KiB of copy-on-write regions written.
    public var cowWriteUsPerKiB: Double = 0
    /// Microseconds per host flush (`bdrv_flush` of the image file: fdatasync).
    public var flushUs: Double = 0
    /// The points the numbers were fitted to, with what the model predicts for them
    /// (informational: written by `calibrate`, ignored by the model).
    public var points: [FitPoint]?

    /// A model with the three parameters every table fit gives; the other costs are 0.
    public init(requestUs: Double, metadataLoadUs: Double, metadataLoadUsPerKiB: Double, source: String? = nil) {
        self.requestUs = requestUs
        self.metadataLoadUs = metadataLoadUs
        self.metadataLoadUsPerKiB = metadataLoadUsPerKiB
        self.source = source
    }

    /// The JSON keys.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case schemaVersion = "schema_version"
        case source
        case requestUs = "request_us"
        case dataReadUsPerKiB = "data_read_us_per_kib"
        case dataWriteUsPerKiB = "data_write_us_per_kib"
        case metadataLoadUs = "metadata_load_us"
        case metadataLoadUsPerKiB = "metadata_load_us_per_kib"
        case writebackUs = "writeback_us"
        case writebackUsPerKiB = "writeback_us_per_kib"
        case cowReadUsPerKiB = "cow_read_us_per_kib"
        case cowWriteUsPerKiB = "cow_write_us_per_kib"
        case flushUs = "flush_us"
        case points
    }

    /// The cost keys (the numbers), in file order.
    static let costKeys: [CodingKeys] = [
        .requestUs, .dataReadUsPerKiB, .dataWriteUsPerKiB, .metadataLoadUs, .metadataLoadUsPerKiB, .writebackUs,
        .writebackUsPerKiB, .cowReadUsPerKiB, .cowWriteUsPerKiB, .flushUs,
    ]
    /// The keys a file must give.
    static let requiredKeys: Set<String> = [
        CodingKeys.requestUs.rawValue, CodingKeys.metadataLoadUs.rawValue, CodingKeys.metadataLoadUsPerKiB.rawValue,
    ]

    /// The cost of loading one entry of `bytes` bytes: c0 + c1·s.
    public func loadUs(entryBytes bytes: UInt64) -> Double {
        metadataLoadUs + metadataLoadUsPerKiB * Double(bytes) / 1024
    }

    /// The JSON the file holds (sorted keys, pretty-printed, final newline).
    public func json() throws -> String { try ReportFormat.json(self) }

    // MARK: - Reading a cost file

    /// Reads and checks a cost file; errors name the file and the line of the bad key
    /// (exit 65), or say the file cannot be read (exit 66).
    public static func load(path: String) throws(CostFileError) -> CostModel {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CostFileError(file: path, line: nil, message: "cannot read the cost file (\(Self.reason(path)))", exitCode: 66)
        }
        return try parse(data, file: path)
    }

    /// Why `path` cannot be read: missing, a directory, or unreadable.
    static func reason(_ path: String) -> String {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) { return "no such file" }
        return isDirectory.boolValue ? "it is a directory" : "permission denied"
    }

    /// Parses the bytes of a cost file named `file` in messages.
    public static func parse(_ data: Data, file: String) throws(CostFileError) -> CostModel {
        let text = String(decoding: data, as: UTF8.self)
        func fail(_ message: String, key: String? = nil) -> CostFileError {
            CostFileError(file: file, line: key.flatMap { Self.line(ofKey: $0, in: text) }, message: message, exitCode: 65)
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            // Foundation's message gives a character offset ("Invalid value around character 11."):
            // the line of that character locates it.
            let detail = (error as NSError).userInfo["NSDebugDescription"] as? String ?? "\(error)"
            throw CostFileError(
                file: file, line: Self.line(ofCharacterIn: detail, text: text), message: "not valid JSON: \(detail)")
        }
        guard let dict = object as? [String: Any] else { throw fail("expected a JSON object of costs ({\"request_us\": …})") }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = dict.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail(
                "unknown key '\(unknown)' (expected: \(CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")))",
                key: unknown)
        }
        if let missing = requiredKeys.sorted().first(where: { dict[$0] == nil }) {
            throw fail("missing key '\(missing)' (a cost file gives at least \(requiredKeys.sorted().joined(separator: ", ")))")
        }
        if let v = dict[CodingKeys.schemaVersion.rawValue] {
            guard let n = v as? NSNumber, !Self.isBoolean(v), n.doubleValue == Double(currentSchemaVersion) else {
                throw fail(
                    "schema_version \(v) is not supported (this qcow2sim reads version \(currentSchemaVersion))",
                    key: CodingKeys.schemaVersion.rawValue)
            }
        }
        if let v = dict[CodingKeys.source.rawValue], !(v is String) {
            throw fail("'source' must be a string", key: CodingKeys.source.rawValue)
        }
        var values: [CodingKeys: Double] = [:]
        for key in costKeys {
            guard let v = dict[key.rawValue] else { continue }
            // JSONSerialization gives booleans as NSNumber too: refuse them by their type.
            guard let n = v as? NSNumber, !Self.isBoolean(v) else {
                throw fail("'\(key.rawValue)' must be a number of microseconds, not \(Self.describe(v))", key: key.rawValue)
            }
            let d = n.doubleValue
            guard d.isFinite, d >= 0 else {
                throw fail("'\(key.rawValue)' must be a non-negative number of microseconds, not \(d)", key: key.rawValue)
            }
            values[key] = d
        }
        var model = CostModel(
            requestUs: values[.requestUs] ?? 0, metadataLoadUs: values[.metadataLoadUs] ?? 0,
            metadataLoadUsPerKiB: values[.metadataLoadUsPerKiB] ?? 0, source: dict[CodingKeys.source.rawValue] as? String)
        model.dataReadUsPerKiB = values[.dataReadUsPerKiB] ?? 0
        model.dataWriteUsPerKiB = values[.dataWriteUsPerKiB] ?? 0
        model.writebackUs = values[.writebackUs] ?? 0
        model.writebackUsPerKiB = values[.writebackUsPerKiB] ?? 0
        model.cowReadUsPerKiB = values[.cowReadUsPerKiB] ?? 0
        model.cowWriteUsPerKiB = values[.cowWriteUsPerKiB] ?? 0
        model.flushUs = values[.flushUs] ?? 0
        if dict[CodingKeys.points.rawValue] != nil {
            do {
                struct Points: Decodable { var points: [FitPoint] }
                model.points = try JSONDecoder().decode(Points.self, from: data).points
            } catch {
                throw fail("'points' must be a list of fitted points as calibrate writes them", key: CodingKeys.points.rawValue)
            }
        }
        guard model.requestUs > 0 || model.metadataLoadUs > 0 || model.metadataLoadUsPerKiB > 0 else {
            throw fail(
                "every cost is 0: a request would take no time (IOPS would be infinite)", key: CodingKeys.requestUs.rawValue)
        }
        return model
    }

    /// The 1-based line where `"key"` first appears in `text`.
    static func line(ofKey key: String, in text: String) -> Int? {
        guard let r = text.range(of: "\"\(key)\"") else { return nil }
        return text[..<r.lowerBound].reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
    }

    /// The line of the character offset a JSONSerialization message names ("around character 11").
    static func line(ofCharacterIn message: String, text: String) -> Int? {
        guard let r = message.range(of: "character ") else { return nil }
        let digits = message[r.upperBound...].prefix(while: \.isNumber)
        guard let offset = Int(digits) else { return nil }
        return text.utf8.prefix(offset).reduce(1) { $1 == 0x0a ? $0 + 1 : $0 }
    }

    /// Whether a JSONSerialization value is true or false (a boolean NSNumber casts to Bool, but
    /// so do the numbers 0 and 1: the type tells them apart).
    static func isBoolean(_ v: Any) -> Bool { type(of: v) == type(of: NSNumber(value: true)) as Any.Type }

    static func describe(_ v: Any) -> String {
        if isBoolean(v) { return "a boolean" }
        return switch v {
        case let s as String: "the string \"\(s)\""
        case is NSNull: "null"
        case is [Any]: "a list"
        case is [String: Any]: "an object"
        default: "\(v)"
        }
    }

    // MARK: - Prediction

    /// What the model predicts for `report` (a run of `config`).
    public func predict(_ report: SimulationReport, config: SimulationConfig) -> Prediction {
        var us = Double(report.requests) * requestUs
        for im in report.images {
            let s = im.image
            us += Double(s.guestBytesRead) / 1024 * dataReadUsPerKiB + Double(s.guestBytesWritten) / 1024 * dataWriteUsPerKiB
            us += Double(s.cowBytesRead) / 1024 * cowReadUsPerKiB + Double(s.cowBytesWritten) / 1024 * cowWriteUsPerKiB
            for (st, size) in [(im.l2, im.sizing.l2EntrySize), (im.refcount, im.sizing.refcountEntrySize)] {
                us += Double(st.misses - st.emptyGets) * loadUs(entryBytes: size)
                us += Double(st.writebacks) * (writebackUs + writebackUsPerKiB * Double(size) / 1024)
            }
        }
        us += Double(HostFlushes.count(report, config: config)) * flushUs
        let latency = report.requests > 0 ? us / Double(report.requests) : requestUs
        return Prediction(latencyUs: latency, iops: latency > 0 ? 1e6 / latency : 0)
    }
}

/// A model's prediction for one run.
public struct Prediction: Equatable, Sendable, Codable {
    /// Mean time per request, microseconds (`predicted_latency_us`), to 6 significant digits.
    public var latencyUs: Double
    /// Requests per second at queue depth 1 (`predicted_iops`), to 6 significant digits.
    public var iops: Double

    /// A prediction (values rounded as the reports print them).
    public init(latencyUs: Double, iops: Double) {
        self.latencyUs = ReportFormat.rounded(latencyUs)
        self.iops = ReportFormat.rounded(iops)
    }

    enum CodingKeys: String, CodingKey {
        case latencyUs = "predicted_latency_us"
        case iops = "predicted_iops"
    }
}

/// One point a cost model was fitted to: what was measured (or published) and what the fitted
/// model gives for it.
public struct FitPoint: Codable, Equatable, Sendable {
    /// What the point is (`20G cluster 64K entry 64K cache 1M`).
    public var label: String
    /// Measured or published IOPS.
    public var iops: Double
    /// The fitted model's IOPS.
    public var predictedIops: Double
    /// (predicted − measured) / measured, in percent.
    public var errorPct: Double

    /// A point; the error is computed.
    public init(label: String, iops: Double, predictedIops: Double) {
        self.label = label
        self.iops = ReportFormat.rounded(iops)
        self.predictedIops = ReportFormat.rounded(predictedIops)
        errorPct = ReportFormat.rounded((predictedIops - iops) / iops * 100)
    }

    enum CodingKeys: String, CodingKey {
        case label, iops
        case predictedIops = "predicted_iops"
        case errorPct = "error_pct"
    }
}

/// A bad cost or table file: the file, the line when known, the message and the exit code (65
/// bad data, 66 cannot read).
public struct CostFileError: Error, CustomStringConvertible, Equatable {
    /// The file as given.
    public var file: String
    /// 1-based line, when the problem has one.
    public var line: Int?
    /// What is wrong.
    public var message: String
    /// sysexits code.
    public var exitCode: Int32

    /// Creates an error.
    public init(file: String, line: Int?, message: String, exitCode: Int32 = 65) {
        self.file = file
        self.line = line
        self.message = message
        self.exitCode = exitCode
    }

    /// `file:line: error: message`, compiler-style.
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): error: \(message)" }
}

/// Host flushes (`bdrv_flush` of an image's file, an fdatasync on Linux) a run makes, derived
/// from the counted events: QEMU's `qcow2_cache_flush` writes a cache and then flushes the file,
/// but its `qcow2_cache_write` (`qcow2_write_caches`, the block layer's flush-to-OS) prints the
/// same `qcow2_cache_flush` event and flushes nothing; the block layer then flushes the file once
/// (`bdrv_co_flush`).
///
/// So for the writable top image: every cache flush event, less the two writes of each
/// block-layer flush (a guest flush, each write or write-zeroes in writethrough mode, §7.1, and
/// the close, §10), plus that block-layer flush's own one. Read-only images flush nothing
/// (`bdrv_co_flush` returns early), and `cache=unsafe` skips every file flush. Not counted: the
/// flush a write-back after a copy-on-write adds (`depends_on_flush`, which prints no event).
public enum HostFlushes {
    /// The host flushes of `report`, a run of `config`.
    public static func count(_ report: SimulationReport, config: SimulationConfig) -> Int {
        guard config.cacheMode != .unsafe, !config.readOnly, let top = report.images.last else { return 0 }
        let ops = report.requestsByOp
        var blockFlushes = (ops[.flush] ?? 0) + 1
        if config.cacheMode.writethrough { blockFlushes += (ops[.write] ?? 0) + (ops[.writeZeroes] ?? 0) }
        let events = top.l2.flushes + top.refcount.flushes
        return max(0, events - 2 * blockFlushes) + blockFlushes
    }
}

import Foundation
import QcowTestSupport
import Testing

@testable import TraceKit

/// Seeded mutation fuzzing over every reader: 10⁵ small inputs derived from valid seeds, each
/// read to the end or to its first error. A crash (trap, overflow, out-of-bounds) fails the run;
/// every other outcome is checked against the contract RULES.md and the readers' documentation
/// state, and a failing input is reported with its seed (replay it with `TraceFuzz.input(seed:corpus:)`).
@Suite struct FuzzTests {
    /// Each built-in seed is the valid input it claims to be: read with detection, it gives the
    /// requests counted by hand from its text (blkparse/blktrace: only the `D` events, the
    /// default `--event`; vscsi: INQUIRY 0x12 skipped; SYSTOR/Tencent/Alibaba rows sorted by time).
    /// A seed that were rejected would leave its reader fuzzed with garbage only.
    @Test func everySeedIsAValidInputOfItsFormat() {
        let corpus = TraceFuzz.seedCorpus()
        let expected: [(TraceFormat, [TraceRecord.Op])] = [
            (.native, [.write, .read, .discard, .writeZeroes, .flush]),
            // `D RA 2348060440 + 8` and `D FWS` (an empty preflush write: a flush).
            (.blkparse, [.read, .flush]),
            // write, read, trim, sync (wait, add and open are not I/O).
            (.fio, [.write, .read, .discard, .flush]),
            (.fio, [.discard, .write]),
            // 2a WRITE(10), 28 READ(10).
            (.vscsiCSV, [.write, .read]),
            (.msr, [.write, .read]),
            // 1456095145.126285 W before 1456095145.133076 R.
            (.systor, [.write, .read]),
            // 1538323199 IOType 0 before 1538323200 IOType 1.
            (.tencent, [.read, .write]),
            // 1577808000000000 W before 1577808000000100 R.
            (.alibaba, [.write, .read]),
            (.spc, [.write, .read]),
            // flags 0x16 = BDRV_REQ_ZERO_WRITE | BDRV_REQ_MAY_UNMAP | BDRV_REQ_FUA (include/block/block-common.h).
            (.qemu, [.writeZeroes, .read, .flush]),
            // Three issue (7) events, all at sector 2048: READ|FUA, WRITE|DISCARD, and WRITE|FLUSH of
            // 0 bytes. The read follows a requeue (6) of sector 2048, so the reader takes it as that
            // request's re-issue and gives no record; remap, queue and notify are not requests.
            (.blktrace, [.discard, .flush]),
            // 28 READ(10), 2a WRITE(10), 12 INQUIRY (skipped), 88 READ(16).
            (.vscsi, [.read, .write, .read]),
        ]
        #expect(corpus.count == expected.count)
        for (i, (seed, (format, ops))) in zip(corpus, expected).enumerated() {
            #expect(TraceFormat.detect(seed[...]) == format, "seed \(i)")
            switch TraceFixtures.readBytes(seed, fileName: "seed", format: nil) {
            case .success(let r): #expect(r.map(\.op) == ops, "seed \(i)")
            case .failure(let e): Issue.record("seed \(i) (\(format)) rejected: \(e)")
            }
        }
    }

    /// Every mutated input is either accepted with records that keep the mapping stage's
    /// promises, or rejected with a `TraceError` (exit 65, data error) located inside the input:
    /// a line that exists, a byte offset before its end, or the whole file for the two
    /// whole-file messages. Anything else — another error type, a line past the end, a request
    /// beyond the disk bound, times out of order — is a bug the seed reproduces.
    @Test func hundredThousandMutatedInputsKeepTheReaderContract() throws {
        let corpus = TraceFuzz.seedCorpus(
            extraDirectory: SharedTraces.directoryIfAvailable(for: "the public traces as extra fuzz seeds"))
        var accepted = 0
        var rejected = 0
        var failures = 0
        for seed in 0..<UInt64(100_000) where failures < 20 {
            let b = TraceFuzz.input(seed: seed, corpus: corpus)
            let (format, options) = TraceFuzz.configuration(seed: seed)
            if let problem = Self.check(b, format: format, options: options, accepted: &accepted, rejected: &rejected) {
                failures += 1
                Issue.record("seed \(seed) (format \(format?.rawValue ?? "detected")): \(problem)")
            }
        }
        #expect(accepted + rejected == 100_000)
        // Both outcomes are exercised (so both branches of the contract above were checked).
        #expect(accepted > 1000 && rejected > 1000)
    }

    /// The native binary format's header errors (NativeBinaryTrace.swift), which concern the
    /// 32-byte header as a whole and so are located at the file.
    static func isBinaryHeaderError(_ m: String) -> Bool {
        (m.hasPrefix("truncated header: ") && m.hasSuffix(" bytes, expected a 32-byte qcow2sim binary trace header"))
            || (m.hasPrefix("bad magic ") && m.hasSuffix(" (expected 89 51 32 53 54 52 0a 00, a qcow2sim binary trace)"))
            || (m.hasPrefix("unsupported binary trace version ") && m.hasSuffix(" (expected 1)"))
            || (m.hasPrefix("unsupported record size ") && m.hasSuffix(" (expected 32)"))
            || m == "header bytes 24 to 31 are reserved and must be zero"
    }

    /// The problem with reading `b`, or nil if the outcome keeps the contract.
    static func check(
        _ b: [UInt8], format: TraceFormat?, options: TraceOptions, accepted: inout Int, rejected: inout Int
    ) -> String? {
        // Lines a `.line(n)` location may name: 1 through the number of line starts.
        let lines = b.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) } - (b.last == 0x0A ? 1 : 0)
        do {
            var r = try TraceFile.open(bytes: b, fileName: "fuzz", format: format, options: options)
            var last: Double?
            var first = true
            var n = 0
            var problem: String?
            while problem == nil, let x = try r.next(), n < 100_000 {
                n += 1
                if x.op == .flush && (x.offset != 0 || x.length != 0) {
                    problem = "flush with offset \(x.offset) length \(x.length) (TraceRecord: flushes are 0, 0)"
                }
                if x.offset.addingReportingOverflow(x.length).overflow {
                    problem = "request at \(x.offset) length \(x.length) ends past 2^64"
                }
                if let size = options.diskSize, x.offset > size || x.length > size - x.offset, x.op != .flush {
                    problem = "request \(x.offset)+\(x.length) beyond --disk-size \(size) with --beyond \(options.beyondDisk)"
                }
                if let t = x.time {
                    if !t.isFinite || t < 0 || t > TraceRecord.maxTime { problem = "time \(t) outside 0...2^52 s" }
                    if let l = last, t < l { problem = "time \(t) after \(l): the mapper emits times in order" }
                    // Absolute clocks are rebased to the first record by default: the first one
                    // emitted, or under --beyond clip one the mapper dropped before it.
                    if first && r.format.hasAbsoluteTime && !(t == 0 || (options.beyondDisk == .clip && t > 0)) {
                        problem = "first time \(t), not rebased to 0"
                    }
                    last = t
                }
                first = false
            }
            // Read to the end (or to the first broken promise): accepted.
            accepted += 1
            return problem
        } catch let e as TraceError {
            rejected += 1
            if e.file != "fuzz" { return "error names '\(e.file)', not the input: \(e)" }
            if e.exitCode != 65 { return "exit code \(e.exitCode) for bad data (expected 65): \(e)" }
            switch e.location {
            case .line(let l) where l < 1 || l > lines: return "line \(l) outside the input's \(lines) lines: \(e)"
            case .record(let off, let index) where off >= UInt64(b.count) || index < 0 || UInt64(index) > off:
                return "record \(index) at byte \(off) outside the input's \(b.count) bytes: \(e)"
            case .file
            where e.message != "empty trace (no records)"
                && !(e.message.hasPrefix("no '") && e.message.hasSuffix("' events in the trace (try --event Q, D or C)"))
                && !Self.isBinaryHeaderError(e.message):
                return "a whole-file error that is not 'empty', 'no events' or a binary trace header's: \(e)"
            default: return nil
            }
        } catch {
            rejected += 1
            return "not a TraceError: \(error)"
        }
    }
}

// libFuzzer entry point over qcow2 image bytes: open plus a short read/write/discard trace.
//
// Build and run (Linux):
//   swift build -c release --product image-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library
//   .build/release/image-fuzz -rss_limit_mb=1024 -timeout=10 -max_len=65536 CORPUS_DIR
//
// Inputs are images in cluster-prefix form (`ImageFuzz.encode`): seed CORPUS_DIR with real
// images from qemu-img, e.g. `image-fuzz --encode disk.qcow2 > CORPUS_DIR/disk` (see README).
// SwiftPM links an executable's entry point as `main`, which hides libFuzzer's own `main`, so
// `ImageFuzzMain.main` finds libFuzzer's driver at run time (as `trace-fuzz` does).
import Foundation
import Qcow2Sim
import TraceKit

#if canImport(Glibc)
    import Glibc
#endif

/// Runs one input. Any trap is a bug: a hostile image must only ever produce a finished run or a
/// `SimulationError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func imageFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    _ = ImageFuzz.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@main
enum ImageFuzzMain {
    static func fail(_ message: String, _ code: Int32) -> Never {
        FileHandle.standardError.write(Data("image-fuzz: error: \(message)\n".utf8))
        exit(code)
    }

    static func main() {
        let args = CommandLine.arguments
        // `--encode IMAGE`: the cluster-prefix form of a real image on stdout (for the corpus);
        // `--run INPUT…`: each input's outcome, for reproducing a finding without libFuzzer.
        if args.count == 3 && args[1] == "--encode" {
            guard let d = FileManager.default.contents(atPath: args[2]) else { fail("cannot read '\(args[2])'", 66) }
            FileHandle.standardOutput.write(Data(ImageFuzz.encode(image: Array(d))))
            exit(0)
        }
        if args.count >= 3 && args[1] == "--run" {
            for path in args[2...] {
                guard let d = FileManager.default.contents(atPath: path) else { fail("cannot read '\(path)'", 66) }
                print("\(path): \(ImageFuzz.run(Array(d)))")
            }
            exit(0)
        }
        // `--input SEED FILE…`: the mutated input the campaign makes for SEED, on stdout.
        if args.count >= 4 && args[1] == "--input", let seed = UInt64(args[2]) {
            let corpus = args[3...].compactMap { FileManager.default.contents(atPath: $0).map { Array($0) } }
            FileHandle.standardOutput.write(Data(ImageFuzz.input(seed: seed, corpus: corpus)))
            exit(0)
        }
        // `--campaign SEED COUNT FILE…`: the seeded mutation campaign of the test over the given
        // inputs, with the outcome counts and the inputs slower than 0.2 s.
        if args.count >= 5 && args[1] == "--campaign", let seed = UInt64(args[2]), let count = Int(args[3]) {
            let corpus = args[4...].compactMap { FileManager.default.contents(atPath: $0).map { Array($0) } }
            let start = Date()
            var outcomes: [String: Int] = [:]
            for i in 0..<count {
                let input = ImageFuzz.input(seed: seed &+ UInt64(i), corpus: corpus)
                let t0 = Date()
                let outcome = ImageFuzz.run(input)
                let dt = Date().timeIntervalSince(t0)
                if dt > 0.2 { print("slow: seed \(seed &+ UInt64(i)) \(dt) s: \(outcome)") }
                switch outcome {
                case .accepted: outcomes["accepted", default: 0] += 1
                case .rejected(_, let code): outcomes["exit \(code)", default: 0] += 1
                }
            }
            print("inputs \(count): \(outcomes.sorted { $0.key < $1.key }) in \(Date().timeIntervalSince(start)) s")
            exit(0)
        }
        LibFuzzerDriver.run(tool: "image-fuzz", imageFuzzTestOneInput)
    }
}

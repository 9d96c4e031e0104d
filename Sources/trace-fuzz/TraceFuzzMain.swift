// libFuzzer entry point over every trace reader.
//
// Build and run (Linux):
//   swift build -c release --product trace-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library
//   .build/release/trace-fuzz -max_len=4096 -max_total_time=60 CORPUS_DIR
//
// SwiftPM links an executable's entry point as `main`, which hides libFuzzer's own `main`, so
// `TraceFuzzMain.main` finds libFuzzer's driver at run time and hands it the arguments. Built
// without -sanitize=fuzzer the driver is absent and the program says so.
import Foundation
import TraceKit

#if canImport(Glibc)
    import Glibc
#endif

/// Feeds one input to format detection and to every reader explicitly. Any trap is a bug: bad
/// input must only ever produce a `TraceError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func traceFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    TraceFuzz.parse(bytes, format: nil)
    for format in TraceFormat.allCases {
        TraceFuzz.parse(bytes, format: format)
    }
    return 0
}

@main
enum TraceFuzzMain {
    static func main() {
        LibFuzzerDriver.run(tool: "trace-fuzz", traceFuzzTestOneInput)
    }
}

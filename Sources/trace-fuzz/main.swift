// libFuzzer entry point over every trace reader.
//
// Build and run (Linux):
//   swift build -c release --product trace-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library
//   .build/release/trace-fuzz -max_len=4096 -max_total_time=60 CORPUS_DIR
//
// Built normally (without -sanitize=fuzzer) this is an empty program.
import TraceKit

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

import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Hands control to libFuzzer's driver for the fuzz executables (`trace-fuzz`, `image-fuzz`).
///
/// SwiftPM links an executable's entry point as `main`, which hides libFuzzer's own `main`, so
/// the driver (`LLVMFuzzerRunDriver`, kept by the targets' `--undefined` linker flag) is found at
/// run time instead.
public enum LibFuzzerDriver {
    /// libFuzzer's per-input callback, `LLVMFuzzerTestOneInput`'s signature.
    public typealias Callback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    private typealias Driver =
        @convention(c) (
            UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, Callback
        ) -> Int32

    /// Runs libFuzzer over `callback` with the process's arguments and exits with its status;
    /// exits 69 with `<tool>: error: built without libFuzzer …` when the binary was built without
    /// `-sanitize=fuzzer`.
    public static func run(tool: String, _ callback: Callback) -> Never {
        guard let sym = dlsym(dlopen(nil, RTLD_NOW), "LLVMFuzzerRunDriver") else {
            FileHandle.standardError.write(
                Data(
                    "\(tool): error: built without libFuzzer (rebuild with -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library)\n"
                        .utf8))
            exit(69)
        }
        let driver = unsafeBitCast(sym, to: Driver.self)
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(driver(&argc, &argv, callback))
    }
}

// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "qcow2sim",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "qcow2sim", targets: ["qcow2sim"]),
        .executable(name: "qcow2sim-bench", targets: ["qcow2sim-bench"]),
        .library(name: "Qcow2Sim", targets: ["Qcow2Sim"]),
        .library(name: "TraceKit", targets: ["TraceKit"]),
        .library(name: "Validation", targets: ["Validation"]),
        .library(name: "Reporting", targets: ["Reporting"]),
    ],
    targets: [
        // Trace records, one streaming reader per format, format detection, generators.
        .target(name: "TraceKit"),
        // The model: geometry, QEMU's cache sizing, MetadataCache<Policy>, image, chain, paths.
        // No unsafe flags: the hot classes' stored properties (image model, cache layer, operation
        // buffer and recording) carry `@exclusivity(unchecked)` instead of the whole module
        // building with `-enforce-exclusivity=unchecked`. The model is single-threaded and never
        // holds an access to one of them across a call that touches it again; the static checks
        // still run. Dynamic checks there cost +137 % instructions on read-1e6 and +72 % on
        // write50-1e6 (Replay.run, callgrind, 2026-12-01).
        .target(name: "Qcow2Sim", dependencies: ["TraceKit"]),
        // qemu-img / qemu-io / qemu-system runners, QEMU trace parser, comparator.
        .target(name: "Validation", dependencies: ["Qcow2Sim", "TraceKit"]),
        // Our own SVG charts and self-contained HTML pages (`--format html`).
        .target(name: "Reporting", dependencies: ["Qcow2Sim", "TraceKit"]),
        // The CLI: thin commands over the libraries.
        .executableTarget(name: "qcow2sim", dependencies: ["Qcow2Sim", "TraceKit", "Validation", "Reporting"]),
        // Deterministic benchmarks (release build).
        .executableTarget(name: "qcow2sim-bench", dependencies: ["Qcow2Sim", "TraceKit", "Validation"]),
        // libFuzzer entry point over every trace reader: build with -sanitize=fuzzer (see README).
        .executableTarget(
            name: "trace-fuzz", dependencies: ["TraceKit"],
            // SwiftPM's own `main` hides libFuzzer's driver; the entry point finds it at run time.
            linkerSettings: [
                .unsafeFlags(
                    ["-Xlinker", "--undefined=LLVMFuzzerRunDriver", "-Xlinker", "--export-dynamic"], .when(platforms: [.linux]))
            ]),
        // libFuzzer entry point over qcow2 image bytes (open + a short trace): as trace-fuzz.
        .executableTarget(
            name: "image-fuzz", dependencies: ["Qcow2Sim", "TraceKit"],
            linkerSettings: [
                .unsafeFlags(
                    ["-Xlinker", "--undefined=LLVMFuzzerRunDriver", "-Xlinker", "--export-dynamic"], .when(platforms: [.linux]))
            ]),
        // Helpers the three test targets share (QEMU and trace locators that say why a test
        // skips, the spec's notation, trace text, the seeded generator). Not a product.
        .target(name: "QcowTestSupport", dependencies: ["Qcow2Sim", "TraceKit"], path: "Tests/QcowTestSupport"),
        .testTarget(name: "Qcow2SimTests", dependencies: ["Qcow2Sim", "TraceKit", "Reporting", "QcowTestSupport"]),
        .testTarget(name: "TraceKitTests", dependencies: ["TraceKit", "QcowTestSupport"]),
        .testTarget(name: "ValidationTests", dependencies: ["Validation", "Qcow2Sim", "TraceKit", "QcowTestSupport"]),
    ]
)

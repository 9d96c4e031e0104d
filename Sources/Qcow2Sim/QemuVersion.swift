/// The QEMU release whose behaviour a run reproduces (`--qemu-version`). On sequential replays
/// the `qcow2_cache_*` streams of 10.0 and 11.1 are byte-identical to 7.2's (qcow2-model.md §19);
/// the versions differ in what they accept and in where the cache-clean timer runs.
public enum QemuVersion: String, Sendable, CaseIterable, Comparable {
    /// Debian bookworm's 7.2, the reference the simulator was built against.
    case v7_2 = "7.2"
    /// 8.2: `discard-no-unref` (added in 8.1; 8.2 also keeps the reference on write-zeroes).
    case v8_2 = "8.2"
    /// 10.0 (Debian trixie).
    case v10_0 = "10.0"
    /// 10.2: the cache-clean timer also runs inside qemu-io, qemu-img, qemu-nbd and
    /// qemu-storage-daemon, on the real-time clock.
    case v10_2 = "10.2"
    /// 11.1 (Debian sid).
    case v11_1 = "11.1"

    /// Whether the qcow2 driver accepts the `discard-no-unref` runtime option (8.1 and later).
    public var hasDiscardNoUnref: Bool { self >= .v8_2 }

    /// Whether the cache-clean timer fires in the command-line tools, not only in a running VM
    /// (10.2 and later; before, it is on the virtual clock, which only a VM runs).
    public var cleanTimerInTools: Bool { self >= .v10_2 }

    /// `major.minor` as a pair, for ordering.
    var numbers: (Int, Int) {
        let parts = rawValue.split(separator: ".").map { Int($0) ?? 0 }
        return (parts.first ?? 0, parts.count > 1 ? parts[1] : 0)
    }

    /// Orders by release.
    public static func < (a: QemuVersion, b: QemuVersion) -> Bool { a.numbers < b.numbers }

    /// The version a `qemu-io --version` first line names (`qemu-io version 10.0.3 (Debian
    /// 1:10.0.3+ds-1)`), as `major.minor`, or nil when the text has no version.
    public static func reported(in text: String) -> String? {
        guard let range = text.range(of: "version ") else { return nil }
        let digits = text[range.upperBound...].prefix { $0.isNumber || $0 == "." }
        let parts = digits.split(separator: ".")
        guard parts.count >= 2 else { return nil }
        return "\(parts[0]).\(parts[1])"
    }
}

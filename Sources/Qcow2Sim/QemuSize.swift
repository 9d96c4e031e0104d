/// QEMU's size syntax (`qemu_strtosz`): decimal or `0x` hex bytes, or a decimal with an optional
/// fraction and a binary suffix B, K, M, G, T, P or E (case-insensitive). A fraction needs a
/// suffix other than B. Leading whitespace is allowed.
public enum QemuSize {
    /// Why a size failed to parse.
    public enum Failure: Error, Equatable {
        /// Not a size at all.
        case invalid
        /// A size of 2^64 or more.
        case outOfRange
    }

    /// Parses `text`.
    public static func parse(_ text: Substring) -> Result<UInt64, Failure> {
        var s = text.drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" })
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            s = s.dropFirst(2)
            guard !s.isEmpty, let v = UInt64(s, radix: 16) else {
                return s.allSatisfy(\.isHexDigit) && !s.isEmpty ? .failure(.outOfRange) : .failure(.invalid)
            }
            return .success(v)
        }
        let digits = s.prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty else { return .failure(.invalid) }
        s = s.dropFirst(digits.count)
        var fraction: Substring = ""
        if s.first == "." {
            fraction = s.dropFirst().prefix(while: \.isASCIIDigit)
            s = s.dropFirst(1 + fraction.count)
        }
        var shift: UInt64 = 0
        if let c = s.first {
            switch c {
            case "b", "B": shift = 0
            case "k", "K": shift = 10
            case "m", "M": shift = 20
            case "g", "G": shift = 30
            case "t", "T": shift = 40
            case "p", "P": shift = 50
            case "e", "E": shift = 60
            default: return .failure(.invalid)
            }
            s = s.dropFirst()
            if !s.isEmpty { return .failure(.invalid) }
            if c == "b" || c == "B", s.isEmpty, !fraction.isEmpty { return .failure(.invalid) }
        } else if !fraction.isEmpty {
            return .failure(.invalid)
        }
        guard let whole = UInt64(digits) else { return .failure(.outOfRange) }
        let mul = UInt64(1) << shift
        let (hi, overflow) = whole.multipliedReportingOverflow(by: mul)
        if overflow { return .failure(.outOfRange) }
        var value = hi
        if !fraction.isEmpty, let f = Double("0." + fraction) {
            let extra = UInt64(f * Double(mul))
            let (sum, o2) = value.addingReportingOverflow(extra)
            if o2 { return .failure(.outOfRange) }
            value = sum
        }
        return .success(value)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

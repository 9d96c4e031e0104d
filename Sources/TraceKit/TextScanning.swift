import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Splits a text input into lines without copying: each call returns the byte range of the next
/// line in `input.buffer` (without its `\n` or `\r\n`), valid until the next call.
struct LineScanner {
    let input: ByteInput
    /// 1-based number of the line most recently returned.
    private(set) var lineNumber = 0
    /// The longest line accepted, in bytes without its line break. Checked while the line is
    /// still being read, so a file without line breaks (`/dev/zero`, a binary file read as
    /// text) fails after one limit's worth of input instead of buffering all of it.
    static let maxLineBytes = 1 << 20

    init(_ input: ByteInput) { self.input = input }

    private func tooLong() -> TraceError {
        TraceError(
            file: input.fileName, location: .line(lineNumber + 1),
            message:
                "line is longer than \(Self.maxLineBytes) bytes (the limit for a text trace line; a binary file or one without line breaks?)"
        )
    }

    /// The next line's range in `input.buffer`, or `nil` at end of input.
    mutating func nextLine() throws -> Range<Int>? {
        var searchFrom = input.start
        while true {
            let s = input.start
            let e = input.end
            let found: Int? = input.buffer.withUnsafeBufferPointer { p -> Int? in
                guard let b = p.baseAddress, e > searchFrom else { return nil }
                guard let hit = memchr(b + searchFrom, 0x0A, e - searchFrom) else { return nil }
                return UnsafeRawPointer(hit) - UnsafeRawPointer(b)
            }
            if let nl = found {
                if nl - s > Self.maxLineBytes + 1 || (nl - s == Self.maxLineBytes + 1 && input.buffer[nl - 1] != 0x0D) {
                    throw tooLong()
                }
                lineNumber += 1
                input.start = nl + 1
                var lineEnd = nl
                if lineEnd > s && input.buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                return s..<lineEnd
            }
            let scanned = e - s
            // More than the limit plus a possible `\r` and still no line break: stop here, before
            // the buffer grows any further.
            if scanned > Self.maxLineBytes + 1 { throw tooLong() }
            if try input.fill() {
                searchFrom = input.start + scanned
                continue
            }
            guard input.start < input.end else { return nil }
            if input.end - input.start > Self.maxLineBytes + 1
                || (input.end - input.start == Self.maxLineBytes + 1 && input.buffer[input.end - 1] != 0x0D)
            {
                throw tooLong()
            }
            lineNumber += 1
            let r = input.start..<input.end
            input.start = input.end
            var lineEnd = r.upperBound
            if lineEnd > r.lowerBound && input.buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            return r.lowerBound..<lineEnd
        }
    }
}

extension LineScanner {
    /// Consumes `lines` lines that a reader's fast path parsed straight from `input.buffer`; the
    /// last ends at the `\n` at index `newline`, which must be inside the buffered bytes.
    mutating func consumeLines(_ lines: Int, lastNewlineAt newline: Int) {
        lineNumber += lines
        input.start = newline + 1
    }
}

/// Byte-level helpers shared by the text readers: field splitting and number parsing straight
/// from bytes, so no `String` is built for a well-formed line.
enum Scan {
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09

    @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == space || c == tab || c == 0x0D }
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }

    /// `range` with leading and trailing blanks removed.
    @inline(__always)
    static func trim(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
        var a = range.lowerBound
        var b = range.upperBound
        while a < b && isSpace(p[a]) { a += 1 }
        while b > a && isSpace(p[b - 1]) { b -= 1 }
        return a..<b
    }

    /// Whether the trimmed line is empty or starts with `#`.
    @inline(__always)
    static func isBlankOrComment(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Bool {
        var a = range.lowerBound
        while a < range.upperBound && isSpace(p[a]) { a += 1 }
        return a == range.upperBound || p[a] == UInt8(ascii: "#")
    }

    /// Splits `range` at `separator` into trimmed fields (appended to `fields`).
    @inline(__always)
    static func split(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, separator: UInt8, into fields: inout [Range<Int>]) {
        fields.removeAll(keepingCapacity: true)
        var a = range.lowerBound
        var i = a
        while i < range.upperBound {
            if p[i] == separator {
                fields.append(trim(p, a..<i))
                a = i + 1
            }
            i += 1
        }
        fields.append(trim(p, a..<range.upperBound))
    }

    /// Splits `range` into whitespace-separated words (appended to `fields`).
    @inline(__always)
    static func words(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into fields: inout [Range<Int>]) {
        fields.removeAll(keepingCapacity: true)
        var i = range.lowerBound
        let e = range.upperBound
        while i < e {
            while i < e && isSpace(p[i]) { i += 1 }
            if i == e { break }
            let a = i
            while i < e && !isSpace(p[i]) { i += 1 }
            fields.append(a..<i)
        }
    }

    /// The index of the first NUL or other control byte that never appears in text, if any.
    @inline(__always)
    static func firstBinaryByte(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        for i in range {
            let c = p[i]
            if c < 0x20 && c != tab && c != 0x0D && c != 0x0C { return i }
        }
        return nil
    }

    /// The text of `range`, for error messages (lossy UTF-8, at most 40 characters).
    static func text(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        let r = range.lowerBound..<min(range.upperBound, range.lowerBound + 40)
        var s = String(decoding: UnsafeBufferPointer(rebasing: p[r]), as: UTF8.self)
        if r.upperBound < range.upperBound { s += "..." }
        return s
    }

    /// Outcome of parsing an unsigned integer.
    enum Number: Equatable {
        case value(UInt64)
        case invalid
        case overflow
        case negative
    }

    /// Parses decimal digits (optionally with a leading `-`, reported as `.negative`).
    @inline(__always)
    static func unsigned(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Number {
        var i = range.lowerBound
        let e = range.upperBound
        guard i < e else { return .invalid }
        var negative = false
        if p[i] == UInt8(ascii: "-") { negative = true; i += 1 } else if p[i] == UInt8(ascii: "+") { i += 1 }
        guard i < e else { return .invalid }
        var v: UInt64 = 0
        var overflow = false
        while i < e {
            let d = p[i] &- 0x30
            guard d < 10 else { return .invalid }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            overflow = overflow || o1 || o2
            v = a
            i += 1
        }
        if negative { return v == 0 ? .value(0) : .negative }
        return overflow ? .overflow : .value(v)
    }

    /// Parses hexadecimal digits with an optional `0x` prefix.
    @inline(__always)
    static func hex(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Number {
        var i = range.lowerBound
        let e = range.upperBound
        if e - i >= 2 && p[i] == UInt8(ascii: "0") && (p[i + 1] | 0x20) == UInt8(ascii: "x") { i += 2 }
        guard i < e else { return .invalid }
        var v: UInt64 = 0
        var overflow = false
        while i < e {
            let c = p[i]
            let d: UInt8
            if c &- 0x30 < 10 {
                d = c &- 0x30
            } else if (c | 0x20) &- 0x61 < 6 {
                d = (c | 0x20) &- 0x61 &+ 10
            } else {
                return .invalid
            }
            overflow = overflow || v >> 60 != 0
            v = v << 4 | UInt64(d)
            i += 1
        }
        return overflow ? .overflow : .value(v)
    }

    /// Parses a byte count with an optional binary suffix K, M, G or T (case-insensitive;
    /// K = 1024). An optional trailing `B`/`iB` is accepted (`4KiB`, `4KB`).
    @inline(__always)
    static func size(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Number {
        var e = range.upperBound
        var shift: UInt64 = 0
        if e > range.lowerBound, (p[e - 1] | 0x20) == UInt8(ascii: "b") {
            if e - 1 > range.lowerBound, p[e - 2] == UInt8(ascii: "i") { e -= 2 } else { e -= 1 }
            guard e > range.lowerBound, !isDigit(p[e - 1]) else { return .invalid }
        }
        if e > range.lowerBound {
            switch p[e - 1] | 0x20 {
            case UInt8(ascii: "k"): shift = 10
            case UInt8(ascii: "m"): shift = 20
            case UInt8(ascii: "g"): shift = 30
            case UInt8(ascii: "t"): shift = 40
            default: break
            }
            if shift > 0 { e -= 1 }
        } else if range.upperBound != e {
            return .invalid
        }
        switch unsigned(p, range.lowerBound..<e) {
        case .value(let v):
            if shift > 0 && v >> (64 - shift) != 0 { return .overflow }
            return .value(v << shift)
        case let other: return other
        }
    }

    static let powersOfTen: [Double] = (0...22).map { pow(10.0, Double($0)) }

    /// Outcome of parsing a decimal number.
    enum Decimal: Equatable {
        case value(Double)
        case invalid
        case negative
    }

    /// Parses a non-negative decimal number such as `12`, `0.000250` or `1.5e-3`.
    /// Up to 19 significant digits are exact before the single division.
    @inline(__always)
    static func decimal(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Decimal {
        var i = range.lowerBound
        let e = range.upperBound
        guard i < e else { return .invalid }
        var negative = false
        if p[i] == UInt8(ascii: "-") { negative = true; i += 1 } else if p[i] == UInt8(ascii: "+") { i += 1 }
        var mantissa: UInt64 = 0
        var digits = 0
        var fraction = 0
        var dropped = 0
        var sawDigit = false
        while i < e, isDigit(p[i]) {
            sawDigit = true
            if digits < 19 {
                mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30); if mantissa > 0 { digits += 1 }
            } else {
                dropped += 1
            }
            i += 1
        }
        if i < e && p[i] == UInt8(ascii: ".") {
            i += 1
            while i < e, isDigit(p[i]) {
                sawDigit = true
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30)
                    if mantissa > 0 { digits += 1 }
                    fraction += 1
                }
                i += 1
            }
        }
        guard sawDigit else { return .invalid }
        var exponent = dropped - fraction
        if i < e && (p[i] | 0x20) == UInt8(ascii: "e") {
            i += 1
            var expNegative = false
            if i < e && (p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+")) {
                expNegative = p[i] == UInt8(ascii: "-"); i += 1
            }
            guard i < e else { return .invalid }
            var x = 0
            while i < e, isDigit(p[i]) { x = min(x * 10 + Int(p[i] &- 0x30), 100_000); i += 1 }
            exponent += expNegative ? -x : x
        }
        guard i == e else { return .invalid }
        var v = Double(mantissa)
        if exponent < 0 {
            v = -exponent <= 22 ? v / powersOfTen[-exponent] : v * pow(10.0, Double(exponent))
        } else if exponent > 0 {
            v = exponent <= 22 ? v * powersOfTen[exponent] : v * pow(10.0, Double(exponent))
        }
        guard v.isFinite else { return .invalid }
        if negative && v != 0 { return .negative }
        return .value(v)
    }

    /// Whether `range` equals the ASCII string `s`, ignoring case.
    @inline(__always)
    static func equalsIgnoringCase(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ s: StaticString) -> Bool {
        guard range.count == s.utf8CodeUnitCount else { return false }
        let q = s.utf8Start
        for k in 0..<range.count where (p[range.lowerBound + k] | 0x20) != (q[k] | 0x20) { return false }
        return true
    }

    /// Whether `range` starts with the ASCII string `s`.
    @inline(__always)
    static func hasPrefix(_ p: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ s: StaticString) -> Bool {
        guard range.count >= s.utf8CodeUnitCount else { return false }
        let q = s.utf8Start
        for k in 0..<s.utf8CodeUnitCount where p[range.lowerBound + k] != q[k] { return false }
        return true
    }
}

/// Byte counts written the way traces and the CLI write them.
public enum ByteCount {
    /// Parses `4096`, `64K`, `1M`, `10G`, `2T` (binary suffixes, either case; `KiB`/`KB` also
    /// accepted). `nil` for anything else, including overflow.
    public static func parse(_ text: String) -> UInt64? {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBufferPointer { p -> UInt64? in
            if case .value(let v) = Scan.size(p, Scan.trim(p, 0..<p.count)) { return v }
            return nil
        }
    }
}

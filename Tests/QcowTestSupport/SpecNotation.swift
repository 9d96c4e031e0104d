import Foundation
import Qcow2Sim
import Testing

/// The spec's compact listing notation (qcow2-model.md §16) and QEMU's own trace lines, as
/// cache events.
///
/// Items are separated by `;` or newlines; `#` starts a comment to the end of the line:
/// - `L2 get 0xOFF [empty] hit I` → get, get_done (index I);
/// - `L2 get 0xOFF [empty] miss I [{X; Y}]` → get, replace_entry, the events of X and Y (what
///   the eviction prints, e.g. `{wb L2 0; flush RC}`), get_read, get_done;
/// - `flush L2`, `wb RC I` (entry flush); `RC` for the refcount-block cache;
/// - a trailing `(xN)` repeats the item N times;
/// - a leading `[image N]` gives the item's image; another bracketed label (`[top]`,
///   `[backing1]`) is a reader's note and leaves the image at the default.
/// Text this does not understand is a test bug: it is recorded as an issue.
public enum SpecNotation {
    /// qcow2-model.md TV8: the cache events of the single request `write 0x1c600000 4096`
    /// (i = 1816, request 1817 counted from 1), as the spec lists them.
    public static let tv8Request1816 = """
        RC get 0x2000 hit 0 (x2)
        flush RC ; wb RC 0
        L2 get 0x7ff000 empty miss 509
        flush L2 ; wb L2 473 ; flush RC ; wb L2 509
        L2 get 0x7ff000 hit 509 (x2)
        flush L2
        RC get 0x801000 empty miss 1
        flush RC ; wb RC 1
        RC get 0x801000 hit 1 (x2)
        L2 get 0x7ff000 hit 509
        """

    /// The events `text` lists, in image `image` unless an item says `[image N]`.
    public static func events(_ text: String, image: Int = 0) -> [CacheEvent] {
        var out: [CacheEvent] = []
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            for item in splitOutsideBraces(line) { out += expand(item, image: image) }
        }
        return out
    }

    /// QEMU's lines for `text`, without `co`/`image` fields (as `CacheEvent.line(includeImage: false)`).
    public static func lines(_ text: String) -> [String] { events(text).map { $0.line(includeImage: false) } }

    /// QEMU trace lines (`#` comments and blank lines dropped), as cache events of `image`
    /// unless a line has its own `image N`.
    public static func qemuLines(_ text: String, image: Int = 0) -> [CacheEvent] {
        text.split(separator: "\n").compactMap { raw in
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(
                in: .whitespaces)
            if line.isEmpty { return nil }
            guard let ev = CacheEvent(parsing: Substring(line), defaultImage: image) else {
                Issue.record("bad fixture line '\(line)'")
                return nil
            }
            return ev
        }
    }

    /// Splits at `;` except inside `{…}`.
    static func splitOutsideBraces(_ s: Substring) -> [Substring] {
        var parts: [Substring] = []
        var depth = 0
        var start = s.startIndex
        for i in s.indices {
            if s[i] == "{" { depth += 1 } else if s[i] == "}" { depth -= 1 }
            if s[i] == ";" && depth == 0 {
                parts.append(s[start..<i])
                start = s.index(after: i)
            }
        }
        parts.append(s[start...])
        return parts
    }

    /// One item's events.
    static func expand(_ item: Substring, image defaultImage: Int) -> [CacheEvent] {
        var t = item.trimmingCharacters(in: .whitespaces)[...]
        if t.isEmpty { return [] }
        var image = defaultImage
        if t.hasPrefix("["), let close = t.firstIndex(of: "]") {
            let label = t[t.index(after: t.startIndex)..<close].split(separator: " ")
            if label.count == 2, label[0] == "image", let n = Int(label[1]) { image = n }
            t = t[t.index(after: close)...].drop { $0 == " " }
        }
        var repeatCount = 1
        if let r = t.range(of: #"\(x(\d+)\)"#, options: .regularExpression) {
            guard let n = Int(t[r].dropFirst(2).dropLast()) else { return bad(item) }
            repeatCount = n
            t = t[..<r.lowerBound]
        }
        var inner: [CacheEvent] = []
        if let open = t.firstIndex(of: "{") {
            guard let close = t.lastIndex(of: "}") else { return bad(item) }
            inner = splitOutsideBraces(t[t.index(after: open)..<close]).flatMap { expand($0, image: image) }
            t = t[..<open]
        }
        let w = t.split(separator: " ")
        guard let first = w.first, w.count >= 2 else { return bad(item) }
        var events: [CacheEvent] = []
        switch first {
        case "flush":
            guard let l2 = isL2(w[1]) else { return bad(item) }
            events = [CacheEvent(kind: .flush, image: image, isL2: l2)]
        case "wb":
            guard w.count == 3, let l2 = isL2(w[1]), let index = Int(w[2]) else { return bad(item) }
            events = [CacheEvent(kind: .entryFlush, image: image, isL2: l2, index: index)]
        default:
            // "L2 get 0xOFF [empty] hit|miss I"
            let empty = w.count == 6 && w[3] == "empty"
            guard let l2 = isL2(first), w.count == (empty ? 6 : 5), w[1] == "get", w[2].hasPrefix("0x"),
                let offset = UInt64(w[2].dropFirst(2), radix: 16), let index = Int(w[w.count - 1]),
                w[w.count - 2] == "hit" || w[w.count - 2] == "miss"
            else { return bad(item) }
            events.append(CacheEvent(kind: .get, image: image, isL2: l2, offset: offset, readFromDisk: !empty))
            if w[w.count - 2] == "miss" {
                events.append(CacheEvent(kind: .replaceEntry, image: image, isL2: l2, index: index))
                events += inner
                events.append(CacheEvent(kind: .getRead, image: image, isL2: l2, index: index))
            }
            events.append(CacheEvent(kind: .getDone, image: image, isL2: l2, index: index))
        }
        return Array((0..<repeatCount).map { _ in events }.joined())
    }

    static func isL2(_ s: Substring) -> Bool? { s == "L2" ? true : s == "RC" ? false : nil }

    static func bad(_ item: Substring) -> [CacheEvent] {
        Issue.record("bad compact notation '\(item)'")
        return []
    }
}

import Foundation
import TraceKit

/// Turns trace records into qemu-io commands (qcow2-model.md §15.1), one request at a time,
/// with a marker command before every request so QEMU's trace log can be cut into requests.
///
/// The marker is `read -q M 0`: a zero-length read at an unaligned offset. The block layer
/// prints `blk_co_preadv … offset M bytes 0` for it and qcow2 does no work at all (no cache
/// event), which makes it a boundary that discards, flushes and write-zeroes, which print
/// no `blk_co_*` event of their own, can be cut at too. `M` is the request number modulo the
/// disk size, so lost or reordered markers are detected.
public enum QemuIOScript {
    /// qemu-io's largest request (`BDRV_REQUEST_MAX_BYTES`, 2 GiB - 512): longer commands fail
    /// with `length cannot exceed 2147483136`.
    public static let maxRequestBytes: UInt64 = 2_147_483_136
    /// The pieces a request of `length` bytes at `offset` is sent as: one piece when it fits,
    /// otherwise consecutive pieces of exactly `maxRequestBytes` from the start and a shorter
    /// last one, the split `Simulation.run` makes.
    ///
    /// - Complexity: O(length / maxRequestBytes).
    public static func pieces(offset: UInt64, length: UInt64) -> [ByteRangePiece] {
        var result: [ByteRangePiece] = []
        var start = offset
        let end = offset + length
        while end - start > maxRequestBytes {
            result.append(ByteRangePiece(offset: start, length: maxRequestBytes))
            start += maxRequestBytes
        }
        result.append(ByteRangePiece(offset: start, length: end - start))
        return result
    }

    /// The marker command placed before request `number` (and, with `number` = request count,
    /// after the last request).
    public static func marker(_ number: Int, virtualSize: UInt64) -> String {
        "read -q \(markerOffset(number, virtualSize: virtualSize)) 0"
    }

    /// The offset the marker for request `number` carries.
    public static func markerOffset(_ number: Int, virtualSize: UInt64) -> UInt64 {
        virtualSize == 0 ? 0 : UInt64(number) % virtualSize
    }

    /// Whether a record is replayed at all: zero-length reads, writes, discards and
    /// write-zeroes are no-ops in QEMU's block layer and are skipped (flushes always run).
    public static func isReplayed(_ record: TraceRecord) -> Bool {
        record.op == .flush || record.length > 0
    }

    /// The qemu-io commands (without markers) for one record, as typed at the `qemu-io>` prompt.
    ///
    /// Only `.unmap` is carried over (`write -z -u`): the FUA and preflush flags are not sent,
    /// because the simulator does not model them either (with them, QEMU would add flushes).
    public static func commands(for record: TraceRecord) -> [String] {
        switch record.op {
        case .flush:
            return ["flush"]
        case .read:
            return pieces(offset: record.offset, length: record.length).map { "read -q \($0.offset) \($0.length)" }
        case .write:
            return pieces(offset: record.offset, length: record.length).map { "write -q \($0.offset) \($0.length)" }
        case .writeZeroes:
            let unmap = record.flags.contains(.unmap) ? " -u" : ""
            return pieces(offset: record.offset, length: record.length).map { "write -q -z\(unmap) \($0.offset) \($0.length)" }
        case .discard:
            return pieces(offset: record.offset, length: record.length).map { "discard -q \($0.offset) \($0.length)" }
        }
    }

    /// The whole qemu-io input for `records`: marker, commands, marker, …, final marker.
    /// Records that are not replayed still get their marker, so request numbers line up.
    /// With `discards` false, discard requests are not sent (a drive with `discard=ignore`:
    /// qemu-io always opens with unmap on, so leaving them out is the only way to model it).
    public static func script(for records: [TraceRecord], virtualSize: UInt64, discards: Bool = true) -> String {
        var s = ""
        s.reserveCapacity(records.count * 40)
        for (i, record) in records.enumerated() {
            s += marker(i, virtualSize: virtualSize) + "\n"
            if isReplayed(record) && (discards || record.op != .discard) {
                for c in commands(for: record) { s += c + "\n" }
            }
        }
        s += marker(records.count, virtualSize: virtualSize) + "\n"
        return s
    }

    /// Checks that every record lies inside the disk; throws `ValidationError.badTrace`
    /// naming the first one that does not.
    public static func checkBounds(_ records: [TraceRecord], locations: [TraceLocation], fileName: String, virtualSize: UInt64)
        throws
    {
        for (i, r) in records.enumerated() where r.op != .flush {
            let (end, overflow) = r.offset.addingReportingOverflow(r.length)
            if overflow || end > virtualSize {
                let loc = i < locations.count ? locations[i] : .file
                throw ValidationError.badTrace(
                    TraceError(
                        file: fileName, location: loc,
                        message:
                            "request \(i) ends at byte \(overflow ? "overflow" : String(end)), beyond the disk size \(virtualSize)"
                    ).description)
            }
        }
    }
}

/// One piece of a split request.
public struct ByteRangePiece: Equatable, Sendable {
    /// First guest byte.
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Creates a piece.
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

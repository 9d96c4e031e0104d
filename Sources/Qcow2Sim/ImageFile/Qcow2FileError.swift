/// A located error in a qcow2 image file, printed compiler-style:
/// `disk.qcow2: byte 4: error: unsupported qcow2 version 4 (expected 2 or 3)`.
public struct Qcow2FileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file name as the user gave it.
    public var file: String
    /// The byte offset in the file of the bad field or table, or `nil` when the error concerns
    /// the file as a whole (it cannot be opened or read).
    public var byteOffset: UInt64?
    /// Lowercase message quoting what was found and saying what was expected.
    public var message: String
    /// The sysexits status: 65 EX_DATAERR for bad image contents, 66 EX_NOINPUT when the file
    /// cannot be opened, 74 EX_IOERR when a read fails.
    public var exitCode: Int32

    /// Creates an error; `exitCode` defaults to 65 (EX_DATAERR).
    public init(file: String, byteOffset: UInt64?, message: String, exitCode: Int32 = 65) {
        self.file = file
        self.byteOffset = byteOffset
        self.message = message
        self.exitCode = exitCode
    }

    /// `file: byte N: error: message`, or `file: error: message` without a byte offset.
    public var description: String {
        if let byteOffset {
            return "\(file): byte \(byteOffset): error: \(message)"
        }
        return "\(file): error: \(message)"
    }
}

import Qcow2Sim

// Test-only: option strings written in tests (`"l2-cache-size=64K"`, `"cluster_size=\(c)"`) are
// parsed as the CLI parses them. A typo stops the test at once with QEMU's message.

extension DriveOptions: ExpressibleByStringLiteral, ExpressibleByStringInterpolation,
    ExpressibleByUnicodeScalarLiteral, ExpressibleByExtendedGraphemeClusterLiteral
{
    public init(stringLiteral value: String) {
        do {
            try self.init(parsing: value)
        } catch {
            preconditionFailure("test drive options '\(value)': \(error.message)")
        }
    }
}

extension CreateOptions: ExpressibleByStringLiteral, ExpressibleByStringInterpolation,
    ExpressibleByUnicodeScalarLiteral, ExpressibleByExtendedGraphemeClusterLiteral
{
    public init(stringLiteral value: String) {
        do {
            try self.init(parsing: value)
        } catch {
            preconditionFailure("test create options '\(value)': \(error.message)")
        }
    }
}

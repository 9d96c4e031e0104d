/// Placeholder until the command lands.
enum TraceCommand {
    static func run(_ args: [String]) -> Int32 {
        Console.error("trace", "not implemented yet")
        return 70
    }
}

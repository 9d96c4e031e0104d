/// Placeholder until the command lands.
enum ValidateCommand {
    static func run(_ args: [String]) -> Int32 {
        Console.error("validate", "not implemented yet")
        return 70
    }
}

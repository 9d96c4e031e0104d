/// Placeholder until the command lands.
enum GenerateCommand {
    static func run(_ args: [String]) -> Int32 {
        Console.error("generate", "not implemented yet")
        return 70
    }
}

/// Placeholder until the command lands.
enum SimulateCommand {
    static func run(_ args: [String]) -> Int32 {
        Console.error("simulate", "not implemented yet")
        return 70
    }
}

import Foundation

// Entry point: dispatches to one command type per subcommand (see Commands.swift).
exit(CLI.main(Array(CommandLine.arguments.dropFirst())))

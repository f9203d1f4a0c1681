"""One module per `ftkd` subcommand; each defines `add_parser(subparsers)` and `run(args) -> int`."""

"""One module per `earl` sub-command; each exposes ``add_parser(subparsers)`` and ``run(args) -> int``."""

"""One module per `earl` sub-command; each exposes ``add_parser(subparsers)`` and ``run(args) -> int``."""


def comma_ints(text: str) -> list[int]:
    """``"1,5,10"`` -> ``[1, 5, 10]`` (blank items skipped); ValueError on a non-integer, for the caller's message."""
    return [int(x) for x in text.split(",") if x.strip()]

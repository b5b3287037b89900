"""earl's benchmarks (`make bench`, driven by bench/run.py)."""


class Unmeasured(Exception):
    """Raised by a bench's run() when this machine lacks what it measures (data, a checkpoint); the message
    says what is missing and how to get it. Here, not in bench/run.py: `python -m bench.run` runs that file as
    __main__, whose class a bench importing `bench.run` would not share."""

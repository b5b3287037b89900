"""Bounded capture of a sandboxed program's output, shared by the per-call path (executor) and the
persistent workers (worker): the first bytes up to a cap, the stream's tail for the wrapper's CPU report."""
from __future__ import annotations

import os
import re

from sandboxes import backends

READ_CHUNK = 65536
# sh's `times`: the shell's own user/sys, then its children's (the program's) on the second line
_TIMES_RE = re.compile(rb"\d+m[\d.]+s \d+m[\d.]+s\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s\n")
TAIL = 256                 # bytes of stderr's end kept for the report (marker + two `times` lines)


class Capped:
    """Keeps the first `cap` (+ `slack`) bytes of a stream and its last TAIL bytes; counts the rest
    (never buffers unbounded output). The slack and tail hold the wrapper's CPU report (see report)."""

    def __init__(self, cap: int, slack: int = 0):
        self.cap, self.keep, self.data, self.total, self.tail = cap, cap + slack, bytearray(), 0, b""
        self.track_tail = slack > 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if self.track_tail:
            self.tail = (self.tail + chunk[-TAIL:])[-TAIL:]

    def finish(self, strip_report: bool = False) -> tuple[bytes, bool, float]:
        """(the program's bytes up to cap, whether it wrote more, CPU seconds from the wrapper's report).

        The report (CPU_MARKER + `times`) is the last thing the wrapper writes: it is cut off only if
        it ends the stream exactly (a straggler writing after it leaves it in place, CPU unknown)."""
        cpu, report_len = 0.0, 0
        if strip_report:
            cut = self.tail.rfind(backends.CPU_MARKER)
            if cut >= 0:
                times = _TIMES_RE.fullmatch(self.tail[cut + len(backends.CPU_MARKER):])
                if times is not None:
                    um, us, sm, ss = times.groups()
                    cpu, report_len = int(um) * 60 + float(us) + int(sm) * 60 + float(ss), len(self.tail) - cut
        length = self.total - report_len
        return bytes(self.data[:min(self.cap, length)]), length > self.cap, cpu


def read_into(fd: int, sink: Capped) -> int:
    """One non-blocking read: bytes read, 0 at EOF, -1 when nothing is available now."""
    try:
        chunk = os.read(fd, READ_CHUNK)
    except (BlockingIOError, InterruptedError):
        return -1
    sink.add(chunk)
    return len(chunk)

"""Per-CWE detection on (vulnerable, fixed) pairs: is the flaw seen, is the fix judged clean?

A version is *flagged* for a pair when it has a scored finding of the pair's CWE (bandit maps its tests
to CWEs; ours carry them in the rule id); findings of other CWEs do not count either way.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rewards.security.findings import scan
from rewards.security.tasks import SecurityTask

CHECKERS = {"bandit": {"use_bandit": True, "use_rules": False},
            "full": {"use_bandit": True, "use_rules": True}}


@dataclass
class Detection:
    pairs: int = 0
    flagged: int = 0        # vulnerable version flagged
    clean: int = 0          # fixed version clean
    both: int = 0

    def add(self, flagged: bool, clean: bool) -> None:
        self.pairs += 1
        self.flagged += flagged
        self.clean += clean
        self.both += flagged and clean


def cwe_label(vul_type: str) -> str:
    return f"CWE-{int(vul_type.split('-')[-1])}"


def relevant(code: str, vul_type: str, checker: str) -> bool:
    want = cwe_label(vul_type)
    return any(f.cwe == want for f in scan(code, **CHECKERS[checker]))


def detection_table(tasks: Iterable[SecurityTask], checkers: Iterable[str] = ("bandit", "full")
                    ) -> dict[str, dict[str, Detection]]:
    """{checker: {cwe or 'all': Detection}} over tasks that have a reference fix."""
    out: dict[str, dict[str, Detection]] = {c: defaultdict(Detection) for c in checkers}
    for t in tasks:
        if not t.reference:
            continue
        for c in out:
            flagged = relevant(t.vulnerable, t.vul_type, c)
            clean = not relevant(t.reference, t.vul_type, c)
            out[c][t.vul_type].add(flagged, clean)
            out[c]["all"].add(flagged, clean)
    return {c: dict(v) for c, v in out.items()}


def markdown_table(table: dict[str, dict[str, Detection]]) -> str:
    """Rows per CWE: flagged / clean / both for each checker, as counts and shares."""
    checkers = list(table)
    keys = sorted(k for k in table[checkers[0]] if k != "all") + ["all"]
    head = "| CWE | pairs | " + " | ".join(f"{c}: vulnerable flagged | {c}: fix clean | {c}: both"
                                           for c in checkers) + " |"
    sep = "|---|---:|" + "---:|---:|---:|" * len(checkers)
    lines = [head, sep]
    for k in keys:
        cells = []
        for c in checkers:
            d = table[c].get(k, Detection())
            n = max(1, d.pairs)
            cells += [f"{d.flagged} ({d.flagged / n:.0%})", f"{d.clean} ({d.clean / n:.0%})",
                      f"**{d.both} ({d.both / n:.0%})**" if k == "all" else f"{d.both} ({d.both / n:.0%})"]
        label = "all" if k == "all" else k.upper()
        lines.append(f"| {label} | {table[checkers[0]].get(k, Detection()).pairs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""On SVEN (../shared/data/sven-python): fixes outrank originals; our rules close bandit's gaps."""
from __future__ import annotations

from pathlib import Path

import pytest

from rewards.security.detection import detection_table, relevant
from rewards.security.reward import SecurityRepairReward
from rewards.security.tasks import read_tasks

pytestmark = pytest.mark.needs_data


def test_val_fixes_rank_above_originals_where_the_flaw_is_seen(sven_dir: Path) -> None:
    reward = SecurityRepairReward()
    tasks = read_tasks(sven_dir / "val.jsonl")
    seen = [t for t in tasks if relevant(t.vulnerable, t.vul_type, "full")
            and not relevant(t.reference, t.vul_type, "full")]
    assert len(seen) >= 25
    for t in seen:
        row = {**t.to_columns(), "reference": None}     # no reference: it would be the fix itself
        fix, orig = reward.score(row, t.reference), reward.score(row, t.vulnerable)
        assert fix.reason == "ok" and fix.reward > orig.reward, (t.id, t.meta.get("func_name"), fix.reason)
        assert fix.security > 0.0, (t.id, fix.findings_before, fix.findings_after)
        assert fix.removed, t.id       # the ranking comes from findings that are gone, not only no-op
        assert fix.security > reward.finish(row, t.vulnerable, None).security   # the term itself ranks


def test_original_resubmitted_with_trivial_edit_gets_no_security_credit(sven_dir: Path) -> None:
    reward = SecurityRepairReward()
    for t in read_tasks(sven_dir / "val.jsonl")[:20]:
        if not relevant(t.vulnerable, t.vul_type, "full"):
            continue
        renamed = t.vulnerable.replace("(self", "(this").replace("self.", "this.")
        if renamed == t.vulnerable:
            continue
        s = reward.score(t.to_columns(), renamed)
        assert s.security < 1.0 and not s.secure, t.id


@pytest.mark.slow
def test_per_cwe_detection_beats_bandit_alone(sven_dir: Path) -> None:
    tasks = read_tasks(sven_dir / "train.jsonl") + read_tasks(sven_dir / "val.jsonl")
    table = detection_table(tasks)
    bandit, full = table["bandit"], table["full"]
    assert full["all"].pairs == 380
    assert full["all"].both / 380 >= 0.75 and full["all"].both >= bandit["all"].both + 80
    for cwe in ("cwe-022", "cwe-078", "cwe-079"):      # bandit sees (almost) none of these
        assert full[cwe].flagged >= bandit[cwe].flagged + 10, cwe
    assert full["cwe-089"].both >= bandit["cwe-089"].both

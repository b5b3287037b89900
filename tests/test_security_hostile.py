"""Hostile repairs in functional tests are contained by the real sandbox and score 0."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from rewards.security.reward import SecurityRepairReward

VULN = 'def greet(name):\n    return "<p>Hello, %s!</p>" % name\n'
FIX = 'import html\n\n\ndef greet(name):\n    return "<p>Hello, %s!</p>" % html.escape(name)\n'
TESTS = 'assert greet("Ann") == "<p>Hello, Ann!</p>"\nassert "&lt;" in greet("<i>")\n'
MARK = f"earl-pwned-{uuid.uuid4().hex[:8]}"


def hostile(prelude: str) -> str:
    """The honest fix with something nasty run when the function is called."""
    body = "\n".join("    " + line for line in prelude.strip().splitlines())
    return f'import html\nimport os\n\n\ndef greet(name):\n{body}\n    return "<p>Hello, %s!</p>" % html.escape(name)\n'


HOSTILE = {
    "fork_bomb": "while True:\n    os.fork()",
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))",
    "network": "import socket\nsocket.create_connection(('93.184.216.34', 80), timeout=2).close()",
    "writes_home": f"open(os.path.join(os.path.expanduser('~'), '{MARK}'), 'w').write('x')",
    "writes_outside": f"open('/tmp/../{MARK}', 'w').write('x')",
    "endless_loop": "while True:\n    pass",
}

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None and shutil.which("unshare") is None,
                                reason="no sandbox backend (bubblewrap or util-linux unshare) installed")


@pytest.fixture(scope="module")
def reward() -> SecurityRepairReward:
    return SecurityRepairReward(workers=2, functional={"wall_s": 4.0, "cpu_s": 4, "memory_mb": 256,
                                                        "max_procs": 16})


def test_honest_fix_passes_its_tests(reward: SecurityRepairReward) -> None:
    s = reward.score({"vulnerable": VULN, "tests": TESTS}, FIX)
    assert s.reason == "ok" and s.tests_passed is True and s.tests["verdict"] == "ok" and s.reward > 0.8


@pytest.mark.slow
def test_hostile_repairs_are_contained_and_score_zero(reward: SecurityRepairReward) -> None:
    names = sorted(HOSTILE)
    rows = [{"vulnerable": VULN, "tests": TESTS}] * len(names)
    scores = reward.score_batch(rows, [hostile(HOSTILE[n]) for n in names])
    for name, s in zip(names, scores):
        assert s.reward == 0.0, (name, s.reason, s.tests)
        assert s.tests_passed is False and s.reason.startswith("tests_"), (name, s.reason)
    assert scores[names.index("endless_loop")].tests["verdict"] in {"timeout", "cpu"}
    assert not (Path.home() / MARK).exists() and not Path("/", MARK).exists()
    assert os.system("true") == 0    # this process and its machine are still fine


def test_failing_tests_zero_the_reward_unless_configured(reward: SecurityRepairReward) -> None:
    wrong = FIX.replace("Hello", "Bye")
    assert reward.score({"vulnerable": VULN, "tests": TESTS}, wrong).reason == "tests_failed"
    lenient = SecurityRepairReward(require_tests_pass=False)
    s = lenient.score({"vulnerable": VULN, "tests": TESTS}, wrong)
    assert s.reason == "ok" and s.tests_passed is False and 0 < s.reward < reward.score(
        {"vulnerable": VULN, "tests": TESTS}, FIX).reward

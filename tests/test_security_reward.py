"""SecurityRepairReward: honest fixes beat gaming, the detail record says why, TRL signature holds."""
from __future__ import annotations

import textwrap

import pytest

from rewards.registry import compose
from rewards.security.reward import SecurityRepairReward, SecurityRewardConfig, extract_code

VULN = textwrap.dedent('''
    def find_user(conn, name):
        """Rows of users called `name`."""
        cur = conn.cursor()
        cur.execute("SELECT id, name FROM users WHERE name = '%s'" % name)
        rows = cur.fetchall()
        return rows
''')
FIX = VULN.replace("""WHERE name = '%s'" % name)""", """WHERE name = ?", (name,))""")
ROW = {"vulnerable": VULN, "func_name": "find_user", "vul_type": "cwe-089"}

GAMING = {
    "deleted": "def something_else():\n    return 1\n",
    "stub": "def find_user(conn, name):\n    return []\n",
    "pass_stub": 'def find_user(conn, name):\n    """Rows."""\n    pass\n',
    "no_op_comments": VULN.replace("cur = conn.cursor()", "cur = conn.cursor()   # safe now, trust me")
                          .replace('"""Rows of users called `name`."""', '"""Fixed the SQL injection."""'),
    "nosec": VULN.replace("% name)", "% name)  # nosec"),
    "syntax": "def find_user(conn, name)\n    return\n",
    "rename_only": VULN.replace("rows", "result"),
}


def wrap_in_try(code: str) -> str:
    lines = code.strip().splitlines()
    body = textwrap.indent("\n".join(lines[1:]), "    ")
    return f"{lines[0]}\n    try:\n{body}\n    except Exception:\n        pass\n"


@pytest.fixture(scope="module")
def reward() -> SecurityRepairReward:
    return SecurityRepairReward()


def test_honest_fix_scores_high_with_detail_record(reward: SecurityRepairReward) -> None:
    s = reward.score(ROW, FIX)
    assert s.reason == "ok" and s.secure and s.security == 1.0
    assert s.reward > 0.9
    assert "B608" in {f["rule"] for f in s.findings_before} and s.findings_after == []
    assert "B608" in s.removed and s.added == []
    assert 0.8 < s.similarity < 1.0


@pytest.mark.parametrize("attempt", sorted(GAMING) + ["wrapped_in_try_except_pass"])
def test_gaming_scores_below_honest_fix(reward: SecurityRepairReward, attempt: str) -> None:
    code = wrap_in_try(VULN) if attempt == "wrapped_in_try_except_pass" else GAMING[attempt]
    honest = reward.score(ROW, FIX).reward
    s = reward.score(ROW, code)
    assert s.reward < 0.5 * honest, (attempt, s.reason, s.reward)
    assert not (s.secure and s.reason == "ok" and s.security == 1.0 and s.reward > 0.5)


def test_gaming_reasons(reward: SecurityRepairReward) -> None:
    assert reward.score(ROW, GAMING["deleted"]).reason == "function_missing"
    assert reward.score(ROW, GAMING["stub"]).reason == "stub"
    assert reward.score(ROW, GAMING["no_op_comments"]).reason == "no_op"
    assert reward.score(ROW, GAMING["syntax"]).reason == "syntax_error"
    nosec = reward.score(ROW, GAMING["nosec"])
    assert nosec.reason == "no_op" or (nosec.security == 0.0 and not nosec.secure)
    wrapped = reward.score(ROW, wrap_in_try(FIX))
    assert "swallows_exceptions" in wrapped.flags and wrapped.reward < reward.score(ROW, FIX).reward / 2


def test_shrinking_fix_is_penalized(reward: SecurityRepairReward) -> None:
    tiny = "def find_user(conn, name):\n    return conn.execute('SELECT id, name FROM users WHERE name = ?', (name,)).fetchall()\n"
    s = reward.score(ROW, tiny)
    assert s.secure and s.reward < reward.score(ROW, FIX).reward


def test_new_findings_cost(reward: SecurityRepairReward) -> None:
    worse = FIX.replace("rows = cur.fetchall()", "rows = cur.fetchall()\n    import os\n    os.system('echo ' + name)")
    s = reward.score(ROW, worse)
    assert s.added and not s.secure and s.security < 1.0


def test_reference_similarity_counts(reward: SecurityRepairReward) -> None:
    with_ref = reward.score({**ROW, "reference": FIX}, FIX)
    assert with_ref.sim_reference == pytest.approx(1.0)
    assert with_ref.reward > reward.score(ROW, FIX).reward


def test_trl_signature_columns_and_chat_completions(reward: SecurityRepairReward) -> None:
    out = reward(["p"] * 3, [f"```python\n{FIX}```", [{"role": "assistant", "content": FIX}], GAMING["stub"]],
                 vulnerable=[VULN] * 3, reference=[None] * 3, func_name=["find_user"] * 3,
                 vul_type=["cwe-089"] * 3, tests=[None] * 3, id=["a", "b", "c"])
    assert out[0] == out[1] > 0.9 and out[2] == 0.0
    assert len(reward.last_scores) == 3 and reward.last_scores[2].reason == "stub"
    sven = reward(["p"], [FIX], func_src_before=[VULN], func_src_after=[FIX])
    assert sven[0] > 0.9
    with pytest.raises(ValueError, match="vulnerable"):
        reward(["p"], [FIX], code=[VULN])


def test_extract_code_prefers_fence() -> None:
    assert extract_code("Here:\n```python\nx = 1\n```\nbye") == "x = 1\n"


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="functional_share"):
        SecurityRewardConfig(functional_share=2)
    with pytest.raises(TypeError, match="unknown option"):
        SecurityRepairReward(weight_of_security=1)


def test_registry_builds_it_with_kwargs() -> None:
    funcs, weights = compose([{"name": "security_repair", "weight": 2.0, "kwargs": {"syntactic_weight": 0.0}}])
    out = funcs[0](["p"], [FIX], vulnerable=[VULN], func_name=["find_user"])
    assert weights == [2.0] and out == [1.0]


BROKEN = "def find_user(conn, name)\n    return conn.execute('%s' % name)\n"   # parses neither as 3 nor 2
PY2_VULN = textwrap.dedent('''
    def list_dir(path):
        print "listing", path
        return os.popen("ls " + path).read()
''')
PY2_FIX = "import subprocess\ndef list_dir(path):\n    print('listing', path)\n" \
          "    return subprocess.run(['ls', '--', path], capture_output=True, text=True).stdout\n"


def test_unparsable_task_scores_none_and_the_batch_goes_on(reward: SecurityRepairReward, caplog) -> None:
    """One task whose vulnerable code does not parse used to raise out of score_batch (no rewards for
    anyone); now that row is None with its reason, logged, and the others are scored."""
    with caplog.at_level("WARNING", logger="rewards.security.reward"):
        out = reward(["p"] * 3, [FIX, FIX, FIX], vulnerable=[VULN, BROKEN, VULN], id=["a", "bad", "c"],
                     func_name=["find_user"] * 3)
    assert out[1] is None and out[0] == out[2] and out[0] > 0.5
    detail = reward.last_scores[1].details
    assert detail["reward"] is None and "does not parse" in detail["error"] and detail["stage"] == "none"
    assert any("'bad'" in r.getMessage() and "not judged" in r.getMessage() for r in caplog.records)


def test_python2_task_is_judged_like_bandit_sees_it(reward: SecurityRepairReward) -> None:
    """SafeCoder/SVEN hold Python 2 functions: the reward's parse converts them as bandit's path does."""
    score = reward.score({"vulnerable": PY2_VULN, "func_name": "list_dir", "id": "py2"}, PY2_FIX)
    assert score.error is None and score.reward is not None and score.reward > 0.5
    assert score.findings_before and score.secure

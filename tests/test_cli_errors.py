"""User-facing errors are one line naming the flag or key, exit code 2, no traceback (unless --debug or
EARL_DEBUG=1); every command that takes problems takes the same specs."""
from __future__ import annotations

import pytest

from pipelines.cli import main, one_line


@pytest.mark.parametrize("cmd", ["eval", "entropy"])
@pytest.mark.parametrize("model, needle", [
    ("/nonexistent/model", "does not exist"),
    ("{tmp}", "not a model folder"),                       # a folder without config.json
])
def test_eval_and_entropy_reject_a_bad_model_in_one_line(cmd, model, needle, tmp_path, capsys):
    args = [cmd, "--model", model.format(tmp=tmp_path), "--problems", "rtl:2:0:heldout"]
    rc = main(args + (["--out", str(tmp_path / "o")] if cmd == "entropy" else []))
    err = capsys.readouterr().err
    assert rc == 2 and "--model" in err and needle in err
    assert len(err.strip().splitlines()) == 1 and "Repo id" not in err


def test_uncached_hub_id_offline_fails_at_once(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", "nobody/no-such-model", "--problems", "rtl:2"]) == 2
    err = capsys.readouterr().err
    assert "nobody/no-such-model" in err and "HF_HUB_OFFLINE" in err


def test_model_folder_without_tokenizer_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["entropy", "--model", str(tmp_path), "--problems", "rtl:2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer" in err and "sentencepiece" not in err


def test_entropy_takes_the_generator_specs_eval_takes():
    from pipelines.commands.entropy import load_problem_set
    problems = load_problem_set("rtl:3:0:heldout")
    assert len(problems) == 3 and all(p.id.startswith("rtlgen-heldout-0-") for p in problems)
    assert len(load_problem_set("security:2:0:heldout")) == 2


def test_value_and_os_errors_are_one_line_unless_debug(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.yaml"
    assert main(["train", "--config", str(missing)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    monkeypatch.setattr("pipelines.commands.gen_tasks.run", lambda args: (_ for _ in ()).throw(
        OSError(13, "Permission denied", str(tmp_path / "x"))))
    assert main(["gen-tasks", "--n", "1", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("earl gen-tasks: error:") and "Permission denied" in err and "Traceback" not in err
    with pytest.raises(OSError):
        main(["--debug", "gen-tasks", "--n", "1", "--out", "x"])
    monkeypatch.setenv("EARL_DEBUG", "1")
    with pytest.raises(OSError):
        main(["gen-tasks", "--n", "1", "--out", "x"])


def test_one_line_folds_newlines_and_names_the_file():
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x/y")) == \
        "[Errno 2] No such file or directory: '/x/y'"
    assert one_line(KeyError()) == "KeyError"

"""Problem loaders: VerilogEval folder, RTLLM tree, canonical JSONL, autodetection and clear errors."""
from __future__ import annotations

import json

import pytest

from rewards.verilog.extract import module_names
from rewards.verilog.loaders import load_problems
from rewards.verilog.problems import Problem, write_jsonl


def test_verilogeval_folder(verilog_eval_dir):
    problems = load_problems(verilog_eval_dir)
    assert len(problems) == 20
    p = {p.id: p for p in problems}["Prob009_popcount3"]
    assert (p.top_module, p.ref_module, p.harness) == ("TopModule", "RefModule", "verilogeval")
    assert "population count" in p.spec and "module tb" in p.testbench
    assert module_names(p.reference) == ["RefModule"]


def test_rtllm_tree_maps_module_names_and_data_files(rtllm_dir):
    problems = {p.id: p for p in load_problems(rtllm_dir)}
    assert len(problems) == 50
    booth = problems["multi_booth_8bit"]
    assert booth.top_module == "multi_booth_8bit" and booth.harness == "rtllm"
    assert module_names(booth.reference)[0] == "multi_booth_8bit"          # renamed from its verified name
    assert booth.meta["ref_module_original"] == "verified_multi_booth_8bit"
    assert "test_data.dat" in booth.files
    sub = problems["fixed_point_substractor"]      # folder name differs from the instantiated module
    assert sub.top_module == "fixed_point_subtractor"
    assert set(problems["asyn_fifo"].files) == {"wfull.txt", "rempty.txt", "tdata.txt"}
    assert problems["accu"].meta["category"] == "Arithmetic/Accumulator"


def test_jsonl_round_trip_and_dir_of_jsonl(tmp_path):
    probs = [Problem(id="a", spec="s", testbench="module tb; endmodule", reference="module RefModule; endmodule")]
    path = write_jsonl(probs, tmp_path / "set" / "problems.jsonl")
    assert load_problems(path) == probs
    assert load_problems(path.parent) == probs


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_problems(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a problem set"):
        load_problems(tmp_path / "empty")
    ve = tmp_path / "ve"
    ve.mkdir()
    (ve / "Prob001_x_prompt.txt").write_text("spec")
    (ve / "Prob001_x_test.sv").write_text("module tb; endmodule")
    with pytest.raises(FileNotFoundError, match="Prob001_x_prompt.txt.*no Prob001_x_ref.sv"):
        load_problems(ve)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "spec": "", "testbench": ""}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        load_problems(bad)
    dup = tmp_path / "dup.jsonl"
    row = json.dumps({"id": "a", "spec": "", "testbench": ""})
    dup.write_text(row + "\n" + row + "\n")
    with pytest.raises(ValueError, match="duplicate problem id 'a'"):
        load_problems(dup)
    rt = tmp_path / "rt" / "Cat" / "design"
    rt.mkdir(parents=True)
    (rt / "testbench.v").write_text("module t; design d(.a(a)); endmodule")
    (rt / "design_description.txt").write_text("d")
    with pytest.raises(FileNotFoundError, match="exactly one verified_"):
        load_problems(tmp_path / "rt")


def test_unjudgeable_problems_are_named_and_score_none(tmp_path, caplog):
    """A bench without a top module, or one comparing to a reference the row lacks, cannot judge any
    candidate: the loader names it, its samples score None (passed null in `earl score`), others go on."""
    from rewards.verilog.scoring import score_samples
    bench = ("module tb;\n  RefModule r();\n  TopModule t();\n"
             "  initial $display(\"Mismatches: 0 in 1 samples\");\nendmodule\n")
    rows = [{"id": "no_top", "spec": "", "testbench": "// no module here"},
            {"id": "no_ref", "spec": "", "testbench": bench}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="rewards.verilog.loaders"):
        problems = load_problems(path)
    assert len(problems) == 2
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 2 problems cannot be judged" in text and "no_top" in text and "no_ref" in text
    out = score_samples(str(path), [{"problem_id": pid, "completion": "module TopModule; endmodule"}
                                    for pid in ("no_top", "no_ref")], workers=1)
    assert [r["passed"] for r in out] == [None, None] and all(r["reward"] is None for r in out)

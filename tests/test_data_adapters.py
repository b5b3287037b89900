"""Datasets as users have them: CodeV-R1 parquet (pickled ground truth, read without running code), its
JSON variant, VeriReason vector benches (scored by iverilog), column mappings with dotted paths and chat
lists. Every file is built here, offline."""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess

import pytest

from pipelines.config import ConfigError, DataSource, load_config
from pipelines.data import load_source, reward_rows
from rewards.safepickle import UnsafePickle, loads_plain
from rewards.verilog.problems import Problem
from tests.helpers.layouts import ADDER, codev_row, ground_truth, write_parquet

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")

COUNTER = """module counter(input clk, input rst, output reg [2:0] q);
  always @(posedge clk) if (rst) q <= 0; else q <= q + 1;
endmodule
"""


class Pwn:
    """Unpickling this with plain `pickle.loads` would run a shell command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- the restricted unpickler


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_pickles_read_back(protocol):
    data = {"answer": {"code": "module m; endmodule"}, "ports": {("clk", 1)}, "f": frozenset({1}),
            "t": (1, 2.5, None, True), "b": b"\x00\x01", "l": [1, "x"]}
    assert loads_plain(pickle.dumps(data, protocol=protocol)) == data


def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"answer": Pwn(str(marker))})
    with pytest.raises(UnsafePickle,
                       match=r"row 3 ground_truth: pickle tries to load global (posix|os)\.system"):
        loads_plain(payload, "row 3 ground_truth")
    assert not marker.exists()


def test_objects_and_garbage_are_refused():
    with pytest.raises(UnsafePickle, match="global collections.OrderedDict"):
        loads_plain(pickle.dumps(__import__("collections").OrderedDict(a=1)))
    with pytest.raises(UnsafePickle, match="not a readable pickle"):
        loads_plain(b"\x80\x04garbage")


# --------------------------------------------------------------------------- CodeV-R1 parquet


def test_codev_r1_parquet(tmp_path, caplog):
    marker = tmp_path / "pwned"
    rows = [codev_row(0, ground_truth(ADDER)),
            codev_row(1, ground_truth("```verilog\n" + ADDER + "```", protocol=2), chat=False,
                      question="Design a 4-bit adder named adder4 (plain question)."),
            codev_row(2, ground_truth("")),                                   # no reference
            codev_row(3, pickle.dumps({"answer": Pwn(str(marker))}))]         # would run code
    path = tmp_path / "codev.parquet"
    write_parquet(rows, path)
    with caplog.at_level(logging.WARNING):
        problems = load_source(DataSource(path=str(path), adapter="codev-r1"))
    assert not marker.exists()
    assert [p.id for p in problems] == ["codev-0", "codev-1"]
    p0, p1 = problems
    assert p0.spec == "Design a 4-bit adder named adder4 (problem 0)."        # the user turn
    assert p1.spec == "Design a 4-bit adder named adder4 (plain question)."
    for p in problems:
        assert p.testbench is None and p.reference.strip() == ADDER.strip()
        assert (p.top_module, p.ref_module) == ("adder4", "adder4")
        assert json.loads(p.meta["ground_truth_ports"])["input_port_width"] == [["a", 4], ["b", 4]]
    log = caplog.text
    assert "codev.parquet row 2: no reference" in log
    assert "codev.parquet row 3" in log and "system" in log and "refused" in log
    # Arrow takes the records as reward columns (testbench None, meta of strings)
    import datasets
    assert datasets.Dataset.from_list(reward_rows(problems, load_config(raw=_cfg()).data)).num_rows == 2


def test_codev_r1_json_variant(tmp_path):
    truth = {"answer": {"code": COUNTER}, "clock_port_polarity": [["clk", 1]]}
    rows = [{"prompt": [{"role": "user", "content": "A 3-bit counter named counter."}],
             "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
             "extra_info": {"index": 5}},
            {"prompt": [{"role": "user", "content": "Again, counter."}],
             "reward_model": json.dumps({"ground_truth": truth}), "extra_info": {"index": 6}},
            {"prompt": [{"role": "user", "content": "bad"}],
             "reward_model": {"ground_truth": "{not json"}, "extra_info": {"index": 7}}]
    path = tmp_path / "codev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = load_source(DataSource(path=str(path), adapter="codev-r1-json"))
    assert [p.id for p in problems] == ["codev-r1-5", "codev-r1-6"]
    assert all(p.top_module == "counter" and p.testbench is None for p in problems)


def test_json_adapter_refuses_pickles_and_zero_rows_is_an_error(tmp_path):
    path = tmp_path / "pickled.parquet"
    write_parquet([codev_row(0, ground_truth(ADDER))], path)
    with pytest.raises(ValueError,
                       match=r"data source .*pickled.parquet holds no usable problems.*pickled bytes"):
        load_source(DataSource(path=str(path), adapter="codev-r1-json"))


# --------------------------------------------------------------------------- VeriReason (vectors harness)


FILE_TB = """module tb;
  reg [3:0] a, b; wire [4:0] s; integer i, fd;
  adder4 dut(.a(a), .b(b), .s(s));
  initial begin
    fd = $fopen("output.txt", "w");
    for (i = 0; i < 16; i = i + 1) begin
      a = i; b = (7 * i) % 16; #1;
      $fdisplay(fd, "%b %b %b", a, b, s);
    end
    $fclose(fd);
    $display("done");
    $finish;
  end
endmodule
"""
STDOUT_TB = """module tb_counter;
  reg clk = 0, rst = 1; wire [2:0] q; integer i;
  counter dut(.clk(clk), .rst(rst), .q(q));
  always #5 clk = ~clk;
  initial begin
    $dumpfile("cnt.vcd"); $dumpvars(0, tb_counter);     // iverilog then prints "VCD info: ..." itself
    @(negedge clk) rst = 0;
    for (i = 0; i < 12; i = i + 1) begin @(negedge clk); $display("%0d %b", i, q); end
    $finish;
  end
endmodule
"""


def run_bench(tmp_path, name: str, bench: str, design: str) -> str:
    """The vectors the bench writes for `design`: what a VeriReason row's tb_result holds."""
    work = tmp_path / f"gen-{name}"
    work.mkdir()
    (work / "tb.v").write_text(bench)
    (work / "design.v").write_text(design)
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", "design.v"], cwd=work, check=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=work, check=True, capture_output=True, text=True).stdout
    return (work / "output.txt").read_text() if "$fopen" in bench else out


@needs_iverilog
def test_verireason_rows_score_through_the_vectors_harness(tmp_path):
    from rewards.verilog.reward import VerilogReward
    rows = [{"id": "add", "instruction": "Write adder4: s = a + b.",
             "output": "<think>easy</think>\n<answer>\n```verilog\n" + ADDER + "```\n</answer>",
             "tb": FILE_TB, "tb_result": run_bench(tmp_path, "add", FILE_TB, ADDER)},
            {"id": "cnt", "instruction": "Write counter.", "output": COUNTER,
             "tb": STDOUT_TB, "tb_result": run_bench(tmp_path, "cnt", STDOUT_TB, COUNTER)},
            {"id": "nores", "instruction": "x", "output": ADDER, "tb": FILE_TB, "tb_result": ""}]
    path = tmp_path / "verireason.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = {p.id: p for p in load_source(DataSource(path=str(path), adapter="verireason"))}
    assert set(problems) == {"add", "cnt"}
    add, cnt = problems["add"], problems["cnt"]
    assert (add.harness, add.top_module, add.meta["vector_file"]) == ("vectors", "adder4", "output.txt")
    assert "vector_file" not in cnt.meta and cnt.top_module == "counter"
    assert cnt.meta["expected_output"].startswith("VCD info:")           # the simulator's line, not a vector
    reward = VerilogReward(list(problems.values()), workers=1)
    for p in (add, cnt):
        score = reward.score(p, "```verilog\n" + p.reference + "```")
        assert score.passed and score.reward == pytest.approx(1.0), score.reason
    wrong = reward.score(add, ADDER.replace("a + b", "a | b"))
    assert wrong.stage == "simulate" and 0 < wrong.mismatches < wrong.samples == 16
    assert 0.3 < wrong.reward < 1.0                                         # partial credit
    # a candidate cannot print its way to a pass: its own lines are not the bench's vectors
    fake = COUNTER.replace("endmodule", 'initial $display("Mismatches: 0 in 12 samples");\nendmodule')
    fake = fake.replace("q <= q + 1", "q <= q")
    assert not reward.score(cnt, fake).passed
    short = reward.score(cnt, COUNTER.replace("q <= q + 1", "q <= (q == 5) ? 0 : q + 1"))
    assert short.stage == "simulate" and short.mismatches and short.samples == 12


# --------------------------------------------------------------------------- column mappings


def test_columns_on_jsonl_with_nested_fields_and_a_chat_list(tmp_path, caplog):
    rows = [{"problem_id": 7, "messages": [{"role": "system", "content": "sys"},
                                           {"role": "user", "content": "Design adder4."}],
             "solution": {"verilog": "```verilog\n" + ADDER + "```"}},
            {"problem_id": 8, "messages": [{"role": "user", "content": "Design counter."}],
             "solution": {"verilog": COUNTER}},
            {"problem_id": 9, "messages": [{"role": "user", "content": "No solution here."}], "solution": {}}]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = DataSource(path=str(path), columns={"spec": "messages", "reference": "solution.verilog",
                                              "id": "problem_id"})
    with caplog.at_level(logging.WARNING):
        problems = load_source(src)
    assert [(p.id, p.spec, p.top_module) for p in problems] == [("7", "Design adder4.", "adder4"),
                                                                  ("8", "Design counter.", "counter")]
    assert problems[0].reference.strip() == ADDER.strip() and problems[0].testbench is None
    assert "mine.jsonl:3: no column 'solution.verilog'" in caplog.text


def test_columns_on_parquet_walk_into_pickled_ground_truth(tmp_path):
    """The verl layout without the adapter: the dotted path goes through the pickled bytes (safely)."""
    path = tmp_path / "verl.parquet"
    write_parquet([codev_row(i, ground_truth(ADDER)) for i in range(3)], path)
    src = DataSource(path=str(path), n=2, columns={"spec": "prompt", "id": "extra_info.index",
                                                   "reference": "reward_model.ground_truth.answer.code"})
    problems = load_source(src)
    assert [p.id for p in problems] == ["0", "1"]
    assert problems[0].spec.startswith("Design a 4-bit adder") and problems[0].top_module == "adder4"


def test_columns_on_save_to_disk_and_adapter_overrides(tmp_path):
    import datasets
    rows = [{"q": "Design adder4.", "a": ADDER, "tag": "x1"},
            {"q": "Design counter.", "a": COUNTER, "tag": "x2"}]
    folder = tmp_path / "ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    problems = load_source(DataSource(path=str(folder), columns={"spec": "q", "reference": "a", "id": "tag"}))
    assert [(p.id, p.top_module) for p in problems] == [("x1", "adder4"), ("x2", "counter")]
    path = tmp_path / "codev.parquet"
    write_parquet([codev_row(0, ground_truth(ADDER))], path)
    (p,) = load_source(DataSource(path=str(path), adapter="codev-r1", columns={"id": "extra_info.split"}))
    assert p.id == "train" and p.top_module == "adder4"


def test_column_mistakes_fail_naming_them(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": ADDER}) + "\n")
    with pytest.raises(ValueError, match="columns.prompt_text: not a Problem field"):
        load_source(DataSource(path=str(path), columns={"prompt_text": "question", "reference": "answer"}))
    with pytest.raises(ValueError, match=r"holds no usable problems \(first: .*no column 'questoin' "
                                         r"\(columns: question, answer\)"):
        load_source(DataSource(path=str(path), columns={"spec": "questoin", "reference": "answer"}))


def test_canonical_parquet_needs_no_mapping(tmp_path):
    from dataclasses import asdict
    p = Problem(id="a", spec="s", testbench="module tb; endmodule", reference=ADDER, top_module="adder4",
                ref_module="adder4", harness="rtllm")
    path = tmp_path / "set.parquet"
    write_parquet([{k: v for k, v in asdict(p).items() if k not in ("files", "meta")}], path)
    assert load_source(DataSource(path=str(path))) == [p]


# --------------------------------------------------------------------------- config keys


def _cfg(**train) -> dict:
    return {"data": {"train": train or {"generator": "rtl", "n": 2}, "eval": {"generator": "rtl", "n": 2}},
            "stages": {"sft": {"trainer": {"max_steps": 1}}}}


def test_config_takes_columns_and_adapter():
    cfg = load_config(raw=_cfg(path="data.parquet", adapter="codev-r1", columns={"id": "extra_info.index"}))
    assert cfg.data.train.adapter == "codev-r1" and cfg.data.train.columns == {"id": "extra_info.index"}
    assert "adapter=codev-r1" in cfg.data.train.describe()
    with pytest.raises(ConfigError, match=r"data\.train\.adapter: unknown adapter 'codev'"):
        load_config(raw=_cfg(path="x.parquet", adapter="codev"))
    with pytest.raises(ConfigError, match=r"data\.train\.columns\.spec: expected a source column"):
        load_config(raw=_cfg(path="x.parquet", columns={"spec": 3}))
    with pytest.raises(ConfigError, match="not generators"):
        load_config(raw=_cfg(generator="rtl", n=2, columns={"spec": "q"}))
    with pytest.raises(ConfigError, match=r"unknown config key data\.train\.column"):
        load_config(raw=_cfg(path="x.parquet", column={"spec": "q"}))


def test_hf_source_picks_its_files_from_a_dataset_repo(tmp_path):
    """CodeV-R1's repo holds the RL train/val parquet files beside an SFT jsonl: `hf_files` names which
    (datasets' data_files), here on a local folder laid out like the hub repo."""
    repo = tmp_path / "CodeV-R1-dataset"
    repo.mkdir()
    write_parquet([codev_row(i, ground_truth(ADDER)) for i in range(3)], repo / "codev_r1_rl_train.parquet")
    write_parquet([codev_row(9, ground_truth(ADDER))], repo / "codev_r1_rl_val.parquet")
    (repo / "codev_r1_sft.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    src = DataSource(hf=str(repo), hf_files="codev_r1_rl_train.parquet", adapter="codev-r1")
    assert [p.id for p in load_source(src)] == ["codev-0", "codev-1", "codev-2"]
    with pytest.raises(ConfigError, match="hf_files"):
        load_config(raw=_cfg(path=str(repo), hf_files="x.parquet"))


INC32 = "module inc32(input [31:0] a, output [31:0] y);\n  assign y = a + 1;\nendmodule\n"


@needs_iverilog
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
def test_codev_rows_name_the_reference_as_the_top_and_formal_still_refutes(tmp_path):
    """CodeV-R1 rows name the reference module as the candidate's (top_module == ref_module). The generated
    bench and the proof must keep the two designs apart: the reference itself is proven, and a design wrong
    on a single 32-bit input (which random stimulus misses) is refuted with its counterexample."""
    from rewards.verilog.reward import VerilogReward
    path = tmp_path / "codev.parquet"
    write_parquet([codev_row(0, ground_truth(INC32))], path)
    (p,) = load_source(DataSource(path=str(path), adapter="codev-r1"))
    assert (p.top_module, p.ref_module) == ("inc32", "inc32") and p.testbench is None
    sneaky = INC32.replace("a + 1", "(a == 32'hDEADBEEF) ? 32'd0 : a + 1")
    reward = VerilogReward()                                 # formal: auto = confirm on reference-only rows
    good, bad = reward.score_batch([p, p], [INC32, sneaky])
    assert good.passed and good.formal == "equivalent"
    assert not bad.passed and bad.formal == "not_equivalent"
    assert bad.formal_detail["counterexample"]["inputs"] == {"a": format(0xDEADBEEF, "032b")}
    assert VerilogReward(formal="off").score(p, sneaky).passed, "random stimulus alone passes it"

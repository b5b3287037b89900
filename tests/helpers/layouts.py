"""Small files in the layouts of public RL datasets, built inside tests (offline): CodeV-R1's verl parquet
(chat `prompt`, `reward_model.ground_truth` as pickled bytes of a plain dict)."""
from __future__ import annotations

import pickle
from pathlib import Path

ADDER = "module adder4(input [3:0] a, input [3:0] b, output [4:0] s);\n  assign s = a + b;\nendmodule\n"


def ground_truth(code: str, protocol: int = 4) -> bytes:
    """CodeV-R1's ground truth: the reference under answer.code plus its port fields, pickled."""
    return pickle.dumps({"answer": {"code": code, "lang": "verilog"},
                         "input_port_width": {("a", 4), ("b", 4)}, "output_port_width": {("s", 5)},
                         "clock_port_polarity": set(), "reset_port_polarity_sync": frozenset()},
                        protocol=protocol)


def codev_row(i: int, gt: bytes, *, chat: bool = True, question: str | None = None) -> dict:
    user = f"Design a 4-bit adder named adder4 (problem {i})."
    prompt = [{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": user}] if chat else []
    return {"data_source": "codev", "prompt": prompt, "question": question, "ability": "verilog",
            "reward_model": {"style": "rule", "ground_truth": gt},
            "extra_info": {"index": i, "split": "train"}}


def write_parquet(rows: list[dict], path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), path)


def codev_parquet(path: str | Path, n: int = 4, code: str = ADDER) -> Path:
    """An n-row CodeV-R1 RL parquet whose every row holds `code` as its reference."""
    write_parquet([codev_row(i, ground_truth(code)) for i in range(n)], path)
    return Path(path)

"""Helpers for the EARL tests and bench: a tiny offline Llama + byte-level BPE tokenizer, and a
GRPOConfig sized for 2 CPU cores. (pipelines/tiny.py builds the project's real tiny default; this one
is smaller still so trainer tests take seconds.)
"""
from __future__ import annotations

from pathlib import Path

import torch

from rewards.base import Score
from rewards.verilog.reward import STAGES as VERILOG_STAGES

VERILOG = """\
module TopModule(input a, input b, output out);
  assign out = a & b;
endmodule
module TopModule(input [7:0] in, output [7:0] out);
  always @(posedge clk) begin
    if (reset) out <= 8'd0;
    else out <= in + 1;
  end
endmodule
module TopModule(input sel, input [3:0] x, input [3:0] y, output [3:0] z);
  assign z = sel ? y : x;
endmodule
"""

PROMPTS = [
    "// and gate\nmodule TopModule(input a, input b, output out);\n",
    "// or gate\nmodule TopModule(input a, input b, output out);\n",
    "// xor gate\nmodule TopModule(input a, input b, output out);\n",
    "// mux\nmodule TopModule(input sel, input [3:0] x, input [3:0] y, output [3:0] z);\n",
]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([VERILOG] * 4 + PROMPTS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.padding_side = "left"
    return fast


def tiny_model(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def tiny_dataset(n: int = 8):
    from datasets import Dataset
    return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(n)]})


def grpo_args(out: Path, **overrides):
    from trl import GRPOConfig
    kw = {"output_dir": str(out), "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8,
              "max_steps": 1, "learning_rate": 1e-3, "logging_steps": 1, "report_to": [], "save_strategy": "no", "use_cpu": True,
              "seed": 0, "temperature": 1.0, "beta": 0.0, "dataloader_num_workers": 0, "disable_tqdm": True}
    kw.update(overrides)
    return GRPOConfig(**kw)


def length_reward(prompts, completions, **kwargs):
    """Cheap deterministic reward with spread inside a group (so advantages are non-zero)."""
    return [float(len(c) % 7) for c in completions]


class StagedReward:
    """A reward that keeps ``last_scores`` (rewards.base) like rewards.verilog.reward.VerilogReward."""
    __name__ = "staged"
    stages = VERILOG_STAGES

    def __init__(self):
        self.last_scores: list[Score] | None = None

    def __call__(self, prompts, completions, **kwargs):
        stages = ["pass", "compile", "syntax", "pass"]
        self.last_scores = [Score(float(stages[i % 4] == "pass"), stages[i % 4] == "pass", stages[i % 4])
                            for i in range(len(completions))]
        return [s.reward for s in self.last_scores]

"""Issue 10's recipe end to end on CPU (configs/distill_tiny.py:quick, about 80 s): the MoE teacher's
cold start and GRPO, a dense Qwen2 student's cold start from random init, teacher rejection
sampling, the student's SFT on those samples, the student's GRPO, and the comparison table."""

import json
import os

import jax
import numpy as np
import pytest

import r1
from r1.data import sources
from r1.stages import pipeline
from tests.test_configs import load
from tests.stages.test_four_stage_pipeline import recording_stages

STAGES = ("sft", "grpo", "sft", "sample", "sft", "grpo")
DIRS = tuple(f"{i}_{name}" for i, name in enumerate(STAGES))


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def same_weights(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow   # 130 s; CI runs the distillation step and stage tests (test_distill.py)
def test_teacher_distilled_into_a_dense_student_next_to_rl_only(tmp_path):
  config = load("distill_tiny.py", "quick")
  assert config.pipeline.stages == STAGES
  workdir = str(tmp_path)
  configs = {}
  results = pipeline.run(config, workdir, recording_stages(configs))
  d = {name: os.path.join(workdir, name) for name in DIRS}
  policy = {name: r1.load_hf_checkpoint(os.path.join(d[name], "policy")) for name in DIRS}

  # Teacher: DeepSeek MoE; student: dense Qwen2 (GQA) from random init, one tokenizer throughout.
  assert policy["1_grpo"].config.architecture == "deepseek" and policy["1_grpo"].config.n_routed_experts
  for name in ("2_sft", "4_sft", "5_grpo"):
    assert policy[name].config.architecture == "qwen2" and policy[name].config.kv_heads == 2, name
  assert configs["2_sft"].init.hf_dir == "" and configs["2_sft"].model.name == "tiny_qwen2"
  for name in DIRS[2:]:
    assert configs[name].tokenizer.path == os.path.join(d[DIRS[DIRS.index(name) - 1]], "tokenizer"), name

  # Rejection sampling ran the teacher (and exported it unchanged); the distilled student trained
  # on exactly its kept samples, starting from the student's cold start.
  assert configs["3_sample"].init.hf_dir == os.path.join(d["1_grpo"], "policy")
  assert same_weights(policy["3_sample"].variables, policy["1_grpo"].variables)
  report = read_json(os.path.join(d["3_sample"], "sample_report.json"))
  assert report["kept"] >= 1 and report["source_policy"] == os.path.join(d["1_grpo"], "policy"), report
  distill = configs["4_sft"]
  assert distill.init.hf_dir == os.path.join(d["2_sft"], "policy")
  assert (distill.sft.source, distill.sft.path) == ("jsonl", os.path.join(d["3_sample"], "sft_data.jsonl"))
  assert len(sources.load_sft(distill.sft.path)) == report["kept"]
  assert not same_weights(policy["4_sft"].params, policy["2_sft"].params)

  # The RL-only arm starts from the same cold start, which is also its GRPO reference point.
  assert configs["5_grpo"].init.hf_dir == os.path.join(d["2_sft"], "policy")
  grpo_before = read_json(os.path.join(d["5_grpo"], "eval_report.json"))["before"]["datasets"]["held_out"]
  base_final = read_json(os.path.join(d["2_sft"], "eval_report.json"))["datasets"]["held_out"]
  assert grpo_before["pass@1"] == base_final["pass@1"] and grpo_before["format_rate"] == base_final["format_rate"]

  # comparison.md / .json: five rows on the same problems, read from the stages' own evaluations.
  comparison = read_json(os.path.join(workdir, "comparison.json"))
  assert comparison == results["comparison"]
  assert [r["stage"] for r in comparison["rows"]] == ["1_grpo", "1_grpo", "5_grpo", "4_sft", "5_grpo"]
  teacher_after = read_json(os.path.join(d["1_grpo"], "eval_report.json"))["after"]["datasets"]["held_out"]
  assert comparison["rows"][1]["pass@1"] == teacher_after["pass@1"]
  assert comparison["n_eval"] == config.eval.num_examples and comparison["k"] == config.eval.k
  with open(os.path.join(workdir, "comparison.md"), encoding="utf-8") as f:
    assert "student: distilled (teacher samples -> SFT)" in f.read()

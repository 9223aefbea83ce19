"""R1's four stages end to end on the tiny config (issue 7's acceptance): cold-start SFT, GRPO,
rejection sampling, SFT on the kept samples, GRPO, evaluation, every stage's output feeding the
next, and a re-run of the same pipeline skips everything.

The task is made easy (one-digit additions, answers 0..18) and the cold start long and fast enough
(200 steps at lr 1e-2) for the policy to write the R1-Zero format almost always and to be right
about 7% of the time, so rejection sampling keeps a handful of its 128 completions. Every
sampler call has the same shape (8 prompts x 2 samples x 64 tokens), so the rollouts, the
rejection sampling and the evals share one compiled sampler: the whole pipeline runs in about a
minute on 2 CPU cores.
"""

import json
import os
import time

import jax
import numpy as np
import pytest

import r1
from configs import tiny_r1_zero
from r1 import main
from r1.checkpoints.manager import restore_variables
from r1.data import sources
from r1.stages import pipeline

STAGES = ("sft", "grpo", "sample", "sft", "grpo", "eval")
DIRS = tuple(f"{i}_{name}" for i, name in enumerate(STAGES))


def four_stage_config():
  """The quick tiny config as R1's pipeline, sized to run in about a minute."""
  c = tiny_r1_zero.get_config("quick")
  c.pipeline.stages = STAGES
  c.data.task_knobs.update(min_digits=1, max_digits=1, ops="+")  # answers 0..18
  c.tokenizer.corpus_size = 300
  c.sft.seq_len = 160                       # a templated one-digit example is ~140 tokens
  c.sft.batch_size = 4
  # One sampler shape for every stage (8 prompts x 2 samples), compiled once.
  c.data.batch_size = c.eval.batch_size = c.sample.batch_size = 8
  c.rollout.num_samples = c.eval.k = c.sample.k = 2
  c.rollout.max_new_tokens = 64             # worked solutions are ~50 tokens
  c.eval.num_examples = 8
  c.sample.num_prompts = 64                 # 128 completions; ~7% pass the filter
  c.checkpoint.save_every = 1000            # the final step is always saved
  grpo = {"total_steps": 1, "optimizer": {"learning_rate": 1e-4, "warmup_steps": 0, "schedule": "constant"}}
  c.pipeline.stage_overrides = (
      {"total_steps": 200, "optimizer": {"learning_rate": 1e-2, "warmup_steps": 2}, "eval": {"at_end": True}},
      grpo,
      {},
      {"total_steps": 2, "optimizer": {"learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant"},
       "eval": {"at_end": True}},
      grpo,
      {},
  )
  return c


def read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def exported(stage_dir):
  return r1.load_hf_checkpoint(os.path.join(stage_dir, "policy"))


def same_weights(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def grpo_reference(stage_dir, like):
  """The reference params a GRPO stage saved: the frozen copy of the policy it started from."""
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
  return restore_variables(os.path.join(stage_dir, "checkpoints"), {"ref_params": target})["ref_params"]


def recording_stages(configs: dict) -> dict:
  """r1.main's stage functions, each also recording the config it ran with in configs[stage dir name]."""
  stage_fns = main._training_stages()  # pylint: disable=protected-access

  def recording(name):
    def run(stage_config, stage_dir):
      configs[os.path.basename(stage_dir)] = stage_config
      return stage_fns[name](stage_config, stage_dir)
    return run

  return {name: recording(name) for name in stage_fns}


# 170 s in a full run; CI runs the two-stage pipeline end to end (test_training_integration.py), the
# sample stage and its SFT data (test_sample_stage.py) and the eval stage (test_eval_stage.py).
@pytest.mark.slow
def test_four_stage_pipeline_end_to_end_then_skips(tmp_path, capsys):
  config = four_stage_config()
  workdir = str(tmp_path)
  stage_fns = main._training_stages()  # pylint: disable=protected-access
  configs = {}
  start = time.time()
  pipeline.run(config, workdir, recording_stages(configs))
  elapsed = time.time() - start
  assert sorted(configs) == sorted(DIRS)
  d = {name: os.path.join(workdir, name) for name in DIRS}

  # Every training stage exported its policy and tokenizer and wrote its metrics.
  for name in DIRS[:5]:
    assert os.path.exists(os.path.join(d[name], "policy", "config.json")), name
    assert os.path.exists(os.path.join(d[name], "tokenizer", "tokenizer.model")), name
  for name in ("0_sft", "1_grpo", "3_sft", "4_grpo"):
    assert read_jsonl(os.path.join(d[name], "metrics.jsonl"))[-1]["step"] == configs[name].total_steps, name
  assert read_json(os.path.join(workdir, "pipeline.json"))["stages"] == list(STAGES)

  # Each stage after the first starts from its predecessor's export, with its tokenizer.
  for i in range(1, len(DIRS)):
    assert configs[DIRS[i]].init.hf_dir == os.path.join(d[DIRS[i - 1]], "policy")
    assert configs[DIRS[i]].tokenizer.path == os.path.join(d[DIRS[i - 1]], "tokenizer")
  policies = {name: exported(d[name]) for name in DIRS[:5]}
  # GRPO's reference is the frozen copy of the weights it started from: the previous export.
  for grpo, previous in (("1_grpo", "0_sft"), ("4_grpo", "3_sft")):
    assert same_weights(grpo_reference(d[grpo], policies[previous].params), policies[previous].params), grpo
  # The cold start learned the format: the weights are not the random init's.
  assert read_json(os.path.join(d["0_sft"], "eval_report.json"))["datasets"]["held_out"]["format_rate"] > 0.5
  # Rejection sampling exports the policy it sampled from unchanged.
  assert same_weights(policies["2_sample"].variables, policies["1_grpo"].variables)

  # The sample stage kept correct, well-formatted completions, with their provenance.
  report = read_json(os.path.join(d["2_sample"], "sample_report.json"))
  rows = read_jsonl(os.path.join(d["2_sample"], "sft_data.jsonl"))
  assert report["generated"] == 128 and report["kept"] == len(rows) >= 1, report
  for row in rows:
    assert {"id", "prompt", "response", "prompt_id", "sample_index", "gold", "rewards", "num_tokens",
            "source_policy", "seed"} <= set(row)
    assert row["rewards"]["accuracy"] == 1.0 and row["rewards"]["format"] == 1.0, row
    assert f"<answer>{row['gold']}</answer>" in row["response"], row
    assert row["source_policy"] == os.path.join(d["1_grpo"], "policy")

  # Stage 3 trained on exactly that file, and it changed the weights.
  sft_data = configs["3_sft"].sft
  assert sft_data.source == "jsonl" and sft_data.path == os.path.join(d["2_sample"], "sft_data.jsonl")
  assert [(ex.prompt, ex.response) for ex in sources.load_sft(sft_data.path)] == [
      (row["prompt"], row["response"]) for row in rows]
  assert not same_weights(policies["3_sft"].params, policies["2_sample"].params)

  # Stage 4's first eval is stage 3's final one (same policy, same eval seed); stage 5 evaluates stage 4's export.
  final_3 = [r for r in read_jsonl(os.path.join(d["3_sft"], "metrics.jsonl")) if "final_eval/pass@1" in r][-1]
  first_4 = [r for r in read_jsonl(os.path.join(d["4_grpo"], "metrics.jsonl")) if "eval/pass@1" in r][0]
  assert first_4["step"] == 0 and first_4["eval/pass@1"] == final_3["final_eval/pass@1"]
  eval_report = read_json(os.path.join(d["5_eval"], "eval_report.json"))
  assert eval_report["stage"]["policy"] == os.path.join(d["4_grpo"], "policy")
  assert eval_report["datasets"]["held_out"]["n_eval"] == config.eval.num_examples

  # The same command again: every training stage is skipped and the eval report is reused.
  capsys.readouterr()
  start = time.time()
  pipeline.run(config, workdir, stage_fns)
  rerun = time.time() - start
  out = capsys.readouterr().out
  assert out.count("done, skipping") == 5 and "is up to date, not re-evaluating" in out, out
  assert rerun < 10, rerun
  print(f"four-stage pipeline: {elapsed:.1f} s, re-run {rerun:.2f} s")

"""The SFT and GRPO stages as two CPU processes (4 fake devices each, joined by
jax.distributed.initialize, each reading its own rows of every batch) agree with one 8-device
process running the same `python -m r1.main` command: per-step losses and rewards, and the exported
policy. The SFT stage is also stopped after 3 steps and resumed to 5 from its multi-host checkpoint.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from r1.checkpoints import safetensors_io
from tests.multidevice.test_multiprocess import _env, _free_port, _run_together
from tests.multidevice.test_sharded_model import ROOT

# Tiny and fast: the quick repro config with a 400-piece tokenizer (near-uniform random policy
# then stops within 32 tokens often enough that DAPO's length penalty gives every group unequal
# rewards, so GRPO's advantages and gradients are far from zero), on a data=2 x fsdp=4 mesh.
COMMON = ["--config=configs/tiny_r1_zero.py:quick", "--config.mesh.shape.data=2", "--config.mesh.shape.fsdp=4",
          "--config.tokenizer.vocab_size=400", "--config.data.length_buckets=(512,)",
          "--config.optimizer.schedule=constant", "--config.checkpoint.save_every=2"]
SFT = ["--config.stage=sft", "--config.sft.batch_size=8", "--config.sft.seq_len=256"]
GRPO = ["--config.stage=grpo", "--config.total_steps=2", "--config.data.batch_size=8", "--config.rollout.num_samples=4",
        "--config.rollout.max_new_tokens=32", "--config.rollout.overlong=penalty", "--config.rollout.overlong_buffer=32",
        "--config.eval.at_start=false", "--config.eval.num_examples=8", "--config.eval.k=4"]


def _fast_env(devices, cache_dir):
  # A resumed run reuses its first launch's programs (tests/conftest.py skips LLVM's optimisations).
  return dict(_env(devices), JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _main(workdir, flags, processes):
  """Runs `python -m r1.main` over 8 CPU devices: one process, or `processes` joined ones."""
  argv = [sys.executable, "-m", "r1.main", f"--workdir={workdir}", *COMMON, *flags]
  cache = workdir.parent / "xla_cache"  # One per run: the one-process programs are not the two's.
  if processes == 1:
    proc = subprocess.run(argv + ["--multihost=false"], cwd=ROOT, env=_fast_env(8, cache), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return
  port = _free_port()
  _run_together([argv + ["--multihost=true"]] * processes,
                [dict(_fast_env(8 // processes, cache), JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                      JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i)) for i in range(processes)])


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _policy(workdir):
  weights = safetensors_io.SafetensorsFile(os.path.join(workdir, "policy", "model.safetensors"))
  return {key: weights.get(key) for key in weights.keys()}


def _assert_close(one, two, keys, rtol=1e-5):
  for a, b in zip(one, two, strict=True):
    assert a["step"] == b["step"]
    for key in keys:
      assert abs(a[key] - b[key]) <= rtol * max(abs(a[key]), 1e-3), (key, a["step"], a[key], b[key])


def _assert_same_policy(one, two):
  # Adam moves every weight by about lr = 1e-3 per step whatever the size of its gradient, so a
  # weight whose gradient is ~0 moves by rounding noise: compare on the scale of one step.
  one, two = _policy(one), _policy(two)
  assert sorted(one) == sorted(two)
  for key, x in one.items():
    assert np.abs(np.asarray(x, np.float32) - np.asarray(two[key], np.float32)).max() <= 1e-5, key


@pytest.mark.slow   # 280 s; CI runs test_multiprocess.py's GRPO step and the sample stage on two processes
def test_sft_and_grpo_stages_on_two_processes_agree_with_one(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  # SFT: 5 steps in one go on one process; on two, 3 steps, then the same command with 5 resumes
  # from the step-3 checkpoint (params, optimizer, each process's data position).
  _main(one / "sft", SFT + ["--config.total_steps=5"], 1)
  _main(two / "sft", SFT + ["--config.total_steps=3"], 2)
  assert sorted(os.listdir(two / "sft" / "checkpoints")) == ["2", "3"]
  _main(two / "sft", SFT + ["--config.total_steps=5"], 2)
  sft_one, sft_two = _metrics(one / "sft"), _metrics(two / "sft")
  assert [m["step"] for m in sft_two] == [1, 2, 3, 4, 5]
  _assert_close(sft_one, sft_two, ("loss", "nll", "grad_norm"))
  assert sft_one[-1]["loss"] < sft_one[0]["loss"] - 0.1  # It trains (on the same batches).
  _assert_same_policy(one / "sft", two / "sft")

  # GRPO from the (one-process) SFT policy and its tokenizer, in both runs.
  start = [f"--config.init.hf_dir={one / 'sft' / 'policy'}", f"--config.tokenizer.path={one / 'sft' / 'tokenizer'}"]
  _main(one / "grpo", GRPO + start, 1)
  _main(two / "grpo", GRPO + start, 2)
  grpo_one, grpo_two = _metrics(one / "grpo"), _metrics(two / "grpo")
  train_one = [m for m in grpo_one if "loss" in m]
  train_two = [m for m in grpo_two if "loss" in m]
  assert len(train_one) == 2
  # The groups' rewards differ, so the update is a real one.
  assert all(m["reward_std"] > 0.01 and m["grad_norm"] > 1e-3 for m in train_one), train_one
  _assert_close(train_one, train_two, ("reward", "reward_std", "completions/mean_length", "rewards/overlong/mean",
                                       "advantages/std", "grad_norm", "kl", "entropy"))
  # The loss is ~0 on policy (mean advantage 0): compare it on the scale of |A| ~ 1.
  assert all(abs(a["loss"] - b["loss"]) <= 1e-6 for a, b in zip(train_one, train_two))
  _assert_same_policy(one / "grpo", two / "grpo")
  # The final evaluation ran on the two processes' mesh and was written once.
  with open(two / "grpo" / "eval_report.json") as f:
    assert json.load(f)["after"]["datasets"]["held_out"]["n_eval"] == 8


# 90 s in a full run; CI runs the kept rows' gather on two processes (below) and the GRPO step on two
# processes (test_multiprocess.py).
@pytest.mark.slow
def test_sample_stage_on_two_processes_agrees_with_one(tmp_path):
  # 12 prompts in sampler batches of 8: the second batch's 4 real prompts are all process 0's rows,
  # so process 1 filters none there (and pads). The random-init policy keeps nothing (min_kept=0),
  # but stops within 32 tokens often enough that the report's counts and rates are informative.
  flags = ["--config.stage=sample", "--config.sample.num_prompts=12", "--config.sample.k=4",
           "--config.sample.batch_size=8", "--config.rollout.max_new_tokens=32", "--config.sample.min_kept=0"]
  _main(tmp_path / "one", flags, 1)
  _main(tmp_path / "two", flags, 2)
  with open(tmp_path / "one" / "sample_report.json") as f:
    report = json.load(f)
  assert report["prompts"] == 12 and report["generated"] == 48
  assert 0 < report["pass_rates"]["stopped"] < 1, report
  # The same rows in the same order, and the same counts, rates and mean lengths: byte for byte.
  for name in ("sft_data.jsonl", "sample_report.json"):
    assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
  _assert_same_policy(tmp_path / "one", tmp_path / "two")  # Exported unchanged (the same init).


def test_sample_selection_gathers_kept_rows_in_prompt_order(tmp_path):
  # The random policy above keeps nothing; here scripted completions are kept on both processes.
  from tests.multidevice import multiprocess_sample_gather as script  # pylint: disable=g-import-not-at-top
  port = _free_port()
  _run_together([[sys.executable, script.__file__, str(tmp_path), str(port), str(i), "2"] for i in range(2)],
                [_env(1)] * 2)
  rows, _, stats, lengths = script.scripted_selection(list(range(len(script.EXAMPLES))))
  for i in range(2):
    with open(tmp_path / f"process_{i}.json") as f:
      got = json.load(f)
    assert got["indices"] == ([0, 1, 4, 5] if i == 0 else [2, 3])  # Interleaved across the batches.
    assert len(got["rows"]) == 12 and got["rows"] == rows
    assert json.dumps(got["stats"]) == json.dumps(stats)
    assert got["lengths"] == lengths.tolist()


def test_reward_model_scores_each_process_rows_as_one_process_does(tmp_path):
  # The GRPO stage's reward model on two processes: each scores its own rows (narrower on process
  # 0), placed as its rows of one global batch; the scores match one 8-device process's.
  import jax  # pylint: disable=g-import-not-at-top
  from r1.model import get_model_config  # pylint: disable=g-import-not-at-top
  from r1 import reward_model as rm_lib  # pylint: disable=g-import-not-at-top
  script = os.path.join(os.path.dirname(__file__), "multiprocess_reward_model.py")
  rm_dir, one, two = tmp_path / "rm", tmp_path / "one", tmp_path / "two"
  rm_lib.save_reward_model(rm_lib.init_reward_model(get_model_config("tiny_v3", num_hidden_layers=2),
                                                    jax.random.key(0)), str(rm_dir))
  one.mkdir()
  two.mkdir()
  proc = subprocess.run([sys.executable, script, str(rm_dir), str(one)], cwd=ROOT, env=_env(8), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  port = _free_port()
  _run_together([[sys.executable, script, str(rm_dir), str(two), str(port), str(i), "2"] for i in range(2)],
                [_env(4)] * 2)
  with open(one / "process_0.json") as f:
    expected = np.asarray(json.load(f)["scores"])
  parts = []
  for i in range(2):
    with open(two / f"process_{i}.json") as f:
      parts.append(json.load(f))
  assert [p["rows"] for p in parts] == [[0, 8], [8, 16]] and parts[0]["width"] < parts[1]["width"], parts
  got = np.concatenate([p["scores"] for p in parts])
  assert expected.shape == (16,) and expected.std() > 1e-4  # A random head: every sequence its own score.
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

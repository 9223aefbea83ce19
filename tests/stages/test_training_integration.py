"""The training program end to end on CPU: the tiny pipeline's outputs, and exact resume after
SIGTERM (the TPU preemption signal)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRPO_ONLY = ["--config=configs/tiny_r1_zero.py:quick", "--config.stage=grpo", "--config.total_steps=4",
             "--config.eval.at_start=False", "--config.checkpoint.save_every=1"]


def _env():
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")


def _main(workdir, flags, **kwargs):
  return subprocess.Popen([sys.executable, "-m", "r1.main", f"--workdir={workdir}", *flags], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _deterministic(rows):
  """Per-step metrics that must not depend on wall time."""
  keys = ("reward", "reward_std", "accuracy", "loss", "kl", "entropy", "grad_norm", "completions/mean_length")
  return {r["step"]: {k: r[k] for k in keys if k in r} for r in rows if "reward" in r}


def test_quick_pipeline_writes_every_output(tmp_path):
  proc = _main(tmp_path, ["--config=configs/tiny_r1_zero.py:quick"])
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  for stage in ("0_sft", "1_grpo"):
    d = tmp_path / stage
    assert (d / "policy" / "config.json").exists() and (d / "tokenizer" / "tokenizer.model").exists()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(d / "tb"))
    assert os.listdir(d / "checkpoints")
    assert _metrics(d)[-1]["step"] >= 2
  grpo = [row for row in _metrics(tmp_path / "1_grpo") if "reward" in row]
  assert {"reward", "kl", "entropy", "clip_ratio/low_mean", "completions/mean_length", "time/generate",
          "compiles/decode", "reflection/any", "reflection/wait"} <= set(grpo[-1])
  assert 0.0 <= grpo[-1]["reflection/any"] <= 1.0
  # The train/inference mismatch of every step: the sampler's logprobs against the training
  # forward's at the same parameters. float32 on one CPU: the two computations agree closely.
  for row in grpo:
    assert 0.0 <= row["mismatch/abs_mean"] <= row["mismatch/abs_max"] < 1e-2, row
    assert 0.0 <= row["mismatch/kl"] < 1e-4, row
  with open(tmp_path / "1_grpo" / "eval_report.json") as f:
    report = json.load(f)
  assert 0.0 <= report["after"]["datasets"]["held_out"]["pass@1"] <= 1.0
  assert (tmp_path / "1_grpo" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # The repro's report: the fields a script checks, the table, samples, the curves.
  with open(tmp_path / "report.json") as f:
    summary = json.load(f)
  for key in ("pass@1_before", "pass@1_after", "cons@k_before", "cons@k_after", "format_reward_after"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert (summary["k"], summary["n_eval"]) == (2, 16) and summary["wall_seconds"] > 0
  assert summary["pass@1_after"] == report["after"]["datasets"]["held_out"]["pass@1"]
  # GRPO starts from the policy SFT just evaluated, with the same protocol: its "before" is that
  # evaluation, not a second one (the same numbers; protocol.reuse_key says when that holds).
  with open(tmp_path / "0_sft" / "eval_report.json") as f:
    sft_final = json.load(f)
  assert sft_final.pop("reuse_key")["policy"] and report["before"] == sft_final
  assert "not evaluating it again" in out
  # A quiet terminal: progress lines and tables, no library INFO logs (orbax alone wrote ~1,000).
  assert not [line for line in err.splitlines() if line[:1] == "I" and line[1:5].isdigit()], err[:2000]
  assert sum(line.startswith("held_out ") for line in out.splitlines()) == 2, out   # SFT's final, GRPO's after
  assert len(out.splitlines()) + len(err.splitlines()) < 60, out + err
  assert "| pass@1 (95% CI) |" in (tmp_path / "results.md").read_text()
  assert "after GRPO" in (tmp_path / "samples.md").read_text()
  assert (tmp_path / "curves.png").read_bytes() == (tmp_path / "1_grpo" / "curves.png").read_bytes()
  # Re-running the same command skips both finished stages.
  proc = _main(tmp_path, ["--config=configs/tiny_r1_zero.py:quick"])
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0 and out.count("done, skipping") == 2, out + err[-2000:]
  # Same seed, same numbers: the (slow) SIGTERM test below runs one GRPO stage three times to equal
  # metrics, the preemption test the whole pipeline to an equal report, and CI's checkpointer test
  # (test_checkpoint_manager.py) a resumed run to the uninterrupted one's.


# 125 s in a full run; CI runs the checkpointer's real-SIGTERM resume (test_checkpoint_manager.py).
@pytest.mark.slow
def test_sigterm_then_rerun_resumes_exactly(tmp_path):
  reference = _main(tmp_path / "reference", GRPO_ONLY)
  _, err = reference.communicate(timeout=600)
  assert reference.returncode == 0, err[-3000:]
  expected = _deterministic(_metrics(tmp_path / "reference"))
  assert sorted(expected) == [1, 2, 3, 4]

  workdir = tmp_path / "preempted"
  proc = _main(workdir, GRPO_ONLY)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if (workdir / "metrics.jsonl").exists() and any(r["step"] >= 1 for r in _metrics(workdir)):
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.2)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert saved and saved[-1] < 4, saved  # stopped before the end, with a checkpoint

  proc = _main(workdir, GRPO_ONLY)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert "resumed from step" in out
  resumed = _deterministic(_metrics(workdir))
  assert sorted(resumed) == [1, 2, 3, 4]
  assert resumed == expected


def test_dapo_dynamic_sampling_and_overlong_penalty(tmp_path):
  proc = _main(tmp_path, GRPO_ONLY[:1] + ["--config.stage=grpo", "--config.total_steps=1", "--config.eval.at_start=False",
                                          "--config.eval.num_examples=4", "--config.rollout.dynamic_sampling=True",
                                          "--config.rollout.max_extra_rounds=1", "--config.rollout.overlong=penalty",
                                          "--config.rollout.max_new_tokens=32", "--config.rollout.overlong_buffer=8"])
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  row = [r for r in _metrics(tmp_path) if "reward" in r][0]
  # A random policy never answers right: every group is flat, so the extra round is drawn.
  assert row["rollout/rounds"] == 2
  assert row["frac_reward_zero_std"] <= 1.0
  # 32-token completions from a random policy mostly run to the end: the penalty is there.
  assert -1.0 <= row["rewards/overlong/mean"] < 0.0

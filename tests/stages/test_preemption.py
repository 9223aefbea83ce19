"""Preemption inside a GRPO step and the report of a resumed pipeline (issue items 4 and 5).

The quick tiny pipeline (cold-start SFT, then GRPO) runs once uninterrupted. A second workdir starts
with that run's finished SFT stage (the stage a preempted GRPO stage follows; copied, to keep the
test near a minute and a half) and its GRPO stage is stopped by a real SIGTERM twice, the pipeline
being rerun after each stop:
  1. in the rewards of GRPO step 2: the step is dropped, step 1 is saved (it was not due) with the
     data position from before step 2 drew its prompts;
  2. in the periodic eval after GRPO step 2: the updated state is saved with the step's metrics,
     and the rerun evaluates it first.
The resumed pipeline's report files must equal the uninterrupted one's, and so must the GRPO
stage's metrics. The GRPO stage runs 3 steps with an eval at step 2 (the quick config's 2 steps
have no step to stop in after a checkpoint that was not due, and no periodic eval).
"""

import json
import os
import shutil
import signal

import pytest

from configs import tiny_r1_zero
from r1.eval import protocol as evaluation
from r1 import main
from r1.checkpoints.manager import TrainCheckpointer
from r1.stages import pipeline, grpo as grpo_stage, rollout

# Per-step metrics that depend on nothing but the seeds (not wall time, not the process's compile
# count).
DETERMINISTIC = ("reward", "reward_std", "accuracy", "loss", "kl", "entropy", "grad_norm", "skipped",
                 "completions/mean_length", "rewards/nonfinite", "rollout/rounds", "eval/pass@1", "eval/cons@k",
                 "final_eval/pass@1", "learning_rate")


def quick_pipeline():
  c = tiny_r1_zero.get_config("quick")
  c.tokenizer.corpus_size = 300  # the tokenizer trains faster; the text it is trained on is the same task's
  grpo = c.pipeline.stage_overrides[1]
  grpo.update(total_steps=3, eval={"every_steps": 2})
  return c


def read_metrics(path):
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  return [{"step": r["step"], **{k: r[k] for k in DETERMINISTIC if k in r}} for r in rows]


def untimed_lines(path):
  """A results.md without its "Wall clock: ..." line."""
  return [line for line in path.read_text().splitlines() if not line.startswith("Wall clock:")]


def sigterm_on_call(monkeypatch, module, name, call):
  """Makes the `call`-th call (1-based) of module.<name> send this process SIGTERM first, as a TPU
  VM's preemption notice would; the stage's handler must be installed to turn it into a stop."""
  original = getattr(module, name)
  calls = []

  def wrapped(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
      handler = signal.getsignal(signal.SIGTERM)
      assert callable(handler), f"no SIGTERM handler installed at {name} call {call}: {handler}"
      os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, wrapped)
  return calls


def count_calls(monkeypatch, module, name):
  original, calls = getattr(module, name), []

  def wrapped(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, wrapped)
  return calls


@pytest.mark.slow   # 130 s; CI runs the real-SIGTERM resume (test_training_integration.py) and the checkpointer's
def test_preempted_pipeline_resumes_to_the_same_report(tmp_path):
  config = quick_pipeline()
  stages = main._training_stages()  # pylint: disable=protected-access
  reference, preempted = tmp_path / "uninterrupted", tmp_path / "preempted"
  pipeline.run(config, str(reference), stages)
  preempted.mkdir()
  shutil.copytree(reference / "0_sft", preempted / "0_sft")
  shutil.copyfile(reference / "pipeline.json", preempted / "pipeline.json")  # with the SFT stage's time
  grpo = preempted / "1_grpo"

  # 1. SIGTERM while scoring step 2's rollouts (the 2nd scoring call of the GRPO stage).
  with pytest.MonkeyPatch.context() as mp:
    sigterm_on_call(mp, rollout, "score", call=2)
    results = pipeline.run(config, str(preempted), stages)
  assert results["stopped_at"] == "1_grpo" and not (preempted / "report.json").exists()
  with TrainCheckpointer(grpo / "checkpoints", save_every=1) as ckpt:
    assert ckpt.all_steps() == [1]  # quick: save_every=2, so step 1 was saved because of the stop
  assert [r["step"] for r in read_metrics(grpo / "metrics.jsonl")] == [0, 1]

  # 2. Rerun; SIGTERM in the eval after step 2 (the first evaluation this run makes: the starting
  # policy's is read from eval_before.json, not recomputed).
  with pytest.MonkeyPatch.context() as mp:
    evals = sigterm_on_call(mp, evaluation, "sample_completions", call=1)
    results = pipeline.run(config, str(preempted), stages)
  assert results["stopped_at"] == "1_grpo" and len(evals) == 1
  with TrainCheckpointer(grpo / "checkpoints", save_every=1) as ckpt:
    assert ckpt.latest_step() == 2
    owed = ckpt.metadata(2)[grpo_stage.PENDING_EVAL]["metrics"]
  step2 = [r for r in read_metrics(reference / "1_grpo" / "metrics.jsonl") if r["step"] == 2][0]
  assert (owed["loss"], owed["reward"]) == (step2["loss"], step2["reward"])
  assert [r["step"] for r in read_metrics(grpo / "metrics.jsonl")] == [0, 1]  # step 2's line awaits its eval

  # 3. Rerun to the end: step 2's eval, step 3, the final eval; nothing evaluated twice.
  with pytest.MonkeyPatch.context() as mp:
    evals = count_calls(mp, evaluation, "sample_completions")
    results = pipeline.run(config, str(preempted), stages)
  assert "stopped_at" not in results and len(evals) == 2

  # The GRPO stage logged the same steps with the same values, and evaluated the same.
  assert read_metrics(grpo / "metrics.jsonl") == read_metrics(reference / "1_grpo" / "metrics.jsonl")
  for name in ("eval_report.json", "eval_before.json"):
    assert (grpo / name).read_text() == (reference / "1_grpo" / name).read_text(), name
  # The report files. Wall-clock fields differ by nature: report.json's wall_seconds and
  # stage_seconds (the pipeline's and each stage's time, summed over the runs that did the work),
  # and results.md's "Wall clock" line, which prints wall_seconds; grpo_stage is the stage's path,
  # which names the workdir. Everything else is equal.
  summary, expected = (json.loads((d / "report.json").read_text()) for d in (preempted, reference))
  assert set(summary["stage_seconds"]) == set(expected["stage_seconds"]) == {"0_sft", "1_grpo"}
  assert summary["grpo_stage"] == str(grpo)
  timed = ("wall_seconds", "stage_seconds", "grpo_stage")
  assert {k: v for k, v in summary.items() if k not in timed} == {k: v for k, v in expected.items() if k not in timed}
  assert untimed_lines(preempted / "results.md") == untimed_lines(reference / "results.md")
  assert "Wall clock:" in (reference / "results.md").read_text()
  assert (preempted / "samples.md").read_text() == (reference / "samples.md").read_text()
  assert (preempted / "curves.png").read_bytes() == (reference / "curves.png").read_bytes()

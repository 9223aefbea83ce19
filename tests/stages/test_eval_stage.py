"""The eval stage: named datasets, a report whose pass@1 re-grades from its own samples, reuse of an
up-to-date report; with a scripted policy (known pass@1) and a real random-init one."""

import json

import numpy as np
import pytest

from r1.data import templates
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.rewards import registry
from r1.stages import common, eval as eval_stage
from tests.stages.test_sample_stage import ScriptedPolicy, stage_config, tokenizer_path  # pylint: disable=unused-import


def eval_config(path, datasets=("held_out",), num_examples=3, k=4, max_new_tokens=16):
  c = stage_config(path)
  c.stage = "eval"
  c.eval.update({"datasets": datasets, "num_examples": num_examples, "k": k, "batch_size": 2,
                 "max_new_tokens": max_new_tokens, "num_report_samples": num_examples})
  return c


def regraded_pass_at_1(report: dict, examples: dict) -> float:
  """Mean accuracy reward (r1.rewards, not r1.eval.grading) over the report's samples."""
  texts = [c for s in report["samples"] for c in s["completions"]]
  exs = [examples[s["id"]] for s in report["samples"] for _ in s["completions"]]
  return float(registry.compute_rewards({"accuracy": 1.0}, texts, exs)[1]["accuracy"].mean())


def test_eval_stage_reports_scripted_pass_at_1_and_reuses_its_report(tmp_path, tokenizer_path, monkeypatch,
                                                                     capsys):  # pylint: disable=redefined-outer-name
  config = eval_config(tokenizer_path, datasets=("held_out", "gsm8k"), max_new_tokens=40)
  template = templates.get_template(config.data.template)
  datasets = {name: protocol.load_dataset(config, name) for name in ("held_out", "gsm8k")}
  # Problem i of each dataset: its first (i % 3) + 1 of 4 samples are right, so pass@1 is
  # (1/4 + 2/4 + 3/4) / 3 = 0.5 on both.
  right = {template.render_prompt(ex.prompt): (ex.gold, i % 3 + 1)
           for exs in datasets.values() for i, ex in enumerate(exs)}

  def script(prompt_text):
    gold, num_right = right[prompt_text]
    return [f" <think>step {g}</think> <answer>{gold if g < num_right else gold + '1'}</answer>" for g in range(4)]

  built, build_random = [], common.build_policy

  def scripted(config, tokenizer, mesh=None):
    random_policy = build_random(config, tokenizer, mesh)
    built.append(ScriptedPolicy(random_policy.config, random_policy.variables, tokenizer, script))
    return built[-1]

  monkeypatch.setattr(common, "build_policy", scripted)
  report = eval_stage.run(config, str(tmp_path))
  assert len(built) == 1 and set(report["datasets"]) == {"held_out", "gsm8k"}
  assert [s["id"] for s in report["datasets"]["gsm8k"]["samples"]] == [ex.id for ex in datasets["gsm8k"]]
  for name, metrics in report["datasets"].items():
    assert metrics["n_eval"] == 3 and metrics["k"] == 4
    assert metrics["pass@1"] == pytest.approx(0.5)
    assert regraded_pass_at_1(metrics, {ex.id: ex for ex in datasets[name]}) == pytest.approx(metrics["pass@1"])
    assert metrics["format_rate"] == 1.0
  with open(tmp_path / report_lib.REPORT_FILE) as f:
    assert json.load(f) == report
  out = capsys.readouterr().out
  assert "held_out" in out and "gsm8k" in out and "0.500" in out

  # Same policy and settings: the report is returned as is, no policy is built.
  assert eval_stage.run(config, str(tmp_path)) == report and len(built) == 1
  assert "up to date" in capsys.readouterr().out
  # Any setting the report depends on changes: evaluated again.
  config.eval.num_examples = 2
  again = eval_stage.run(config, str(tmp_path))
  assert len(built) == 2 and again["datasets"]["held_out"]["n_eval"] == 2
  assert not common.stage_done(str(tmp_path))  # Terminal: it exports no policy.

  config.eval.datasets = ("held_out", "aime")
  with pytest.raises(ValueError, match="'aime'"):
    eval_stage.run(config, str(tmp_path))


def test_eval_stage_on_random_init_policy(tmp_path, tokenizer_path):  # pylint: disable=redefined-outer-name
  config = eval_config(tokenizer_path, num_examples=2, k=2)
  report = eval_stage.run(config, str(tmp_path))
  metrics = report["datasets"]["held_out"]
  examples = {ex.id: ex for ex in protocol.load_dataset(config, "held_out")}
  assert metrics["n_eval"] == 2 and len(metrics["samples"]) == 2
  assert regraded_pass_at_1(metrics, examples) == pytest.approx(metrics["pass@1"])
  texts = [c for s in metrics["samples"] for c in s["completions"]]
  fmt = registry.compute_rewards({"format": 1.0}, texts, [None] * len(texts))[1]["format"]
  assert metrics["format_rate"] == pytest.approx(float(np.mean(fmt)))
  lengths = [n for s in metrics["samples"] for n in s["lengths"]]
  assert metrics["mean_length"] == pytest.approx(np.mean(lengths)) and max(lengths) <= 16
  assert report["stage"]["policy"].startswith("random_init(") and report["config"]["k"] == 2

"""The repro report: before/after summary fields, the Markdown table and samples, the files."""

import json

import jax
import pytest

from r1.eval import run_report as report


def _eval_report(pass1, cons, fmt, k=4, n=32, correct=(True, False)):
  metrics = {"n_eval": n, "k": k, "pass@1": pass1, "pass@1_ci": [pass1 - 0.1, pass1 + 0.1], "cons@k": cons,
             "pass@k_max": min(1.0, 2 * pass1), "format_rate": fmt, "mean_length": 70.0, "truncated_frac": 0.0,
             "samples": [{"prompt": "What is 12 + 34?", "gold": "46", "completions": [" <think>a</think>", " b"],
                          "correct": list(correct)}]}
  return {"config": {"temperature": 0.6, "top_p": 0.95}, "datasets": {"held_out": metrics}}


def test_summary_has_the_checked_fields_and_the_gain():
  s = report.summarize_run({"before": _eval_report(0.25, 0.3, 0.9), "after": _eval_report(0.5, 0.6, 1.0)},
                       wall_seconds=12.5, extra={"seed": 3})
  assert {"pass@1_before", "pass@1_after", "cons@k_before", "cons@k_after", "format_reward_after", "k", "n_eval",
          "wall_seconds"} <= set(s)
  assert (s["pass@1_before"], s["pass@1_after"], s["cons@k_after"], s["format_reward_after"]) == (0.25, 0.5, 0.6, 1.0)
  assert s["pass@1_gain"] == pytest.approx(0.25) and (s["k"], s["n_eval"], s["seed"]) == (4, 32, 3)
  assert s["machine"]["cpu_count"] >= 1
  # What XLA's numbers depend on besides the code: the library versions (and the CPU) are recorded.
  assert s["machine"]["versions"]["jaxlib"] == jax.lib.__version__
  table = report.format_results(s)
  assert f"jaxlib {jax.lib.__version__}" in table
  assert "| pass@1 (95% CI) | 0.250 [0.150, 0.350] | 0.500 [0.400, 0.600] |" in table
  assert "32 problems x k=4" in table


def test_summary_refuses_a_missing_or_different_evaluation():
  with pytest.raises(ValueError, match="eval.at_start"):
    report.summarize_run({"after": _eval_report(0.5, 0.5, 1.0)}, wall_seconds=1)
  with pytest.raises(ValueError, match="different protocols"):
    report.summarize_run({"before": _eval_report(0.5, 0.5, 1.0, k=2), "after": _eval_report(0.5, 0.5, 1.0)},
                     wall_seconds=1)


def test_write_puts_report_table_samples_and_curves_in_the_workdir(tmp_path):
  grpo = tmp_path / "1_grpo"
  grpo.mkdir()
  (grpo / "eval_report.json").write_text(json.dumps(
      {"before": _eval_report(0.25, 0.3, 0.9, correct=(False, False)), "after": _eval_report(0.5, 0.6, 1.0)}))
  (grpo / "curves.png").write_bytes(b"\x89PNG fake")
  summary = report.write(str(tmp_path), str(grpo), wall_seconds=3.0)
  assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(summary))
  assert "after GRPO" in (tmp_path / "results.md").read_text()
  samples = (tmp_path / "samples.md").read_text()
  assert "What is 12 + 34?" in samples and "before GRPO, wrong" in samples and "after GRPO, correct" in samples
  assert (tmp_path / "curves.png").read_bytes() == b"\x89PNG fake"


def test_write_skips_a_grpo_stage_without_a_start_and_end_evaluation(tmp_path):
  grpo = tmp_path / "1_grpo"
  grpo.mkdir()
  assert report.write(str(tmp_path), str(grpo), wall_seconds=1.0) is None          # no eval_report.json
  (grpo / "eval_report.json").write_text(json.dumps({"after": _eval_report(0.5, 0.6, 1.0)}))
  assert report.write(str(tmp_path), str(grpo), wall_seconds=1.0) is None          # no "before"
  assert not (tmp_path / "report.json").exists()


def test_comparison_puts_stages_side_by_side_and_checks_the_protocol(tmp_path):
  teacher, student = tmp_path / "1_grpo", tmp_path / "4_sft"
  teacher.mkdir()
  student.mkdir()
  (teacher / "eval_report.json").write_text(json.dumps(
      {"before": _eval_report(0.25, 0.3, 0.9), "after": _eval_report(0.75, 0.8, 1.0)}))
  (student / "eval_report.json").write_text(json.dumps(_eval_report(0.5, 0.55, 1.0)))  # an SFT stage's final eval
  rows = [("teacher", str(teacher), "after"), ("student base", str(teacher), "before"),
          ("distilled", str(student), "after")]
  comparison = report.write_comparison(str(tmp_path), rows)
  assert [r["pass@1"] for r in comparison["rows"]] == [0.75, 0.25, 0.5]
  assert (comparison["n_eval"], comparison["k"]) == (32, 4)
  assert json.loads((tmp_path / "comparison.json").read_text()) == comparison
  table = (tmp_path / "comparison.md").read_text()
  assert "| distilled | 4_sft (after) | 0.500 [0.400, 0.600] | 0.550 |" in table
  with pytest.raises(ValueError, match="no 'before'"):
    report.write_comparison(str(tmp_path), [("x", str(student), "before")])
  (student / "eval_report.json").write_text(json.dumps(_eval_report(0.5, 0.55, 1.0, k=2)))
  with pytest.raises(ValueError, match="evaluated 32 x 2"):
    report.write_comparison(str(tmp_path), rows)
  with pytest.raises(FileNotFoundError, match="did not evaluate"):
    report.write_comparison(str(tmp_path), [("x", str(tmp_path / "5_grpo"), "after")])


def test_processes_other_than_0_return_the_reports_but_write_nothing(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  grpo = tmp_path / "1_grpo"
  grpo.mkdir()
  (grpo / "eval_report.json").write_text(json.dumps(
      {"before": _eval_report(0.25, 0.3, 0.9), "after": _eval_report(0.5, 0.6, 1.0)}))
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  summary = report.write(str(tmp_path), str(grpo), wall_seconds=1.0)
  comparison = report.write_comparison(str(tmp_path), [("after", str(grpo), "after")])
  assert summary["pass@1_after"] == 0.5 and comparison["rows"][0]["pass@1"] == 0.5
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1_grpo"]        # nothing written beside the stage
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  report.write_comparison(str(tmp_path), [("after", str(grpo), "after")])
  assert (tmp_path / "comparison.md").exists()

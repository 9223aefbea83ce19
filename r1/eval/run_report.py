"""The result of an RL run in one place: before/after held-out metrics, curves, sample completions.

After a pipeline with a GRPO stage, `<workdir>/report.json` holds what a script checks:

  {"pass@1_before", "pass@1_after", "pass@1_ci_before", "pass@1_ci_after", "cons@k_before",
   "cons@k_after", "pass@k_before", "pass@k_after", "format_reward_before", "format_reward_after",
   "mean_length_before", "mean_length_after", "k", "n_eval", "wall_seconds", ...}

(fractions in [0, 1]; before = the last GRPO stage's evaluation of its starting policy, after = of
its final policy, same problems and sampling protocol), with `results.md` (the before/after
table), `samples.md` (completions of the same problems before and after) and `curves.png` (reward,
accuracy, mean response length and KL over the GRPO steps) next to it.
"""

import importlib.metadata
import json
import os
import platform
import shutil

import jax

from r1.eval import report as report_lib

RUN_REPORT_FILE = "report.json"
COMPARISON_FILE = "comparison.json"
COMPARISON_TABLE_FILE = "comparison.md"
TABLE_FILE = "results.md"
SAMPLES_FILE = "samples.md"
CURVES_FILE = "curves.png"

# (report suffix, eval-report key, table title): the metrics compared before/after.
_COMPARED = (("pass@1", "pass@1", "pass@1"), ("cons@k", "cons@k", "cons@k"), ("pass@k", "pass@k_max", "pass@k"),
             ("format_reward", "format_rate", "format reward"), ("mean_length", "mean_length", "mean length"),
             ("truncated", "truncated_frac", "truncated"))


# XLA's floating point depends on these and on the CPU: the same seeded run on another jaxlib or
# processor gives other numbers (the tiny repro's pass@1 moved 0.851 -> 0.745 between two
# machines with bit-identical code), so a report says what it ran on.
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
  except OSError:
    return ""


def _machine() -> dict:
  devices = jax.devices()
  return {"platform": devices[0].platform, "device_kind": devices[0].device_kind, "num_devices": len(devices),
          "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
          "cpu_model": _cpu_model(), "versions": {name: importlib.metadata.version(name) for name in _VERSIONED}}


def _write_texts(workdir: str, texts: dict[str, str]) -> None:
  """Writes each text, newline-terminated, to <workdir>/<name>, on the writing process only
  (process 0: multi-host jobs share the workdir)."""
  if jax.process_index() != 0:
    return
  for name, text in texts.items():
    with open(os.path.join(workdir, name), "w") as f:
      f.write(text + "\n")


def summarize_run(eval_reports: dict, *, wall_seconds: float, dataset: str = "held_out", extra: dict | None = None
              ) -> dict:
  """The flat before/after summary of a GRPO stage's {"before": report, "after": report}.

  Args:
    eval_reports: r1.eval reports keyed "before" and "after" (the GRPO stage's
      report_lib.REPORT_FILE).
    wall_seconds: the run's wall-clock time.
    dataset: which dataset of the reports to compare.
    extra: more fields to record (config name, seed...).
  Returns:
    A JSON-able dict (see the module docstring).
  """
  if "before" not in eval_reports or "after" not in eval_reports:
    raise ValueError(f"summarize_run: need 'before' and 'after' evaluations, got {sorted(eval_reports)} "
                     "(set eval.at_start=True on the GRPO stage)")
  before, after = (eval_reports[key]["datasets"][dataset] for key in ("before", "after"))
  if (before["n_eval"], before["k"]) != (after["n_eval"], after["k"]):
    raise ValueError(f"summarize_run: before ({before['n_eval']} x {before['k']}) and after "
                     f"({after['n_eval']} x {after['k']}) evaluated different protocols")
  out = {"dataset": dataset, "k": after["k"], "n_eval": after["n_eval"],
         "temperature": eval_reports["after"]["config"]["temperature"],
         "top_p": eval_reports["after"]["config"]["top_p"]}
  for name, key, _ in _COMPARED:
    out[f"{name}_before"], out[f"{name}_after"] = before[key], after[key]
  out["pass@1_ci_before"], out["pass@1_ci_after"] = before["pass@1_ci"], after["pass@1_ci"]
  out["pass@1_gain"] = after["pass@1"] - before["pass@1"]
  out["wall_seconds"] = float(wall_seconds)
  out["machine"] = _machine()
  out.update(extra or {})
  return out


def format_results(summary: dict) -> str:
  """The before/after table as Markdown."""
  lines = [f"Held-out `{summary['dataset']}`: {summary['n_eval']} problems x k={summary['k']} samples at "
           f"temperature {summary['temperature']}, top-p {summary['top_p']}.", "",
           "| | before GRPO | after GRPO |", "|---|---:|---:|"]
  for name, _, title in _COMPARED:
    b, a = summary[f"{name}_before"], summary[f"{name}_after"]
    if name == "pass@1":
      lo_b, hi_b = summary["pass@1_ci_before"]
      lo_a, hi_a = summary["pass@1_ci_after"]
      lines.append(f"| {title} (95% CI) | {b:.3f} [{lo_b:.3f}, {hi_b:.3f}] | {a:.3f} [{lo_a:.3f}, {hi_a:.3f}] |")
    elif name == "mean_length":
      lines.append(f"| {title} (tokens) | {b:.1f} | {a:.1f} |")
    else:
      lines.append(f"| {title} | {b:.3f} | {a:.3f} |")
  machine = summary["machine"]
  where = machine["device_kind"] + (f", {machine['cpu_model']}" if machine["cpu_model"] else "")
  versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
  lines.append(f"\nWall clock: {summary['wall_seconds'] / 60:.1f} min on {machine['cpu_count']} {machine['platform']} "
               f"cores/devices ({where}); {versions}.")
  return "\n".join(lines)


def format_samples(eval_reports: dict, dataset: str = "held_out", per_problem: int = 2) -> str:
  """Markdown: the same few held-out problems, completions before and after GRPO."""
  lines = []
  before, after = (eval_reports[key]["datasets"][dataset].get("samples", []) for key in ("before", "after"))
  for b, a in zip(before, after):
    lines.append(f"### {b['prompt']}  (gold: {b['gold']})\n")
    for title, sample in (("before GRPO", b), ("after GRPO", a)):
      for completion, correct in list(zip(sample["completions"], sample["correct"]))[:per_problem]:
        lines.append(f"{title}, {'correct' if correct else 'wrong'}:\n```\n{completion.strip()}\n```")
    lines.append("")
  return "\n".join(lines)


def write(workdir: str, grpo_dir: str, *, wall_seconds: float, extra: dict | None = None) -> dict | None:
  """Writes report.json, results.md, samples.md and curves.png to `workdir` from the GRPO stage
  in `grpo_dir`; returns the summary, or None (writing nothing) when that stage did not evaluate
  both its start and its end. Multi-host: process 0 writes; every process returns the summary."""
  path = os.path.join(grpo_dir, report_lib.REPORT_FILE)
  if not os.path.exists(path):
    return None
  eval_reports = report_lib.read_report(path)
  if not {"before", "after"} <= set(eval_reports):
    return None
  summary = summarize_run(eval_reports, wall_seconds=wall_seconds, extra=dict(extra or {}, grpo_stage=grpo_dir))
  # Multi-host: every process returns the summary, process 0 writes it.
  _write_texts(workdir, {RUN_REPORT_FILE: json.dumps(summary, indent=2), TABLE_FILE: format_results(summary),
                         SAMPLES_FILE: format_samples(eval_reports)})
  curves = os.path.join(grpo_dir, CURVES_FILE)
  if jax.process_index() == 0 and os.path.exists(curves):
    shutil.copyfile(curves, os.path.join(workdir, CURVES_FILE))
  return summary


def _stage_evaluation(stage_dir: str, when: str, dataset: str) -> dict:
  """The `when` ("before" | "after") held-out evaluation of the stage in `stage_dir`: a GRPO stage's
  eval_report.json holds both, an SFT stage's its final evaluation only (its "after")."""
  path = os.path.join(stage_dir, report_lib.REPORT_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: the stage did not evaluate (set eval.at_end / eval.at_start on it)")
  reports = report_lib.read_report(path)
  if "datasets" in reports:  # A single evaluation: the stage's final policy.
    reports = {"after": reports}
  if when not in reports:
    raise ValueError(f"{path}: no {when!r} evaluation (has {sorted(reports)})")
  return reports[when]["datasets"][dataset]


def write_comparison(workdir: str, rows, *, dataset: str = "held_out") -> dict:
  """Puts several stages' held-out evaluations side by side (e.g. teacher vs distilled vs RL-only
  student) in <workdir>/comparison.json and comparison.md.

  Args:
    rows: (title, stage_dir, "before" | "after") triples; every evaluation must use the same
      problems and protocol (n_eval, k), else ValueError.
  Returns:
    {"dataset", "n_eval", "k", "rows": [{"title", "stage", "when", "pass@1", "pass@1_ci", "cons@k",
    "pass@k", "format_reward", "mean_length"}]}.
  """
  out_rows, protocol = [], None
  for title, stage_dir, when in rows:
    r = _stage_evaluation(stage_dir, when, dataset)
    if protocol is None:
      protocol = (r["n_eval"], r["k"])
    elif (r["n_eval"], r["k"]) != protocol:
      raise ValueError(f"write_comparison: {title!r} evaluated {r['n_eval']} x {r['k']}, the first row "
                       f"{protocol[0]} x {protocol[1]}")
    out_rows.append({"title": title, "stage": os.path.basename(stage_dir), "when": when, "pass@1": r["pass@1"],
                     "pass@1_ci": r["pass@1_ci"], "cons@k": r["cons@k"], "pass@k": r["pass@k_max"],
                     "format_reward": r["format_rate"], "mean_length": r["mean_length"]})
  comparison = {"dataset": dataset, "n_eval": protocol[0], "k": protocol[1], "rows": out_rows}
  _write_texts(workdir, {COMPARISON_FILE: json.dumps(comparison, indent=2),
                         COMPARISON_TABLE_FILE: format_comparison(comparison)})
  return comparison


def format_comparison(comparison: dict) -> str:
  """The comparison as a Markdown table."""
  lines = [f"Held-out `{comparison['dataset']}`: {comparison['n_eval']} problems x k={comparison['k']} samples.", "",
           "| policy | stage | pass@1 (95% CI) | cons@k | pass@k | format | mean length |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for r in comparison["rows"]:
    lo, hi = r["pass@1_ci"]
    lines.append(f"| {r['title']} | {r['stage']} ({r['when']}) | {r['pass@1']:.3f} [{lo:.3f}, {hi:.3f}] | "
                 f"{r['cons@k']:.3f} | {r['pass@k']:.3f} | {r['format_reward']:.3f} | {r['mean_length']:.1f} |")
  return "\n".join(lines)

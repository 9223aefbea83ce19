"""Evaluation reports: the one file name, the writer, the terminal table and the scalars for metrics.

A report is `r1.eval.protocol.evaluate`'s dict ({"config", "datasets": {name: metrics}}). A stage
writes its own to <stage workdir>/REPORT_FILE: a GRPO stage {"before": report, "after": report},
a training stage's final evaluation the report itself, the eval stage the report with its
"stage" settings.
"""

import json
import os

from absl import logging

REPORT_FILE = "eval_report.json"
# The evaluation of a GRPO stage's starting policy, written as soon as it is computed: a preempted
# run's report needs it, and after step 0 the starting policy is gone.
BEFORE_FILE = "eval_before.json"
# A training stage's final report carries protocol.reuse_key under this key: the next stage, which
# starts from that policy, reuses the report as its own evaluation of it when the keys are equal.
REUSE_KEY = "reuse_key"

# Columns of `format_table`: (title, report key, format).
_TABLE_COLUMNS = (("n", "n_eval", "{:d}"), ("k", "k", "{:d}"), ("pass@1", "pass@1", "{:.3f}"),
                  ("95% CI", "pass@1_ci", "[{:.3f}, {:.3f}]"), ("cons@k", "cons@k", "{:.3f}"),
                  ("pass@k", "pass@k_max", "{:.3f}"), ("format", "format_rate", "{:.3f}"),
                  ("len", "mean_length", "{:.0f}"), ("trunc", "truncated_frac", "{:.3f}"),
                  ("reflect", "reflection_rate", "{:.3f}"))


def write_report(path: str, report: dict) -> None:
  """Writes the report as indented JSON (directories are created; the write is atomic)."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, path)


def format_table(report: dict) -> str:
  """One row per dataset: n, k, pass@1 with its CI, cons@k, pass@k, format, length, truncation,
  reflection."""
  header = ["dataset"] + [title for title, _, _ in _TABLE_COLUMNS]
  rows = []
  for name, metrics in report["datasets"].items():
    row = [name]
    for _, key, fmt in _TABLE_COLUMNS:
      value = metrics[key]
      row.append(fmt.format(*value) if isinstance(value, (list, tuple)) else fmt.format(value))
    rows.append(row)
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + rows]
  return "\n".join(lines)


def eval_scalars(report: dict, prefix: str = "eval/") -> dict[str, float]:
  """The report's numeric per-dataset metrics as flat scalars (eval/pass@1, eval/cons@k, ...)."""
  out = {}
  for metrics in report["datasets"].values():
    for key, value in metrics.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix + key] = float(value)
  return out


class ReportError(ValueError):
  """A report file that is not a JSON object (truncated by a full disk, edited by hand...)."""


def read_report(path: str) -> dict:
  """The report JSON object at `path`; ReportError naming the file (and the position) if it is not one."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    report = json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ReportError(f"{path}: not a report: not UTF-8 at byte {e.start}") from e
  except json.JSONDecodeError as e:
    raise ReportError(f"{path}: not a report: malformed JSON at line {e.lineno} column {e.colno} ({e.msg})") from e
  if not isinstance(report, dict):
    raise ReportError(f"{path}: not a report: a JSON {type(report).__name__}, expected an object")
  return report


def read_report_if_any(path: str) -> dict | None:
  """The report at `path`, or None when there is none to use: missing, or damaged (logged as a
  warning, so the caller evaluates again and nothing is lost)."""
  if not os.path.exists(path):
    return None
  try:
    return read_report(path)
  except ReportError as e:
    logging.warning("%s: evaluating again", e)
    return None

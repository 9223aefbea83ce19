"""Training metrics: tensorboardX + jsonl writers, GRPO rollout statistics, a progress line, plots.

Metric names follow TRL's `GRPOTrainer` where the meaning matches, so curves can be compared with
TRL runs: `reward`, `reward_std`, `rewards/<name>/mean`, `frac_reward_zero_std`,
`completions/mean_length`, `completions/clipped_ratio`, `kl`, `entropy`, `clip_ratio/low_mean`,
`clip_ratio/high_mean`, `grad_norm`, `learning_rate`.

Files under `workdir` (written by process 0 only):
  metrics.jsonl   one `{"step", "wall_time", **metrics}` object per `MetricsWriter.write`
  samples.jsonl   one `{"step", "wall_time", "name", "texts"}` object per `write_texts`
  tb/             tensorboardX event files (scalars and sample texts)
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
TB_DIR = "tb"


def _json_value(key: str, value: Any) -> Any:
  """numpy/jax scalars and size-1 arrays -> float; other arrays, lists and tuples -> lists."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (list, tuple)):
    return [_json_value(key, v) for v in value]
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    array = np.asarray(value)
    if array.size == 1:
      return array.item() if array.dtype.kind in "USb" else float(array.reshape(()))
    return array.tolist()
  raise TypeError(f"metric {key!r}: {type(value).__name__} is not a number, array, list or string")


def _truncate_jsonl(path: str, resume_step: int) -> None:
  """Drops lines of `path` with `step >= resume_step` (they are about to be written again)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines
          if line.strip() and json.loads(line).get("step", -1) < resume_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(line if line.endswith("\n") else line + "\n" for line in kept)
  os.replace(tmp, path)  # Atomic: a crash here leaves either the old or the truncated file.


class MetricsWriter:
  """Writes scalar metrics and sample texts to tensorboard and jsonl, on the chief process only.

  Usage:
    with MetricsWriter(workdir, resume_step=start_step) as writer:
      writer.write(step, {"reward": 0.4, "kl": kl})
      writer.write_texts(step, "samples", completions[:4])
  """

  def __init__(self, workdir: str | os.PathLike, *, is_chief: bool | None = None,
               resume_step: int | None = None):
    """Opens the writers; with `resume_step`, first drops what a preempted run logged from there.

    Args:
      workdir: run directory; created if missing.
      is_chief: whether this process writes; default `jax.process_index() == 0`.
      resume_step: the step a resumed run restarts at. Lines with `step >= resume_step` are removed
        from metrics.jsonl and samples.jsonl, and tensorboard is told to purge its events from that
        step, so the resumed run's logs have no duplicates.
    """
    self.workdir = os.fspath(workdir)
    self.is_chief = jax.process_index() == 0 if is_chief is None else is_chief
    self._tb = self._metrics_file = self._samples_file = None
    if not self.is_chief:
      return
    os.makedirs(self.workdir, exist_ok=True)
    if resume_step is not None:
      for name in (METRICS_FILE, SAMPLES_FILE):
        _truncate_jsonl(os.path.join(self.workdir, name), resume_step)
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self._tb = tensorboardX.SummaryWriter(os.path.join(self.workdir, TB_DIR),
                                          purge_step=resume_step)
    self._metrics_file = open(os.path.join(self.workdir, METRICS_FILE), "a")
    self._samples_file = open(os.path.join(self.workdir, SAMPLES_FILE), "a")

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs `metrics` at `step`: numbers to tensorboard and jsonl, lists and strings to jsonl only.

    Args:
      step: training step (x axis).
      metrics: name -> Python/numpy/jax scalar, size-1 array, array, list or string.
    """
    if not self.is_chief:
      return
    wall_time = time.time()
    record = {"step": int(step), "wall_time": wall_time}
    for key, value in metrics.items():
      if key in ("step", "wall_time"):
        raise ValueError(f"metric name {key!r} is reserved for the record's own field")
      record[key] = value = _json_value(key, value)
      if isinstance(value, (int, float)):  # bool is an int: logged as 0/1.
        self._tb.add_scalar(key, float(value), int(step), walltime=wall_time)
    self._metrics_file.write(json.dumps(record) + "\n")
    self._metrics_file.flush()  # One line per step: cheap, and a crash loses nothing.

  def write_texts(self, step: int, name: str, texts: Sequence[str]) -> None:
    """Logs sample texts (e.g. completions) to tensorboard's text tab and samples.jsonl."""
    if not self.is_chief:
      return
    texts = [str(t) for t in texts]
    wall_time = time.time()
    # Indented blocks keep the model's own markdown and LaTeX from being rendered.
    markdown = "\n\n---\n\n".join(
        f"**{i}**\n\n" + "\n".join("    " + line for line in t.split("\n"))
        for i, t in enumerate(texts))
    self._tb.add_text(name, markdown, int(step), walltime=wall_time)
    record = {"step": int(step), "wall_time": wall_time, "name": name, "texts": texts}
    self._samples_file.write(json.dumps(record) + "\n")
    self._samples_file.flush()

  def flush(self) -> None:
    if self.is_chief:
      self._tb.flush()
      self._metrics_file.flush()
      self._samples_file.flush()

  def close(self) -> None:
    if self.is_chief and self._tb is not None:
      self._tb.close()
      self._metrics_file.close()
      self._samples_file.close()
      self._tb = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def rollout_metrics(rewards_by_name: Mapping[str, np.ndarray], total: np.ndarray, group_size: int,
                    lengths: np.ndarray, max_new_tokens: int,
                    stopped: np.ndarray | None = None) -> dict[str, float]:
  """TRL-named statistics of one batch of grouped rollouts.

  Args:
    rewards_by_name: reward component name -> f32[N], N = prompts * group_size, groups contiguous.
    total: f32[N], the reward the advantages are computed from.
    group_size: G, completions per prompt.
    lengths: i32[N], completion lengths in tokens.
    max_new_tokens: the sampling budget; a completion that used all of it without stopping is
      clipped (truncated).
    stopped: bool[N], whether each completion ended with EOS; default `lengths < max_new_tokens`.
  Returns:
    `reward`, `reward_std` (over the batch, as current TRL; older TRL averaged within-group
    stds), `frac_reward_zero_std` (groups whose rewards are all equal: zero advantage, so no
    gradient), `rewards/<name>/mean` and
    `/std`, `completions/{mean,min,max}_length`, `completions/mean_terminated_length` and
    `completions/clipped_ratio` (fraction truncated).
  """
  total = np.asarray(total, np.float64)
  lengths = np.asarray(lengths)
  n = total.shape[0]
  if total.ndim != 1 or n == 0 or n % group_size:
    raise ValueError(f"total: shape {total.shape}, expected [N] with N a positive multiple of "
                     f"group_size={group_size}")
  for name, value in [*rewards_by_name.items(), ("lengths", lengths)]:
    if np.shape(value) != (n,):
      raise ValueError(f"{name}: shape {np.shape(value)} != expected ({n},) like `total`")
  if lengths.max() > max_new_tokens:
    raise ValueError(f"lengths: max {lengths.max()} > max_new_tokens={max_new_tokens}")
  stopped = lengths < max_new_tokens if stopped is None else np.asarray(stopped, bool)
  if stopped.shape != (n,):
    raise ValueError(f"stopped: shape {stopped.shape} != expected ({n},) like `total`")

  # torch.std is unbiased, and TRL uses it; a single sample has no spread.
  group_std = total.reshape(-1, group_size).std(axis=1, ddof=1 if group_size > 1 else 0)
  metrics = {
      "reward": float(total.mean()),
      "reward_std": float(total.std(ddof=1 if n > 1 else 0)),
      "frac_reward_zero_std": float(np.mean(np.isclose(group_std, 0.0))),
  }
  for name, value in rewards_by_name.items():
    value = np.asarray(value, np.float64)
    metrics[f"rewards/{name}/mean"] = float(value.mean())
    metrics[f"rewards/{name}/std"] = float(value.std(ddof=1 if n > 1 else 0))
  terminated = lengths[stopped]
  metrics.update({
      "completions/mean_length": float(lengths.mean()),
      "completions/min_length": float(lengths.min()),
      "completions/max_length": float(lengths.max()),
      # TRL reports 0 when no completion terminated.
      "completions/mean_terminated_length": float(terminated.mean()) if terminated.size else 0.0,
      "completions/clipped_ratio": float(1.0 - stopped.mean()),
  })
  return metrics


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def chief_print(line: str) -> None:
  """print on process 0 only (multi-host: one progress line per step, not one per host)."""
  if jax.process_index() == 0:
    print(line)


class Progress:
  """A progress line at most every `every_seconds`: step/total, steps/s, elapsed, ETA, metrics.

  The rate is measured from the first `update`, so compilation in the first step and the steps a
  resumed run skipped do not distort it.
  """

  def __init__(self, total_steps: int, *, every_seconds: float = 10,
               print_fn: Callable[[str], Any] = chief_print,
               keys: Sequence[str] = ("reward", "accuracy", "completions/mean_length", "kl"),
               time_fn: Callable[[], float] = time.monotonic):
    self.total_steps = total_steps
    self.every_seconds = every_seconds
    self.keys = tuple(keys)
    self._print = print_fn
    self._time = time_fn
    self._start_time = time_fn()
    self._first: tuple[int, float] | None = None  # (step, time) of the first update.
    self._last_print = -math.inf

  def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> str | None:
    """Prints (and returns) the line if `every_seconds` passed or `step` is the last one."""
    now = self._time()
    if self._first is None:
      self._first = (step, now)
    if now - self._last_print < self.every_seconds and step < self.total_steps:
      return None
    self._last_print = now
    first_step, first_time = self._first
    parts = [f"step {step}/{self.total_steps} ({100.0 * step / self.total_steps:.1f}%)"]
    if step > first_step and now > first_time:
      rate = (step - first_step) / (now - first_time)
      parts += [f"{rate:.3g} step/s", f"elapsed {_duration(now - self._start_time)}",
                f"ETA {_duration(max(self.total_steps - step, 0) / rate)}"]
    else:
      parts += ["? step/s", f"elapsed {_duration(now - self._start_time)}", "ETA ?"]
    for key in self.keys:
      if metrics and key in metrics:
        value = _json_value(key, metrics[key])
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    line = " | ".join(parts)
    self._print(line)
    return line


def plot_curves(metrics_jsonl_path: str | os.PathLike, png_path: str | os.PathLike,
                keys: Sequence[str] = ("reward", "accuracy", "rewards/format/mean", "completions/mean_length",
                                       "reflection/any", "kl"),
                overlays: Mapping[str, Sequence[str]] | None = None, smooth: int = 10) -> list[str]:
  """Plots each of `keys` found in a metrics.jsonl against step, one panel each, to a PNG.

  Args:
    keys: one panel per key (per-step values, with a `smooth`-step moving average on top).
    overlays: {panel key: other keys drawn in that panel as markers}; by default the held-out
      evaluations (`eval/pass@1`, `final_eval/pass@1`) go on the accuracy panel, so the noisy
      training accuracy at temperature 1 sits next to the eval protocol's pass@1.
    smooth: moving-average window in steps (<= 1: none).
  Returns:
    The keys plotted (those with at least one numeric value), in `keys` order.
  """
  if overlays is None:
    overlays = {"accuracy": ("eval/pass@1", "final_eval/pass@1")}
  keys_read = list(keys) + [k for extra in overlays.values() for k in extra if k not in keys]
  series: dict[str, tuple[list[int], list[float]]] = {key: ([], []) for key in keys_read}
  with open(metrics_jsonl_path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      for key in keys_read:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          series[key][0].append(record["step"])
          series[key][1].append(value)
  present = [key for key in keys if series[key][0]]
  if not present:
    raise ValueError(f"{metrics_jsonl_path}: none of {list(keys)} has a numeric value to plot")

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # No display on TPU hosts.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  ncols = min(2, len(present))
  nrows = math.ceil(len(present) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.2 * nrows), squeeze=False)
  for ax, key in zip(axes.flat, present):
    steps, values = series[key]
    ax.plot(steps, values, linewidth=0.8, alpha=0.45 if smooth > 1 and len(values) > smooth else 1.0,
            label=f"{key} (per step)")
    if smooth > 1 and len(values) > smooth:
      kernel = np.ones(smooth) / smooth
      ax.plot(steps[smooth - 1:], np.convolve(values, kernel, mode="valid"), linewidth=1.8,
              label=f"{smooth}-step mean")
    for extra in overlays.get(key, ()):
      if series[extra][0]:
        ax.plot(*series[extra], "o-" if extra.startswith("eval/") else "s", markersize=5, label=extra)
    if overlays.get(key) and any(series[e][0] for e in overlays[key]):
      ax.legend(fontsize=7)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(present):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
  return present

"""Metrics: jsonl and tensorboard contents, resume truncation, rollout stats, progress, plots."""

import glob
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from r1 import metrics as metrics_lib
from r1.metrics import MetricsWriter, Progress, plot_curves, rollout_metrics


def _read_events(logdir):
  """All events of all tensorboard files under `logdir` (TFRecord framing, CRCs not checked)."""
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      pos += 12  # length + its masked CRC
      events.append(event_pb2.Event.FromString(data[pos:pos + length]))
      pos += length + 4  # payload + its masked CRC
  return events


def _scalars(events):
  return {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value
          if v.HasField("simple_value")}


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_jsonl_and_tensorboard_contents(tmp_path):
  with MetricsWriter(tmp_path, is_chief=True) as writer:
    writer.write(1, {"reward": np.float32(0.25), "kl": jnp.asarray([0.5]), "grad_norm": 2,
                     "learning_rate": jnp.float32(1e-6), "per_group": [1, 2], "tag": "warmup",
                     "hist": np.arange(3.0)})
    writer.write(2, {"reward": 0.75})
    writer.write_texts(2, "samples", ["<think>a</think>", "b"])
  records = _read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  first = records[0]
  assert first["reward"] == 0.25 and isinstance(first["reward"], float)
  assert first["kl"] == 0.5 and isinstance(first["kl"], float)  # size-1 array -> float
  assert first["learning_rate"] == pytest.approx(1e-6) and isinstance(first["learning_rate"], float)
  assert first["per_group"] == [1, 2] and first["hist"] == [0.0, 1.0, 2.0]
  assert first["tag"] == "warmup" and first["grad_norm"] == 2
  assert records[0]["wall_time"] <= records[1]["wall_time"]
  assert set(records[1]) == {"step", "wall_time", "reward"}

  samples = _read_jsonl(tmp_path / "samples.jsonl")
  assert samples == [{"step": 2, "wall_time": samples[0]["wall_time"], "name": "samples",
                      "texts": ["<think>a</think>", "b"]}]

  events = _read_events(tmp_path / "tb")
  scalars = _scalars(events)
  assert scalars[("reward", 1)] == 0.25 and scalars[("reward", 2)] == 0.75
  assert scalars[("kl", 1)] == 0.5 and scalars[("grad_norm", 1)] == 2.0
  # Lists, arrays and strings are jsonl-only.
  tags = {tag for tag, _ in scalars}
  assert not tags & {"per_group", "hist", "tag"}
  texts = [(e.step, v) for e in events for v in e.summary.value if v.tag.startswith("samples")]
  assert len(texts) == 1 and texts[0][0] == 2
  assert texts[0][1].metadata.plugin_data.plugin_name == "text"
  markdown = texts[0][1].tensor.string_val[0].decode()
  assert "    <think>a</think>" in markdown and "    b" in markdown  # indented: shown verbatim


def test_non_chief_writes_nothing(tmp_path):
  with MetricsWriter(tmp_path / "w", is_chief=False) as writer:
    writer.write(1, {"reward": 1.0})
    writer.write_texts(1, "samples", ["x"])
    writer.flush()
  assert not os.path.exists(tmp_path / "w")


def test_bad_metric_values_are_named(tmp_path):
  with MetricsWriter(tmp_path, is_chief=True) as writer:
    with pytest.raises(TypeError, match="metric 'cfg': dict"):
      writer.write(1, {"cfg": {"a": 1}})
    with pytest.raises(ValueError, match="'step' is reserved"):
      writer.write(1, {"step": 3})


def test_resume_drops_lines_from_resume_step(tmp_path):
  with MetricsWriter(tmp_path, is_chief=True) as writer:
    for step in range(1, 8):
      writer.write(step, {"reward": float(step)})
      writer.write_texts(step, "samples", [f"s{step}"])
  # Preempted after step 7; the last checkpoint was step 5, so steps 5.. are redone.
  with MetricsWriter(tmp_path, is_chief=True, resume_step=5) as writer:
    assert [r["step"] for r in _read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    for step in range(5, 9):
      writer.write(step, {"reward": 10.0 + step})
  records = _read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == list(range(1, 9))
  assert [r["reward"] for r in records] == [1.0, 2.0, 3.0, 4.0, 15.0, 16.0, 17.0, 18.0]
  assert [r["step"] for r in _read_jsonl(tmp_path / "samples.jsonl")] == [1, 2, 3, 4]
  # TensorBoard is told to discard the old run's events from step 5 on.
  starts = [e.step for e in _read_events(tmp_path / "tb")
            if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [5]


def test_rollout_metrics_against_hand_computed_values():
  group_size = 3
  correct = np.array([1, 1, 1, 0, 1, 0], np.float32)   # group 0 all equal -> zero std
  fmt = np.array([1, 1, 1, 1, 0, 0], np.float32)
  total = correct + 0.5 * fmt
  lengths = np.array([10, 20, 64, 30, 64, 6])
  stopped = np.array([True, True, False, True, False, True])
  m = rollout_metrics({"accuracy": correct, "format": fmt}, total, group_size, lengths,
                      max_new_tokens=64, stopped=stopped)
  assert m["reward"] == pytest.approx(total.mean())
  assert m["reward_std"] == pytest.approx(np.std(total, ddof=1))
  assert m["frac_reward_zero_std"] == 0.5
  assert m["rewards/accuracy/mean"] == pytest.approx(4 / 6)
  assert m["rewards/format/mean"] == pytest.approx(4 / 6)
  assert m["rewards/format/std"] == pytest.approx(np.std(fmt, ddof=1))
  assert m["completions/mean_length"] == pytest.approx(194 / 6)
  assert (m["completions/min_length"], m["completions/max_length"]) == (6.0, 64.0)
  assert m["completions/mean_terminated_length"] == pytest.approx(66 / 4)
  assert m["completions/clipped_ratio"] == pytest.approx(2 / 6)
  # Without `stopped`, a completion that used the whole budget counts as clipped.
  inferred = rollout_metrics({}, total, group_size, lengths, max_new_tokens=64)
  assert inferred["completions/clipped_ratio"] == pytest.approx(2 / 6)
  # A completion that stopped exactly at the budget is not clipped when `stopped` says so.
  exact = rollout_metrics({}, total, group_size, lengths, 64, stopped=np.ones(6, bool))
  assert exact["completions/clipped_ratio"] == 0.0


def test_rollout_metrics_shape_errors_are_named():
  ones = np.ones(6)
  with pytest.raises(ValueError, match="group_size=4"):
    rollout_metrics({}, ones, 4, np.ones(6, int), 8)
  with pytest.raises(ValueError, match=r"format: shape \(5,\) != expected \(6,\)"):
    rollout_metrics({"format": np.ones(5)}, ones, 3, np.ones(6, int), 8)
  with pytest.raises(ValueError, match="max_new_tokens=8"):
    rollout_metrics({}, ones, 3, np.full(6, 9), 8)


def test_progress_rate_eta_and_throttling():
  now = [100.0]
  lines = []
  progress = Progress(100, every_seconds=10, print_fn=lines.append, keys=("reward", "kl"),
                      time_fn=lambda: now[0])
  now[0] = 130.0  # 30 s of compilation before the first step
  assert progress.update(10, {"reward": np.float32(0.5)}) is not None
  assert "step 10/100" in lines[-1] and "ETA ?" in lines[-1] and "reward 0.5" in lines[-1]
  now[0] = 135.0
  assert progress.update(15, {}) is None  # within every_seconds: silent
  now[0] = 150.0
  line = progress.update(30, {"reward": 0.25, "kl": jnp.float32(0.001), "entropy": 1.0})
  # 20 steps in 20 s since the first update -> 1 step/s, 70 steps left -> 1m10s.
  assert "1 step/s" in line and "ETA 1m10s" in line and "elapsed 0m50s" in line
  assert "reward 0.25" in line and "kl 0.001" in line and "entropy" not in line
  now[0] = 151.0
  assert progress.update(100, {}) is not None  # the last step always prints
  assert len(lines) == 3


def test_plot_curves_writes_png_of_present_keys(tmp_path):
  with MetricsWriter(tmp_path, is_chief=True) as writer:
    for step in range(1, 20):
      writer.write(step, {"reward": step / 20, "completions/mean_length": 100.0 + step})
  png = tmp_path / "curves.png"
  plotted = plot_curves(tmp_path / "metrics.jsonl", png)
  assert plotted == ["reward", "completions/mean_length"]
  data = png.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  with pytest.raises(ValueError, match="none of \\['kl'\\]"):
    plot_curves(tmp_path / "metrics.jsonl", tmp_path / "none.png", keys=("kl",))


def test_json_value_conversion():
  assert metrics_lib._json_value("x", np.int64(3)) == 3.0
  assert metrics_lib._json_value("x", np.bool_(True)) is True
  assert metrics_lib._json_value("x", (np.float32(1), 2)) == [1.0, 2]

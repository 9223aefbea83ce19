"""The GRPO stage on 8 fake CPU devices (data=2, fsdp=2, expert=2) reproduces the one-device run:
same rollouts (hence rewards) and the same losses up to float rounding."""

import json
import os
import subprocess
import sys

import pytest

from tests.child_env import child_env
from tests.multidevice.test_sharded_model import ROOT

FLAGS = ["--config=configs/tiny_r1_zero.py:quick", "--config.stage=grpo", "--config.total_steps=2",
         "--config.eval.at_start=False", "--config.eval.num_examples=8", "--config.data.batch_size=8"]


def _run(workdir, devices, extra=()):
  proc = subprocess.run([sys.executable, "-m", "r1.main", f"--workdir={workdir}", *FLAGS, *extra], cwd=ROOT,
                        env=child_env(devices),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {row["step"]: row for row in map(json.loads, f) if "reward" in row}


# 140 s in a full run; CI runs the sharded GRPO step (test_sharded_grpo.py) and sampler
# (test_sharded_sampling.py) against one device on the meshes that shard every axis.
@pytest.mark.slow
def test_sharded_grpo_stage_equals_single_device(tmp_path):
  single = _run(tmp_path / "one", 1)
  sharded = _run(tmp_path / "eight", 8, ["--config.mesh.shape.data=2", "--config.mesh.shape.fsdp=2",
                                         "--config.mesh.shape.expert=2"])
  assert sorted(single) == sorted(sharded) == [1, 2]
  for step in (1, 2):
    for key in ("reward", "accuracy", "completions/mean_length"):
      assert sharded[step][key] == single[step][key], (step, key)
    for key in ("loss", "kl", "entropy", "grad_norm"):
      assert abs(sharded[step][key] - single[step][key]) <= 1e-4 * max(1.0, abs(single[step][key])), (step, key)

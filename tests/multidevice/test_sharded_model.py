"""Sharded forward on 8 fake CPU devices equals the single-device forward (run in a subprocess,
because the device count must be fixed before JAX initialises)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "hf")


def run_on_8_devices(script, *args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), script), *args],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["v3_qlora_yarn_groups", "v2_lite_greedy"])
def test_sharded_forward_equals_single_device(case):
  result = run_on_8_devices("sharded_forward.py", os.path.join(FIXTURES, case))
  assert result["max_abs_diff"] <= 1e-5, result
  assert result["replica_diff"] <= 1e-5, result
  assert result["hf_diff"] <= 1e-4, result
  # The mesh (data=2, fsdp=2, expert=2) really shards: experts over `expert`, embed dim over `fsdp`.
  e, d, f = result["expert_global_shape"]
  assert result["expert_shard_shape"] == [e // 2, d // 2, f], result
  assert result["embed_shard_shape"][1] == result["expert_global_shape"][1] // 2, result

"""Sharded forward on 8 fake CPU devices equals the single-device forward on every mesh of
meshes.MESHES (run in a subprocess, because the device count must be fixed before JAX initialises)."""

import json
import os
import subprocess
import sys

import pytest

from tests.child_env import child_env
from tests.multidevice.meshes import MESHES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "hf")


def run_on_8_devices(script, *args):
  """Runs tests/multidevice/`script` with 8 fake CPU devices; returns its last stdout line as JSON."""
  env = child_env(8)
  proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), script), *args],
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["v3_qlora_yarn_groups", "v2_lite_greedy"])
def test_sharded_forward_equals_single_device(case):
  results = run_on_8_devices("sharded_forward.py", os.path.join(FIXTURES, case))
  assert sorted(results) == sorted(MESHES)
  for name, r in results.items():
    assert r["rel_diff"] <= 1e-5, (name, r)
    assert r["replica_diff"] <= 1e-5, (name, r)
    assert r["hf_diff"] <= 1e-4, (name, r)
    # The weights are really sharded: experts [E, D, F] split E over `expert`, D over `fsdp`; the
    # embedding [V, D] splits V over `tensor` and D over fsdp x expert.
    _, fsdp, expert, tensor = MESHES[name]
    e, d, f = r["expert_global_shape"]
    assert r["expert_shard_shape"] == [e // expert, d // fsdp, f // tensor], (name, r)
    v, d = r["embed_global_shape"]
    assert r["embed_shard_shape"] == [v // tensor, d // (fsdp * expert)], (name, r)


def test_sharded_dense_student_equals_single_device():
  results = run_on_8_devices("sharded_dense.py", os.path.join(ROOT, "tests", "fixtures", "hf_dense",
                                                              "qwen2_gqa_bias_tied"))
  assert sorted(results) == sorted(MESHES)
  for name, r in results.items():
    assert r["forward_rel"] <= 1e-5 and r["hf_diff"] <= 1e-4, (name, r)
    assert r["train_tokens_equal"] and r["sample_tokens_equal"], (name, r)
    assert r["train_logprob_rel"] <= 1e-5 and r["sample_logprob_rel"] <= 1e-5, (name, r)
    # q_proj [D, H, hd]: D over fsdp x expert, H over tensor; k_proj's 2 K/V heads stay whole.
    _, fsdp, expert, tensor = MESHES[name]
    d, h, hd = r["q_global_shape"]
    assert r["q_shard_shape"] == [d // (fsdp * expert), h // tensor, hd], (name, r)
    d, kv, hd = r["k_global_shape"]
    assert r["k_shard_shape"] == [d // (fsdp * expert), kv, hd], (name, r)

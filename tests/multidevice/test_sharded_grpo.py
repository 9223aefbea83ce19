"""The GRPO train step sharded over 8 fake CPU devices equals the single-device step on every mesh
of meshes.MESHES, and shards every large parameter and optimizer-state array (subprocess, because
the device count must be fixed before JAX initialises)."""

import functools

import pytest

from tests.multidevice.meshes import MESHES
from tests.multidevice.test_sharded_model import run_on_8_devices


@functools.cache
def _results():
  return run_on_8_devices("grpo_sharded.py")


# d2e2t2 (140 s) is over CI's budget; the tensor-parallel forward and sampler stay in CI.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "d2e2t2" else n for n in sorted(MESHES)])
def test_sharded_grpo_step_equals_single_device(name):
  r = _results()[name]
  assert r["loss_rel"] <= 1e-5, r
  assert r["grads_rel"] <= 1e-5, r
  assert r["params_rel"] <= 1e-5, r
  assert r["step_loss_abs"] <= 1e-6, r
  assert r["metrics_rel"] <= 1e-5, r
  assert r["bias_rel"] == 0.0, r   # integer loads -> identical sign updates
  assert r["step"] == 2, r
  # Params and their Adam moments are really sharded: experts [E, D, F] over (expert, fsdp, tensor).
  _, fsdp, expert, tensor = MESHES[name]
  e, d, f = r["expert_global_shape"]
  assert r["expert_shard_shape"] == [e // expert, d // fsdp, f // tensor], r
  assert r["adam_mu_shard_shape"] == r["expert_shard_shape"], r
  assert r["num_devices_params"] == 8, r


@pytest.mark.parametrize("name", [n for n, shape in sorted(MESHES.items()) if shape[0] < 8])
def test_sharded_grpo_state_is_not_replicated(name):
  # Every mesh that model-shards (all but pure data parallelism) splits each parameter, Adam moment
  # and reference array of >= 256 elements: none is held whole by every device.
  assert _results()[name]["replicated"] == [], _results()[name]["replicated"]

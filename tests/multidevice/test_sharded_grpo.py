"""The GRPO train step sharded over 8 fake CPU devices equals the single-device step on every mesh
of meshes.MESHES, and shards every large parameter and optimizer-state array (subprocess, because
the device count must be fixed before JAX initialises)."""

import pytest

from tests.multidevice import meshes
from tests.multidevice.meshes import MESHES
from tests.multidevice.test_sharded_model import run_on_8_devices


# One test per group of meshes: the script computes the single-device reference once per run, and
# tests sharing a cached run could land on different xdist workers and each pay for it.
@pytest.mark.parametrize("names", [meshes.CI_MESHES, pytest.param(meshes.SLOW_MESHES, marks=pytest.mark.slow)],
                         ids=["+".join(meshes.CI_MESHES), "+".join(meshes.SLOW_MESHES)])
def test_sharded_grpo_step_equals_single_device(names):
  results = run_on_8_devices("grpo_sharded.py", *names)
  assert sorted(results) == sorted(names)
  for name, r in results.items():
    r = dict(r, mesh=name)
    assert r["loss_rel"] <= 1e-5, r
    assert r["grads_rel"] <= 1e-5, r
    assert r["params_rel"] <= 1e-5, r
    assert r["step_loss_abs"] <= 1e-6, r
    assert r["metrics_rel"] <= 1e-5, r
    assert r["bias_rel"] == 0.0, r   # integer loads -> identical sign updates
    assert r["step"] == 4, r   # two calls of two mini-batch updates
    # Params and their Adam moments are really sharded: experts [E, D, F] over (expert, fsdp, tensor).
    _, fsdp, expert, tensor = MESHES[name]
    e, d, f = r["expert_global_shape"]
    assert r["expert_shard_shape"] == [e // expert, d // fsdp, f // tensor], r
    assert r["adam_mu_shard_shape"] == r["expert_shard_shape"], r
    assert r["num_devices_params"] == 8, r
    # Every mesh that model-shards (all but pure data parallelism) splits each parameter, Adam
    # moment and reference array of >= 256 elements: none is held whole by every device.
    if MESHES[name][0] < 8:
      assert r["replicated"] == [], r

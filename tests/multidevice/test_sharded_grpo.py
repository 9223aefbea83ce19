"""The GRPO train step sharded over 8 fake CPU devices equals the single-device step (subprocess,
because the device count must be fixed before JAX initialises)."""

from tests.multidevice.test_sharded_model import run_on_8_devices


def test_sharded_grpo_step_equals_single_device():
  r = run_on_8_devices("grpo_sharded.py")
  assert r["loss_rel"] <= 1e-5, r
  assert r["grads_rel"] <= 1e-5, r
  assert r["params_rel"] <= 1e-5, r
  assert r["step_loss_abs"] <= 1e-6, r
  assert r["metrics_rel"] <= 1e-5, r
  assert r["bias_rel"] == 0.0, r   # integer loads -> identical sign updates
  assert r["step"] == 2, r
  # Params and their Adam moments are really sharded: experts over `expert`, embed over `fsdp`.
  e, d, f = r["expert_global_shape"]
  assert r["expert_shard_shape"] == [e // 2, d // 2, f], r
  assert r["adam_mu_shard_shape"] == r["expert_shard_shape"], r
  assert r["num_devices_params"] == 8, r

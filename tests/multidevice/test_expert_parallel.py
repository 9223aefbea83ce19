"""Expert parallelism (moe_impl="ep") on 8 fake CPU devices equals the single-device einsum MoE:
layer output, expert load and gradients, and a full Transformer forward (subprocess, because the
device count must be fixed before JAX initialises)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from r1.model import get_model_config, moe
from tests.multidevice.test_sharded_model import run_on_8_devices

B, T = 8, 6  # as in expert_parallel.py


def test_ep_without_expert_mesh_is_the_einsum_kernel():
  c = get_model_config("tiny_v3")
  x = jax.random.normal(jax.random.key(0), (2, 5, c.hidden_size))
  mask = np.ones((2, 5), bool)
  variables = nn.unbox(moe.MoE(c).init(jax.random.key(1), x, mask))
  y, load = jax.jit(moe.MoE(c).apply)(variables, x, mask)
  y_ep, load_ep = jax.jit(moe.MoE(c.replace(moe_impl="ep")).apply)(variables, x, mask)
  np.testing.assert_array_equal(y_ep, y)
  np.testing.assert_array_equal(load_ep, load)
  with pytest.raises(ValueError, match="moe_impl='expert'"):
    c.replace(moe_impl="expert")


def test_expert_parallel_moe_equals_single_device():
  r = run_on_8_devices("expert_parallel.py")
  assert r["capacity_drops_rel"] > 0.1, r  # capacity_factor=0.5 really drops assignments
  for mesh in ("expert8", "data2_fsdp2_expert2"):
    for case in ("balanced", "skewed", "capacity"):
      m = r[f"{mesh}/{case}"]
      assert m["y_rel"] <= 1e-5 and m["grads_rel"] <= 1e-5 and m["load_equal"], (mesh, case, m)
      # The EP kernel ran: tokens moved with all-to-all, and each device holds E / ep experts.
      assert m["all_to_all"], (mesh, case)
      assert m["expert_grad_shard_rows"] == {"expert8": 1, "data2_fsdp2_expert2": 4}[mesh], (mesh, m)
    # Every (unmasked) token chose expert 0: more rows than the fast buffer, so the exact
    # worst-case fallback ran and stayed dropless.
    skewed = r[f"{mesh}/skewed"]
    assert skewed["load"][0] == B * T - 3 and skewed["group_rows_if_all"] > skewed["fast_rows"], skewed
    forward = r[f"{mesh}/forward"]
    assert forward["logits_rel"] <= 1e-5 and forward["load_equal"], (mesh, forward)

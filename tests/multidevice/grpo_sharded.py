"""Run under 8 fake CPU devices (see test_sharded_grpo.py): the GRPO step sharded on each mesh of
meshes.MESHES == the single-device step, for the loss, the gradients and the new params; and no
large parameter or optimizer-state array is fully replicated in the sharded state."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from r1 import grpo
from r1 import optim
from r1 import sharding
from r1 import train_state
from r1.model import get_model_config, init_variables
from tests.multidevice import meshes

B, T, G = 16, 12, 4
KW = dict(kl_coef=0.04, num_micro_batches=2, logits_chunk_size=5)
# Arrays smaller than this (norm scales, the MoE bias, Adam's step count) may be replicated.
REPLICATION_THRESHOLD = 256


def make_batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 512, (B, T)).astype(np.int32)
  seg = np.ones((B, T), np.int32)
  seg[::3, -2:] = 0
  mask = np.zeros((B, T), np.float32)
  mask[:, 4:-1] = 1
  mask[::3, -3:] = 0
  rewards = rng.integers(0, 2, B).astype(np.float32)
  return {"tokens": tokens * seg, "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy(),
          "segment_ids": seg, "completion_mask": mask, "rewards": rewards,
          "advantages": np.asarray(grpo.group_advantages(jnp.asarray(rewards), G))}


def rel_diff(a, b):
  """max over leaves of max|a - b| / max|b|."""
  diffs = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max() /
                                          max(np.abs(np.asarray(y)).max(), 1e-30)), a, b)
  return max(jax.tree.leaves(diffs))


def run(config, variables, batch, mesh=None):
  # Adam's early updates are ~lr * sign(g): a gradient of 1e-9 and one of -1e-9 (equal to float
  # rounding) move a weight by +-lr. A large eps makes the update linear in small gradients, so
  # the comparison measures the sharded step, not that amplification.
  opt, sched = optim.make_optimizer(1e-3, warmup_steps=1, decay_steps=10, eps=1e-3)
  grad_fn = grpo.make_grpo_grad_fn(config, **KW)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt)
  state_sh = None
  if mesh is not None:
    state_sh = train_state.train_state_shardings(config, opt, mesh)
    state = jax.device_put(state, state_sh)
    batch = {k: jax.device_put(v, sharding.logical_to_sharding(
        PartitionSpec(*("batch", "length")[:v.ndim]), mesh)) for k, v in batch.items()}

  def grads(params, moe_bias, batch):
    ref_lp = grpo.reference_logprobs(config, params, moe_bias, batch, num_micro_batches=2, logits_chunk_size=5)
    loss, g, _, _, _ = grad_fn(params, moe_bias, batch, ref_lp * 0.9)
    return loss, g

  if mesh is None:
    loss, g = jax.jit(grads)(state.params, state.moe_bias, batch)
  else:
    with sharding.mesh_context(mesh):
      loss, g = jax.jit(grads)(state.params, state.moe_bias, batch)
  # The paper's schedule: advantages from the rewards inside the step, logprobs at the rollout
  # temperature, and two shuffled mini-batches (rows gathered across the devices) per call.
  step = grpo.make_grpo_step(config, opt, sched, **KW, group_size=G, temperature=0.7, num_mini_batches=2,
                             state_shardings=state_sh, mesh=mesh)
  rollout = {k: v for k, v in batch.items() if k != "advantages"}
  state, metrics = step(state, rollout)
  state, metrics = step(state, rollout)   # later updates: Adam moments and the moved bias in play
  return loss, g, state, metrics


def replicated_leaves(state) -> list[str]:
  """Paths of params / Adam moments / reference leaves with >= REPLICATION_THRESHOLD elements whose
  per-device shard is the whole array."""
  trees = {"params": state.params, "opt_state": state.opt_state, "ref_params": state.ref_params}
  found = []
  for path, x in jax.tree_util.tree_flatten_with_path(trees)[0]:
    if x.size >= REPLICATION_THRESHOLD and x.sharding.shard_shape(x.shape) == x.shape:
      found.append(f"{jax.tree_util.keystr(path)} {x.shape} {x.sharding.spec}")
  return found


def main(names):
  assert jax.device_count() == 8, jax.devices()
  config = get_model_config("tiny_v3", num_hidden_layers=2)
  variables = init_variables(config, jax.random.key(0))
  batch = make_batch()
  loss1, g1, s1, m1 = run(config, variables, batch)
  results = {}
  for name in names:
    loss8, g8, s8, m8 = run(config, variables, batch, meshes.make(name))
    experts = s8.params["layers_1"]["mlp"]["experts_gate_proj"]
    mu = s8.opt_state[1][0].mu["layers_1"]["mlp"]["experts_gate_proj"]
    results[name] = {
        "loss_rel": abs(float(loss8) - float(loss1)) / abs(float(loss1)),
        "grads_rel": rel_diff(g8, g1),
        "params_rel": rel_diff(s8.params, s1.params),
        "bias_rel": rel_diff(s8.moe_bias, s1.moe_bias),
        # The GRPO loss is ~0 on policy (advantages sum to 0 per group): compare it on the scale of
        # its per-token terms, |A| ~ 1.
        "step_loss_abs": abs(float(m8["loss"]) - float(m1["loss"])),
        "step_loss": float(m1["loss"]),
        "metrics_rel": max(abs(float(m8[k]) - float(m1[k])) / abs(float(m1[k])) for k in ("entropy", "grad_norm", "kl")),
        "step": int(s8.step),
        "expert_shard_shape": list(experts.addressable_shards[0].data.shape),
        "expert_global_shape": list(experts.shape),
        "adam_mu_shard_shape": list(mu.addressable_shards[0].data.shape),
        "num_devices_params": len(experts.sharding.device_set),
        "replicated": replicated_leaves(s8),
    }
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1:] or list(meshes.MESHES))

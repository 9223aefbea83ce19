"""Run under 8 fake CPU devices (see test_expert_parallel.py): the expert-parallel MoE (moe_impl="ep")
equals the single-device einsum MoE in output, expert load and gradients, and a Transformer forward
with moe_impl="ep" on a mesh equals moe_impl="einsum" on one device."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from r1 import sharding
from r1.model import Transformer, abstract_variables, get_model_config, init_variables, moe

B, T = 8, 6
MESHES = {"expert8": {"expert": 8}, "data2_fsdp2_expert2": {"data": 2, "fsdp": 2, "expert": 2}}


def rel_diff(a, b):
  """max over leaves of max|a - b| / max|b|."""
  diffs = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max() /
                                          max(np.abs(np.asarray(y, np.float64)).max(), 1e-30)), a, b)
  return max(jax.tree.leaves(diffs))


def moe_value_and_grad(config, variables, x, mask, cotangent, mesh=None):
  """(y, load), d<y, cotangent>/d(params, x) for one MoE layer, jitted on `mesh` (or one device)."""
  def loss(params, x):
    y, load = moe.MoE(config).apply({**variables, "params": params}, x, mask)
    return jnp.sum(y * cotangent), (y, load)

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  if mesh is None:
    (_, (y, load)), grads = fn(variables["params"], x)
    return y, load, grads, ""
  boxed = moe.MoE(config).init(jax.random.key(0), x, mask)
  param_sh = sharding.variable_shardings(boxed, mesh)["params"]
  x_sh = sharding.logical_to_sharding(PartitionSpec("batch", "length", "act_embed"), mesh)
  with sharding.mesh_context(mesh):
    params, x = jax.device_put(variables["params"], param_sh), jax.device_put(x, x_sh)
    compiled = fn.lower(params, x).compile()
    (_, (y, load)), grads = compiled(params, x)
  return y, load, grads, compiled.as_text()


def moe_inputs(config, bias_boost):
  x = jax.random.normal(jax.random.key(1), (B, T, config.hidden_size))
  mask = jnp.ones((B, T), bool).at[0, :3].set(False)
  cotangent = jax.random.normal(jax.random.key(2), x.shape)
  variables = nn.unbox(moe.MoE(config).init(jax.random.key(0), x, mask))
  # A large balancing bias on a few experts sends every token there: the fast buffers overflow.
  variables["moe_bias"] = jax.tree.map(lambda b: b.at[:len(bias_boost)].set(bias_boost), variables["moe_bias"])
  return variables, x, mask, cotangent


def moe_case(config, inputs, reference, mesh):
  y, load, grads, _ = reference
  y_ep, load_ep, grads_ep, hlo = moe_value_and_grad(config.replace(moe_impl="ep"), *inputs, mesh)
  experts = grads_ep[0]["experts_gate_proj"]
  return {"y_rel": rel_diff(y_ep, y), "grads_rel": rel_diff(grads_ep, grads),
          "load_equal": bool(np.array_equal(np.asarray(load_ep), np.asarray(load))),
          "load": np.asarray(load).tolist(),
          # An expert that every token picks receives all ep * (B*T/8) tokens of its expert group
          # (the tokens are split 8 ways); the fast buffer holds 2x the balanced load, 2 ep n K / E.
          "group_rows_if_all": mesh.shape["expert"] * B * T // 8,
          "fast_rows": math.ceil(2 * mesh.shape["expert"] * B * T // 8 * config.num_experts_per_tok
                                 / config.n_routed_experts),
          "all_to_all": "all-to-all" in hlo,
          "expert_grad_shard_rows": experts.addressable_shards[0].data.shape[0]}


def forward_case(config, mesh):
  tokens = jax.random.randint(jax.random.key(3), (B, T), 1, config.vocab_size)
  variables = init_variables(config, jax.random.key(0))
  forward = lambda c: jax.jit(lambda v, t: Transformer(c).apply(v, t))
  expected = forward(config)(variables, tokens)
  ep = config.replace(moe_impl="ep")
  with sharding.mesh_context(mesh):
    v_sh = sharding.variable_shardings(abstract_variables(ep), mesh)
    t_sh = sharding.logical_to_sharding(PartitionSpec("batch", "length"), mesh)
    out = forward(ep)(jax.device_put(variables, v_sh), jax.device_put(tokens, t_sh))
  return {"logits_rel": rel_diff(out.logits, expected.logits),
          "load_equal": bool(np.array_equal(np.asarray(out.expert_load), np.asarray(expected.expert_load)))}


def main():
  assert jax.device_count() == 8, jax.devices()
  tiny = get_model_config("tiny_v3")
  cases = {"balanced": (tiny, []), "skewed": (tiny, [100.0, 100.0]),
           "capacity": (tiny.replace(capacity_factor=0.5), [])}
  inputs = {name: moe_inputs(config, boost) for name, (config, boost) in cases.items()}
  references = {name: moe_value_and_grad(cases[name][0], *inputs[name]) for name in cases}
  results = {"capacity_drops_rel": rel_diff(references["capacity"][0], references["balanced"][0])}
  for mesh_name, shape in MESHES.items():
    mesh = sharding.make_mesh(shape)
    for name, (config, _) in cases.items():
      results[f"{mesh_name}/{name}"] = moe_case(config, inputs[name], references[name], mesh)
    results[f"{mesh_name}/forward"] = forward_case(tiny, mesh)
  print(json.dumps(results))


if __name__ == "__main__":
  main()

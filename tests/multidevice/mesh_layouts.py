"""Run under 8 fake CPU devices (see test_mesh.py): the device layout of multi-slice meshes and
the shardings TRAIN_RULES and SAMPLE_RULES give, before and after `reshard`."""

import json

import jax
import numpy as np

from r1 import sharding
from r1.model import abstract_variables, get_model_config, init_variables


def main():
  assert jax.device_count() == 8, jax.devices()
  # Two stand-in slices of 4 devices: `data` = 2 slices x 1, each slice holds fsdp x expert.
  mesh = sharding.make_mesh({"fsdp": 2, "expert": 2}, dcn_data=2)
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  config = get_model_config("tiny_v3", num_hidden_layers=2)
  abstract = abstract_variables(config)
  variables = jax.device_put(init_variables(config, jax.random.key(0)), sharding.variable_shardings(abstract, mesh))
  decode = sharding.reshard(variables, abstract, mesh, sharding.SAMPLE_RULES)
  back = sharding.reshard(decode, abstract, mesh)
  print(json.dumps({
      "shape": dict(mesh.shape),
      "slice_devices": [sorted(ids[i].ravel().tolist()) for i in range(2)],
      "train_spec": list(variables["params"]["layers_0"]["self_attn"]["q_b_proj"].sharding.spec),
      "sample_spec": list(decode["params"]["layers_0"]["self_attn"]["q_b_proj"].sharding.spec),
      "sample_expert_spec": list(decode["params"]["layers_1"]["mlp"]["experts_gate_proj"].sharding.spec),
      "round_trip_equal": all(jax.tree.leaves(jax.tree.map(
          lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), back, variables))),
      "round_trip_same_sharding": all(jax.tree.leaves(jax.tree.map(
          lambda a, b: a.sharding == b.sharding, back, variables))),
  }))


if __name__ == "__main__":
  main()

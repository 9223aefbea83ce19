"""Run under 8 fake CPU devices (see test_sharded_model.py): the forward sharded on each mesh of
meshes.MESHES == the single-device forward."""

import json
import os
import sys

import jax
import numpy as np

import r1
from r1 import sharding
from r1.model import Transformer
from tests.multidevice import meshes


def main(fixture):
  assert jax.device_count() == 8, jax.devices()
  ref = np.load(os.path.join(fixture, "reference.npz"))
  single = r1.load_hf_checkpoint(fixture)
  expected = np.asarray(single.logits(ref["tokens"]))
  tokens = np.concatenate([ref["tokens"]] * 4)  # batch 8 so it splits over data x fsdp x expert
  results = {}
  for name in meshes.MESHES:
    mesh = meshes.make(name)
    policy = r1.load_hf_checkpoint(fixture, mesh=mesh)
    experts = policy.params["layers_1"]["mlp"]["experts_gate_proj"]
    embed = policy.params["embed_tokens"]
    model = Transformer(policy.config)
    with sharding.mesh_context(mesh):
      batch_sharding = sharding.logical_to_sharding(jax.sharding.PartitionSpec("batch", "length"), mesh)
      forward = jax.jit(lambda v, t: model.apply(v, t).logits, in_shardings=(  # pylint: disable=cell-var-from-loop
          jax.tree.map(lambda a: a.sharding, policy.variables), batch_sharding))
      logits = np.asarray(forward(policy.variables, jax.device_put(tokens, batch_sharding)))
    results[name] = {
        "rel_diff": float(np.abs(logits[:2] - expected).max() / np.abs(expected).max()),
        "replica_diff": float(np.abs(logits[2:4] - logits[:2]).max()),
        "expert_shard_shape": list(experts.addressable_shards[0].data.shape),
        "expert_global_shape": list(experts.shape),
        "embed_shard_shape": list(embed.addressable_shards[0].data.shape),
        "embed_global_shape": list(embed.shape),
        "hf_diff": float(np.abs(logits[:2] - ref["logits"]).max()),
    }
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1])

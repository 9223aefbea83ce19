"""Run under 8 fake CPU devices (see test_sharded_sampling.py): sharded sampling == one device, on
every mesh of meshes.MESHES, with the training layout (TRAIN_RULES) and after resharding the
weights to the decode layout (SAMPLE_RULES)."""

import json
import sys

import jax
import numpy as np

import r1
from r1 import sampling
from r1 import sharding
from r1.model import abstract_variables
from tests.multidevice import meshes


def main(fixture, names):
  assert jax.device_count() == 8, jax.devices()
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [4], [20, 21, 22, 23], [30, 31], [40, 41, 42], [50], [60, 61]]
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
  greedy = dict(max_new_tokens=6, temperature=0.0)
  one = r1.load_hf_checkpoint(fixture)
  single, greedy_single = one.generate(prompts, **kwargs), one.generate(prompts, **greedy)
  lp_scale = float(np.abs(np.asarray(single.logprobs)).max())
  results = {}
  for name in names:
    mesh = meshes.make(name)
    policy = r1.load_hf_checkpoint(fixture, mesh=mesh)
    decode_variables = sharding.reshard(policy.variables, abstract_variables(policy.config), mesh,
                                        sharding.SAMPLE_RULES)
    for rules_name, variables, rules in (("train", policy.variables, sharding.TRAIN_RULES),
                                         ("sample", decode_variables, sharding.SAMPLE_RULES)):
      sharded = sampling.generate(policy.config, variables, prompts, mesh=mesh, rules=rules, **kwargs)
      greedy_sharded = sampling.generate(policy.config, variables, prompts, mesh=mesh, rules=rules, **greedy)
      experts = variables["params"]["layers_1"]["mlp"]["experts_gate_proj"]
      results[f"{name}/{rules_name}"] = {
          "tokens_equal": bool(np.array_equal(np.asarray(single.tokens), np.asarray(sharded.tokens))),
          "greedy_equal": bool(np.array_equal(np.asarray(greedy_single.tokens), np.asarray(greedy_sharded.tokens))),
          "logprob_rel": float(np.abs(np.asarray(single.logprobs) - np.asarray(sharded.logprobs)).max() / lp_scale),
          "num_devices_holding_tokens": len(sharded.tokens.sharding.device_set),
          "expert_shard_shape": list(experts.addressable_shards[0].data.shape),
          "expert_global_shape": list(experts.shape),
      }
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:] or list(meshes.MESHES))

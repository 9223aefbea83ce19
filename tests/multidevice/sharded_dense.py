"""Run under 8 fake CPU devices (see test_sharded_model.py): a dense GQA student (a Qwen2 HF
fixture: 4 query / 2 K/V heads, biases, tied head) sharded on every mesh of meshes.MESHES gives
the single-device forward, and the same samples with the training and the decode layouts."""

import json
import sys

import jax
import numpy as np

import r1
from r1 import sampling
from r1 import sharding
from r1.model import Transformer, abstract_variables
from tests.multidevice import meshes


def main(fixture):
  assert jax.device_count() == 8, jax.devices()
  ref = np.load(f"{fixture}/reference.npz")
  one = r1.load_hf_checkpoint(fixture)
  tokens = np.concatenate([ref["tokens"]] * 4)  # batch 8 so it splits over data x fsdp x expert
  expected = np.asarray(one.logits(tokens))
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [4], [20, 21, 22, 23], [30, 31], [40, 41, 42], [50], [60, 61]]
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
  single = one.generate(prompts, **kwargs)
  lp_scale = float(np.abs(np.asarray(single.logprobs)).max())
  results = {}
  for name in meshes.MESHES:
    mesh = meshes.make(name)
    policy = r1.load_hf_checkpoint(fixture, mesh=mesh)
    model = Transformer(policy.config)
    with sharding.mesh_context(mesh):
      batch_sharding = sharding.logical_to_sharding(jax.sharding.PartitionSpec("batch", "length"), mesh)
      forward = jax.jit(lambda v, t: model.apply(v, t).logits)  # pylint: disable=cell-var-from-loop
      logits = np.asarray(forward(policy.variables, jax.device_put(tokens, batch_sharding)))
    q = policy.params["layers_0"]["self_attn"]["q_proj"]
    k = policy.params["layers_0"]["self_attn"]["k_proj"]
    r = {"forward_rel": float(np.abs(logits - expected).max() / np.abs(expected).max()),
         "hf_diff": float(np.abs(logits[:2] - ref["logits"]).max()),
         "q_shard_shape": list(q.addressable_shards[0].data.shape), "q_global_shape": list(q.shape),
         "k_shard_shape": list(k.addressable_shards[0].data.shape), "k_global_shape": list(k.shape)}
    decode_variables = sharding.reshard(policy.variables, abstract_variables(policy.config), mesh,
                                        sharding.SAMPLE_RULES)
    for rules_name, variables, rules in (("train", policy.variables, sharding.TRAIN_RULES),
                                         ("sample", decode_variables, sharding.SAMPLE_RULES)):
      out = sampling.generate(policy.config, variables, prompts, mesh=mesh, rules=rules, **kwargs)
      r[f"{rules_name}_tokens_equal"] = bool(np.array_equal(np.asarray(single.tokens), np.asarray(out.tokens)))
      r[f"{rules_name}_logprob_rel"] = float(
          np.abs(np.asarray(single.logprobs) - np.asarray(out.logprobs)).max() / lp_scale)
    results[name] = r
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1])

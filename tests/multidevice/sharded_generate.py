"""Run under 8 fake CPU devices (see test_sharded_sampling.py): sharded sampling == one device."""

import json
import sys

import jax
import numpy as np

import r1
from r1 import sharding


def main(fixture):
  assert jax.device_count() == 8, jax.devices()
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [4], [20, 21, 22, 23], [30, 31], [40, 41, 42], [50], [60, 61]]
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
  single = r1.load_hf_checkpoint(fixture).generate(prompts, **kwargs)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "expert": 2})
  policy = r1.load_hf_checkpoint(fixture, mesh=mesh)
  sharded = policy.generate(prompts, mesh=mesh, **kwargs)
  greedy_single = r1.load_hf_checkpoint(fixture).generate(prompts, max_new_tokens=6, temperature=0.0)
  greedy_sharded = policy.generate(prompts, mesh=mesh, max_new_tokens=6, temperature=0.0)
  print(json.dumps({
      "tokens_equal": bool(np.array_equal(np.asarray(single.tokens), np.asarray(sharded.tokens))),
      "greedy_equal": bool(np.array_equal(np.asarray(greedy_single.tokens), np.asarray(greedy_sharded.tokens))),
      "max_logprob_diff": float(np.abs(np.asarray(single.logprobs) - np.asarray(sharded.logprobs)).max()),
      "num_devices_holding_tokens": len(sharded.tokens.sharding.device_set),
  }))


if __name__ == "__main__":
  main(sys.argv[1])

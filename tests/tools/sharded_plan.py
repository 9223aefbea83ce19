"""Run under 8 fake CPU devices (see test_plan.py): the planner's per-device bytes for a
(data=2, fsdp=2, expert=2) mesh against the real sharded TrainState's largest per-device bytes."""

import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from r1 import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from r1 import train_state  # pylint: disable=g-import-not-at-top,wrong-import-position
from r1.model import init_variables  # pylint: disable=g-import-not-at-top,wrong-import-position
from r1.tools import plan as plan_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.tools.test_plan import make_optimizer, tiny_grpo_config  # pylint: disable=wrong-import-position


def per_device_bytes(tree) -> int:
  """The largest, over devices, of the bytes of the shards a device holds."""
  totals = {}
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
  return max(totals.values())


def main():
  mesh_shape = {"data": 2, "fsdp": 2, "expert": 2, "tensor": 1}
  config = tiny_grpo_config()
  p = plan_lib.plan(config, mesh_shape, "cpu-8")
  mc = plan_lib.model_config_of(config)
  optimizer, _ = make_optimizer(config)
  mesh = sharding.make_mesh(mesh_shape)
  state = train_state.init_train_state(init_variables(mc, jax.random.key(0)), optimizer, with_reference=True)
  unsharded = sum(x.nbytes for x in jax.tree.leaves(state.params))
  state = jax.device_put(state, train_state.train_state_shardings(mc, optimizer, mesh, with_reference=True))
  measured = {"params": per_device_bytes((state.params, state.moe_bias)), "adam": per_device_bytes(state.opt_state),
              "reference": per_device_bytes(state.ref_params)}
  planned = {k: p["components"][k] for k in measured}
  print(json.dumps({"mesh": p["mesh"], "planned": planned, "measured": measured, "unsharded_params": unsharded}))


if __name__ == "__main__":
  main()

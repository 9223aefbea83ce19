"""The (data, fsdp, expert, tensor) meshes every 8-device equivalence test covers (issue 9)."""

from r1 import sharding

MESHES = {
    "data8": (8, 1, 1, 1),
    "d2f2e2": (2, 2, 2, 1),
    "expert8": (1, 1, 8, 1),
    "d2e2t2": (2, 1, 2, 2),
}
# The GRPO step and sampler scripts cost ~40 s of CPU per mesh: CI runs them on two meshes that
# between them shard every axis (data, fsdp, expert, tensor); pure data and pure expert
# parallelism, each a special case of d2f2e2, run with the slow tests (`pytest -m slow`).
CI_MESHES = ("d2f2e2", "d2e2t2")
SLOW_MESHES = tuple(name for name in MESHES if name not in CI_MESHES)


def make(name: str):
  """The mesh called `name` over the 8 fake devices."""
  return sharding.make_mesh(dict(zip(sharding.MESH_AXES, MESHES[name])))

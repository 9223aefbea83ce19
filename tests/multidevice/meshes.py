"""The (data, fsdp, expert, tensor) meshes every 8-device equivalence test covers (issue 9)."""

from r1 import sharding

MESHES = {
    "data8": (8, 1, 1, 1),
    "d2f2e2": (2, 2, 2, 1),
    "expert8": (1, 1, 8, 1),
    "d2e2t2": (2, 1, 2, 2),
}


def make(name: str):
  """The mesh called `name` over the 8 fake devices."""
  return sharding.make_mesh(dict(zip(sharding.MESH_AXES, MESHES[name])))

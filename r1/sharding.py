"""Device meshes and the logical-axis rules that map model axes onto them.

The model names every parameter and key activation axis logically (r1/model/layers.py); these
tables say which mesh axis shards each name. Changing the parallelism is a config change:

  mesh = make_mesh({"data": 2, "fsdp": 2, "expert": 2})
  shardings = variable_shardings(abstract_variables(config), mesh)
  with mesh_context(mesh):
    ...jax.jit(..., in_shardings=shardings)...
"""

import contextlib
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# Training: FSDP over the embedding dimension, experts over `expert`, heads/FFN over `tensor`;
# the batch is split over every axis that does not shard it otherwise.
TRAIN_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_exp", "expert"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("exp", "expert"),
    ("q_lora", None),
    ("kv_lora", None),
    ("qk_head", None),
    ("v_head", None),
)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over axes (data, fsdp, expert, tensor) with Auto axis types (GSPMD propagation).

  Args:
    shape: sizes by axis name; missing axes get 1, and one axis may be -1 to take the remaining
      devices (default: everything on `data`).
    devices: defaults to jax.devices().
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(shape or {"data": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected some of {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by the fixed mesh axes {shape}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_sharding(logical_spec: PartitionSpec, mesh: Mesh, rules=TRAIN_RULES) -> NamedSharding:
  """NamedSharding for one logically named array (e.g. PartitionSpec("exp", "embed", "mlp"))."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(logical_spec, rules))


def variable_shardings(abstract_variables, mesh: Mesh, rules=TRAIN_RULES):
  """NamedShardings for a (boxed) variables tree from `r1.model.abstract_variables`.

  Unannotated leaves (the MoE balancing bias) are replicated.
  """
  specs = nn.get_partition_spec(abstract_variables)
  return jax.tree.map(lambda s: logical_to_sharding(s, mesh, rules), specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules=TRAIN_RULES):
  """Activates `mesh` and the logical rules, so the model's activation constraints apply."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield

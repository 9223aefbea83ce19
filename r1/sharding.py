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
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# Training: FSDP over the embedding dimension, experts over `expert`, heads/FFN over `tensor`;
# the batch is split over every axis that does not shard it otherwise. Flax assigns rules in table
# order and skips a rule whose mesh axes an earlier dimension of the same array already holds, so
# the order matters:
#   - `exp` comes before `embed`, so expert weights [E, D, F] put E on `expert` and then fall
#     through to the second `embed` rule (D on `fsdp`);
#   - every other weight puts D on fsdp x expert (as MaxText does): on a mesh with expert > 1 the
#     attention and dense weights would otherwise be replicated over `expert`;
#   - the low-rank dims q_lora/kv_lora take fsdp x expert when D does not (q_b_proj, kv_b_proj
#     [L, H, d]), so those are not replicated when tensor == 1.
TRAIN_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_exp", "expert"),
    ("vocab", "tensor"),
    ("exp", "expert"),
    ("embed", ("fsdp", "expert")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    # GQA's K/V heads are few (2 in Qwen2.5-1.5B, 8 in Llama-3) and need not divide `tensor`:
    # replicated over it (they are 1/group of the attention weights).
    ("kv_heads", None),
    ("mlp", "tensor"),
    ("q_lora", ("fsdp", "expert")),
    ("q_lora", "fsdp"),
    ("kv_lora", ("fsdp", "expert")),
    ("kv_lora", "fsdp"),
    ("qk_head", None),
    ("v_head", None),
)

# Sampling (prefill + decode): no FSDP. A decode step moves a few tokens per row, so gathering
# FSDP-sharded weights every step would dominate it; weights are instead split only where the
# split needs no per-step gather of the weights themselves (experts over `expert`, heads and FFN
# over `tensor`) and replicated over `data` x `fsdp`. The batch is split over data x fsdp x expert:
# attention is data parallel and the MoE layer exchanges tokens with the expert owners, as in
# DeepSeek-V3's serving layout (V3 report, sec. 3.4). This costs memory
# (weights / (expert * tensor) per device): the default stays TRAIN_RULES (no resharding, no extra
# copy), and a run that has the room reshards with `reshard(variables, abstract, mesh, SAMPLE_RULES)`
# and passes `rules=SAMPLE_RULES` to the sampler.
SAMPLE_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_exp", "expert"),
    ("vocab", "tensor"),
    ("exp", "expert"),
    ("embed", None),
    ("heads", "tensor"),
    ("kv_heads", None),
    ("mlp", "tensor"),
    ("q_lora", None),
    ("kv_lora", None),
    ("qk_head", None),
    ("v_head", None),
)


def mesh_shape(shape: Mapping[str, int] | None, num_devices: int) -> tuple[int, ...]:
  """Axis sizes in MESH_AXES order for `num_devices`: missing axes get 1, and one axis may be -1 to
  take the remaining devices (default: everything on `data`)."""
  shape = dict(shape or {"data": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected some of {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices are not divisible by the fixed mesh axes {shape}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {num_devices}")
  return tuple(sizes)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None, *,
              dcn_data: int = 1) -> Mesh:
  """A mesh over axes (data, fsdp, expert, tensor) with Auto axis types (GSPMD propagation).

  Args:
    shape: sizes by axis name within one slice (ICI); missing axes get 1, and one axis may be -1
      to take the remaining devices (default: everything on `data`).
    devices: defaults to jax.devices().
    dcn_data: number of slices joined over the data-center network (multi-slice). The `data` axis
      becomes dcn_data * shape["data"], slice-major, so only data parallelism (one gradient
      all-reduce per step) crosses the slow links. TPU devices carry `slice_index` and get
      mesh_utils.create_hybrid_device_mesh; devices without it (CPU, tests) are split into
      dcn_data contiguous groups standing in for slices.
  """
  devices = list(jax.devices() if devices is None else devices)
  if dcn_data < 1 or len(devices) % dcn_data:
    raise ValueError(f"dcn_data={dcn_data} must be >= 1 and divide the {len(devices)} devices")
  ici = mesh_shape(shape, len(devices) // dcn_data)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if dcn_data == 1:
    return jax.make_mesh(ici, MESH_AXES, axis_types=axis_types, devices=devices)
  dcn = (dcn_data,) + (1,) * (len(MESH_AXES) - 1)
  if all(hasattr(d, "slice_index") for d in devices):
    array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  else:
    per_slice = len(devices) // dcn_data
    array = np.concatenate([np.asarray(devices[i * per_slice:(i + 1) * per_slice]).reshape(ici)
                            for i in range(dcn_data)], axis=0)
  return Mesh(array, MESH_AXES, axis_types=axis_types)


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


def reshard(tree, abstract_variables, mesh: Mesh, rules=TRAIN_RULES):
  """`tree` (variables laid out by any rules, or on one device) moved to the layout `rules` give
  on `mesh`, e.g. from TRAIN_RULES to SAMPLE_RULES before decoding and back after.

  One jax.device_put with explicit NamedShardings: XLA moves only the shards that change owner,
  and the source arrays stay alive until the caller drops them (peak memory: both layouts).

  Args:
    tree: arrays shaped like `abstract_variables` (r1.model.abstract_variables, boxed with logical
      axis names).
  """
  return jax.device_put(tree, variable_shardings(abstract_variables, mesh, rules))


def place_host_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, rules=TRAIN_RULES) -> dict:
  """This process's rows of a batch as global arrays split over the mesh's batch axes.

  Multi-host: each process passes only the rows its own data shard produced
  (r1.data.pipeline.host_shard), never the global batch; the global batch is the processes' rows
  in the order the mesh puts their devices along the batch axes. With one process this is
  jax.device_put onto the batch sharding.

  Args:
    batch: arrays [B_host, ...]; dimension 0 is logically `batch`, dimension 1 `length`.
  """
  def place(x):
    x = np.asarray(x)
    spec = PartitionSpec(*("batch", "length")[:x.ndim])
    return jax.make_array_from_process_local_data(logical_to_sharding(spec, mesh, rules), x)
  return {k: place(v) for k, v in batch.items()}


def host_batch_rows(global_batch: int, mesh: Mesh, rules=TRAIN_RULES) -> tuple[int, int]:
  """[start, stop): the rows of a global batch of `global_batch` rows that this process's devices
  hold when the batch is split over the mesh's batch axes (all of them with one process).

  Multi-host data pipelines read exactly these rows (r1.data.pipeline: block start // (stop - start)
  of the global batch); place_host_batch puts them back in place.
  """
  row_sharding = logical_to_sharding(PartitionSpec("batch"), mesh, rules)
  axes = row_sharding.spec[0] or ()
  shards = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))
  if global_batch % shards:
    raise ValueError(f"global batch of {global_batch} rows: expected a multiple of the {shards} shards of the "
                     f"mesh's batch axes {axes}")
  chunks = {(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop)
            for s in row_sharding.addressable_devices_indices_map((global_batch,)).values()}
  start, stop = min(c[0] for c in chunks), max(c[1] for c in chunks)
  if sum(b - a for a, b in chunks) != stop - start:
    raise ValueError(f"process {jax.process_index()}'s devices hold rows {sorted(chunks)} of the global batch: "
                     "expected one contiguous block (order the mesh's devices by process)")
  return start, stop


def host_local_rows(x: jax.Array, mesh: Mesh, rules=TRAIN_RULES) -> np.ndarray:
  """This process's rows of a global array x[B, ...] (those host_batch_rows names), as numpy: the
  inverse of place_host_batch. With one process, all of np.asarray(x).

  An array laid out otherwise (a sampler output whose sharding XLA chose) is first resharded to
  rows split over the batch axes, so the rows are those of the process that placed the batch.
  """
  if jax.process_count() == 1:
    return np.asarray(x)
  rows = logical_to_sharding(PartitionSpec("batch"), mesh, rules)
  if not x.sharding.is_equivalent_to(rows, x.ndim):
    x = jax.jit(lambda a: a, out_shardings=rows)(x)
  # Devices that hold the same rows (replicas over the other axes) give one copy.
  shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


def max_over_processes(value: int) -> int:
  """The largest of every process's `value` (a collective: every process must call it); `value`
  itself with one process."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def pad_to_widest_process(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads this process's prompts tokens int32[B_host, T_host] / mask bool[B_host, T_host] to
  the widest process's T (a collective; unchanged with one process): each process padded to the
  bucket of its own longest prompt, and a global batch has one width, the bucket one process
  holding every prompt would have chosen."""
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  pad = ((0, 0), (max_over_processes(tokens.shape[1]) - tokens.shape[1], 0))
  return (np.pad(tokens, pad), np.pad(mask, pad)) if pad[1][0] else (tokens, mask)


def place_host_prompts(tokens: np.ndarray, mask: np.ndarray, mesh: Mesh, rules=TRAIN_RULES):
  """This process's left-padded prompts as global arrays split over the batch axes, at the widest
  process's width (pad_to_widest_process).

  Args:
    tokens: int32[B_host, T_host], 0 on the left padding; mask: bool[B_host, T_host].
  Returns:
    (tokens int32[B, T], mask bool[B, T]) with B = the processes' rows, T = max T_host.
  """
  tokens, mask = pad_to_widest_process(tokens, mask)
  placed = place_host_batch({"tokens": tokens, "mask": mask}, mesh, rules)
  return placed["tokens"], placed["mask"]


def gather_host_rows(x: np.ndarray, mesh: Mesh, rules=TRAIN_RULES) -> np.ndarray:
  """Every process's rows x[B_host, ...] of a global batch (as host_batch_rows assigns them),
  stacked in global row order, on every process (a collective); x itself with one process.

  Processes that hold the same rows (a mesh whose batch axes do not span them all) count once.
  """
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  start, _ = host_batch_rows(len(x) * jax.process_count(), mesh, rules)
  blocks = np.asarray(multihost_utils.process_allgather(x))
  starts = np.asarray(multihost_utils.process_allgather(np.int32(start)))
  _, first = np.unique(starts, return_index=True)  # sorted by start: global row order
  return np.concatenate(list(blocks[first]))

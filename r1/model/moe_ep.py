"""Expert parallelism for the routed experts (moe_impl="ep"): experts sharded over the `expert` axis.

The MoE layer routes its tokens as usual (GSPMD, sharded over the batch), then this kernel runs
under `jax.shard_map` on the mesh the model runs under (the one `r1.sharding.mesh_context` sets
with `jax.set_mesh`; read back with `jax.sharding.get_abstract_mesh`). Each device:
  1. packs its (token, expert) assignments into a send buffer [ep, C_send, D], one slot per
     destination device (expert e lives on device e // (E / ep) of the `expert` axis);
  2. exchanges the buffers with `all_to_all` over `expert`;
  3. sorts what it received into a padded [E / ep, C_exp, D] buffer and runs its local experts as
     one batched matmul (the einsum kernel's FFN);
  4. sends the results back with a second `all_to_all` and combines them with the routing weights.
Dropless by default: the buffers are first sized for twice the balanced load and, when some device
or expert got more than that, everything is redone (`lax.cond` on a globally reduced predicate, so
every device takes the same branch and the collectives match) with worst-case buffers,
C_send = n min(K, E / ep) and C_exp = ep n for n local tokens. With a capacity factor the buffers
hold ceil(cf N K / E) rows per expert and an assignment is kept iff its rank among all N tokens is
below that, exactly as in the single-device einsum kernel.
Without an `expert` mesh axis of size > 1 that splits the batch, the MoE layer uses the einsum kernel.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array

# Capacity (as a factor of the balanced load) of the first-choice dropless buffers; the einsum
# kernel in r1/model/moe.py uses the same factor.
DROPLESS_FAST_CAPACITY_FACTOR = 2.0
EXPERT_AXIS = "expert"


def expert_ffn(buf: Array, wi_gate: Array, wi_up: Array, wo: Array) -> Array:
  """SwiGLU experts as one batched matmul: buf [E, C, D], wi_* [E, D, F], wo [E, F, D] -> [E, C, D]."""
  h = nn.silu(jnp.einsum("ecd,edf->ecf", buf, wi_gate)) * jnp.einsum("ecd,edf->ecf", buf, wi_up)
  return jnp.einsum("ecf,efd->ecd", h, wo)


def expert_parallel_mesh(batch_size: int):
  """The active (abstract) mesh if it has an `expert` axis of size > 1 that shards the batch, else None.

  A batch that the expert axis cannot split (e.g. the batch-1 trace of `init`) runs the einsum
  kernel: every expert-axis device would hold the same tokens, and GSPMD serves that case.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or dict(mesh.shape).get(EXPERT_AXIS, 1) <= 1:
    return None
  return mesh if EXPERT_AXIS in _token_axes(mesh, batch_size) else None


def _token_axes(mesh, batch_size: int) -> tuple[str, ...]:
  """Mesh axes that shard the batch (the logical `batch` rule), as many as divide batch_size."""
  spec = nn.logical_to_mesh_axes(("batch",))[0]
  names = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
  axes, size = [], 1
  for name in names:
    n = dict(mesh.shape).get(name, 1)
    if n > 1 and batch_size % (size * n) == 0:
      axes.append(name)
      size *= n
  return tuple(axes)


def _rank_in_group(group: Array, num_groups: int) -> tuple[Array, Array]:
  """Each element's rank among the earlier elements of its group, and group sizes int32[num_groups].

  group: int32[A] in [0, num_groups]; the value num_groups marks elements to ignore.
  """
  order = jnp.argsort(group, stable=True)
  sizes = jnp.bincount(group, length=num_groups + 1).astype(jnp.int32)
  starts = jnp.cumsum(sizes) - sizes
  rank_sorted = jnp.arange(group.shape[0], dtype=jnp.int32) - starts[group[order]]
  return jnp.zeros_like(rank_sorted).at[order].set(rank_sorted), sizes[:num_groups]


def expert_parallel_moe(x: Array, weights: Array, experts: Array, wi_gate: Array, wi_up: Array, wo: Array,
                        mesh, capacity: int | None) -> Array:
  """Routed-expert output computed with the experts sharded over the mesh's `expert` axis.

  Args:
    x: [B, T, D] tokens in the compute dtype (sharded over the batch axes).
    weights: f32[B, T, K] routing weights; experts: int32[B, T, K] routed expert ids (E: none, a
      padding token's with a capacity factor: dropped, output 0).
    wi_gate, wi_up: [E, D, F]; wo: [E, F, D], in the compute dtype.
    mesh: a mesh (or abstract mesh) whose `expert` axis shards the batch; see `expert_parallel_mesh`.
    capacity: rows per expert over all B*T tokens (capacity factor), or None for dropless.
  Returns:
    y [B, T, D]: sum_k weights[..., k] * expert_{experts[..., k]}(x), in x's dtype.
  """
  b, t, d = x.shape
  e, k = wi_gate.shape[0], experts.shape[-1]
  ep = dict(mesh.shape)[EXPERT_AXIS]
  if e % ep:
    raise ValueError(f"moe_impl='ep': n_routed_experts={e} is not divisible by the expert axis size {ep}")
  e_loc = e // ep
  token_axes = _token_axes(mesh, b)
  if EXPERT_AXIS not in token_axes:
    raise ValueError(f"moe_impl='ep': batch {b} is not split over the expert axis by the `batch` rule")
  num_token_shards = math.prod(dict(mesh.shape)[a] for a in token_axes)
  n = b // num_token_shards * t                                      # tokens per device
  all_axes = tuple(mesh.axis_names)

  if capacity is not None:
    caps = [(min(n * min(k, e_loc), e_loc * capacity), capacity)]
  else:
    worst = (n * min(k, e_loc), ep * n)
    fast = (math.ceil(DROPLESS_FAST_CAPACITY_FACTOR * n * k / ep),
            math.ceil(DROPLESS_FAST_CAPACITY_FACTOR * ep * n * k / e))
    caps = [worst] if fast[0] >= worst[0] and fast[1] >= worst[1] else [
        (min(fast[0], worst[0]), min(fast[1], worst[1])), worst]

  def local(x, weights, experts, wi_gate, wi_up, wo):
    tokens = x.reshape(n, d)
    flat = experts.reshape(n * k)
    if capacity is None:
      keep = jnp.ones_like(flat, bool)
    else:
      # The single-device kernel keeps an expert's first `capacity` assignments in token order;
      # a token's global rank is its local rank plus the counts on the token shards before it.
      local_rank, local_counts = _rank_in_group(flat, e)
      counts = jax.lax.all_gather(local_counts, token_axes)             # [token shards, E]
      me = jax.lax.axis_index(token_axes)
      offset = jnp.where(jnp.arange(counts.shape[0])[:, None] < me, counts, 0).sum(0)
      keep = (flat < e) & (offset[flat] + local_rank < capacity)   # id e: padding, no capacity
    dest = jnp.where(keep, flat // e_loc, ep)                        # ep: dropped
    send_rank, send_counts = _rank_in_group(dest, ep)
    local_expert = flat % e_loc

    def dispatch(c_send, c_exp):
      send_x = jnp.zeros((ep, c_send, d), x.dtype).at[dest, send_rank].set(tokens[jnp.arange(n * k) // k],
                                                                            mode="drop")
      send_e = jnp.full((ep, c_send), e_loc, jnp.int32).at[dest, send_rank].set(local_expert, mode="drop")
      recv_x = jax.lax.all_to_all(send_x, EXPERT_AXIS, 0, 0, tiled=True).reshape(ep * c_send, d)
      recv_e = jax.lax.all_to_all(send_e, EXPERT_AXIS, 0, 0, tiled=True).reshape(ep * c_send)
      exp_rank, _ = _rank_in_group(recv_e, e_loc)                    # e_loc: an empty slot
      buf = jnp.zeros((e_loc, c_exp, d), x.dtype).at[recv_e, exp_rank].set(recv_x, mode="drop")
      out = expert_ffn(buf, wi_gate, wi_up, wo)
      rows = out.at[recv_e, exp_rank].get(mode="fill", fill_value=0).reshape(ep, c_send, d)
      back = jax.lax.all_to_all(rows, EXPERT_AXIS, 0, 0, tiled=True)
      return back.at[dest, send_rank].get(mode="fill", fill_value=0)  # [n*K, D]; dropped -> 0

    if len(caps) == 1:
      y = dispatch(*caps[0])
    else:
      # The fast buffers fit iff no device sends more than C_send rows to one device and no expert
      # receives more than C_exp rows; reduced over the whole mesh so all devices branch alike.
      expert_counts = jax.lax.psum(jnp.bincount(flat, length=e), EXPERT_AXIS)
      overflow = jnp.maximum(send_counts.max() - caps[0][0], expert_counts.max() - caps[0][1])
      fits = jax.lax.pmax(overflow, all_axes) <= 0
      y = jax.lax.cond(fits, lambda: dispatch(*caps[0]), lambda: dispatch(*caps[1]))
    y = jnp.einsum("nkd,nk->nd", y.reshape(n, k, d).astype(jnp.float32), weights.reshape(n, k))
    return y.astype(x.dtype).reshape(x.shape)

  tok = P(token_axes)
  exp = P(EXPERT_AXIS)
  return jax.shard_map(local, mesh=mesh, in_specs=(tok, tok, tok, exp, exp, exp), out_specs=tok)(
      x, weights, experts, wi_gate, wi_up, wo)

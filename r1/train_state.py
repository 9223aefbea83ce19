"""The train state and what every update step shares: shardings, accumulation, the optimizer update.

  optimizer, schedule = optim.make_optimizer(3e-6, warmup_steps=10, decay_steps=1000)
  state = init_train_state(variables, optimizer, with_reference=True)
  step = r1.grpo.make_grpo_step(config, optimizer, schedule, kl_coef=0.001)   # or r1.sft.make_sft_step
  state, metrics = step(state, batch)      # state is donated

An update accumulates gradients over micro-batches with `lax.scan` (`accumulate_gradients`), clips
by global norm, applies AdamW, moves the aux-loss-free balancing bias by the forward's expert load,
refreshes the reference (parameters and balancing bias) every `ref_update_every` updates, and
is skipped whole (counted) if the loss or a gradient is not finite (`apply_update`). Before it is traced, an unsharded update that
one device cannot hold is refused with the split that fits (`refuse_update_that_cannot_fit`).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from r1 import optim
from r1 import sharding
from r1.model import ModelConfig, abstract_variables

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """step int32[] updates applied; params; moe_bias ({} without noaux_tc routing); opt_state (optax);
  ref_params, ref_moe_bias (the reference policy: frozen copies of both, taken together, or None
  without a KL term); skipped_steps int32[].

  The reference keeps the balancing bias it was copied with: the bias decides which experts a
  token goes to, so routing the reference with the policy's moving bias would move pi_ref between
  refreshes.
  """
  step: Array
  params: dict
  moe_bias: dict
  opt_state: Any
  ref_params: dict | None
  ref_moe_bias: dict | None
  skipped_steps: Array


def init_train_state(variables: dict, optimizer, *, with_reference: bool = True) -> TrainState:
  """A TrainState owning `variables` (they are donated by the step: do not reuse them).

  The reference is a copy into fresh buffers, never an alias of the policy's.
  """
  params = variables["params"]
  moe_bias = variables.get("moe_bias", {})
  ref_params = ref_moe_bias = None
  if with_reference:
    ref_params, ref_moe_bias = jax.tree.map(lambda x: x.copy(), (params, moe_bias))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, moe_bias=moe_bias,
                    opt_state=jax.jit(optimizer.init)(params), ref_params=ref_params, ref_moe_bias=ref_moe_bias,
                    skipped_steps=jnp.zeros((), jnp.int32))


def train_state_shardings(config: ModelConfig, optimizer, mesh, *, with_reference: bool = True) -> TrainState:
  """NamedShardings for a TrainState: params (and their Adam moments, reference) by the logical
  rules of r1.sharding, everything else replicated."""
  var_sh = sharding.variable_shardings(abstract_variables(config), mesh)
  params_sh = var_sh["params"]
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_params = nn.unbox(abstract_variables(config))["params"]
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params_sh,
                                 transform_non_params=lambda _: replicated,
                                 is_leaf=lambda x: isinstance(x, NamedSharding))
  bias_sh = var_sh.get("moe_bias", {})
  return TrainState(step=replicated, params=params_sh, moe_bias=bias_sh, opt_state=opt_sh,
                    ref_params=params_sh if with_reference else None,
                    ref_moe_bias=bias_sh if with_reference else None, skipped_steps=replicated)


# --- Accumulation and the update -------------------------------------------------------------


def combine_sums(a: dict, b: dict) -> dict:
  """Combines two dicts of statistics: keys ending in _min / _max by min / max, the rest by +."""
  def combine(k):
    if k.endswith("_min"):
      return jnp.minimum(a[k], b[k])
    if k.endswith("_max"):
      return jnp.maximum(a[k], b[k])
    return a[k] + b[k]
  return {k: combine(k) for k in a}


def empty_sums(keys) -> dict:
  """The identity of `combine_sums` for these keys (+inf for _min, -inf for _max, else 0)."""
  ident = lambda k: jnp.inf if k.endswith("_min") else -jnp.inf if k.endswith("_max") else 0.0
  return {k: jnp.asarray(ident(k), jnp.float32) for k in keys}


def split_micro_batches(tree, num_micro_batches: int):
  """[B, ...] -> [n, B / n, ...]; micro-batch j holds rows j, j + n, ... so that each one spreads
  over the devices that shard the batch contiguously."""
  def split(x):
    b = x.shape[0]
    if b % num_micro_batches:
      raise ValueError(f"batch size {b} is not divisible by num_micro_batches={num_micro_batches}")
    return x.reshape(b // num_micro_batches, num_micro_batches, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, tree)


def merge_micro_batches(x: Array) -> Array:
  """Inverse of split_micro_batches for one array [n, B / n, ...] -> [B, ...]."""
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


def constrain_batch(mb: dict) -> dict:
  """Each [b, ...] micro-batch array constrained to the logical axes ("batch", None, ...)."""
  return {k: nn.with_logical_constraint(v, ("batch",) + (None,) * (v.ndim - 1)) for k, v in mb.items()}


def accumulate_gradients(loss_fn: Callable, params, micro_batches: dict, sum_keys):
  """lax.scan over micro-batches of loss_fn(params, mb) -> (loss, (sums, per_row, expert_load)).

  The losses must already be normalised for the whole batch (r1.grpo.loss_weights), so gradients
  and losses add. Returns (loss, grads, sums, per_row outputs [n, b, ...], expert_load summed).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(carry, mb):
    loss_acc, grad_acc, sums_acc, load_acc = carry
    (loss, (sums, per_row, load)), grads = grad_fn(params, constrain_batch(mb))
    grad_acc = jax.tree.map(jnp.add, grad_acc, grads)
    return (loss_acc + loss, grad_acc, combine_sums(sums_acc, sums), load_acc + load), per_row

  first = jax.tree.map(lambda x: x[0], micro_batches)
  load_shape = jax.eval_shape(lambda p, mb: loss_fn(p, mb)[1][2], params, first)
  init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params), empty_sums(sum_keys),
          jnp.zeros(load_shape.shape, load_shape.dtype))
  (loss, grads, sums, load), per_row = jax.lax.scan(body, init, micro_batches)
  return loss, grads, sums, per_row, load


def apply_update(state: TrainState, loss, grads, expert_load, *, config, optimizer, schedule,
                 bias_update_rate, ref_update_every, with_mtp=False):
  """Optimizer + balancing-bias update + reference refresh; a non-finite loss or gradient leaves
  the state unchanged except skipped_steps. Returns (state, metrics)."""
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  candidate = state.replace(step=step, params=params, opt_state=opt_state,
                            moe_bias=optim.update_moe_bias(state.moe_bias, expert_load, config, bias_update_rate, with_mtp))
  new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), candidate, state)
  new = new.replace(skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
  if state.ref_params is not None and ref_update_every:
    # R1 section 2.2.2 / DeepSeekMath: the reference is replaced by the policy every N updates.
    # The copy is the final new params (behind a barrier: XLA may not recompute the update for
    # it). Taken from the update before the finite-select, XLA:CPU without LLVM's optimisations
    # rounded the copy a few ulps away from the policy.
    refresh = finite & (step % ref_update_every == 0)
    params = jax.lax.optimization_barrier(new.params)
    ref_params, ref_moe_bias = jax.tree.map(lambda p, r: jnp.where(refresh, p, r), (params, new.moe_bias),
                                            (state.ref_params, state.ref_moe_bias))
    new = new.replace(params=params, ref_params=ref_params, ref_moe_bias=ref_moe_bias)
  metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
             "skipped": (~finite).astype(jnp.float32)}
  metrics.update(optim.expert_load_metrics(expert_load, config, with_mtp))
  return new, metrics


def jit_in_mesh(fn, mesh, **jit_kwargs):
  """jax.jit(fn), called under the mesh and its logical-axis rules when there is a mesh."""
  jitted = jax.jit(fn, **jit_kwargs)
  if mesh is None:
    return jitted

  def run(*args):
    with sharding.mesh_context(mesh):
      return jitted(*args)
  run.jitted = jitted
  return run


def jit_step(step_fn, state_shardings, mesh):
  """jit_in_mesh(step_fn) with the state (argument 0) donated and, when sharded, kept in its shardings."""
  kwargs = {"donate_argnums": 0}
  if state_shardings is not None:
    kwargs["out_shardings"] = (state_shardings, None)
  return jit_in_mesh(step_fn, mesh, **kwargs)


class UpdateMemoryError(ValueError):
  """An update that cannot fit the device's memory; says which split to set instead."""


def _update_peak_fn(config: ModelConfig, state: TrainState, rows: int, seq_len: int):
  """(num_micro_batches, logits_chunk_size) -> r1.tools.plan's peak bytes per device of this update."""
  from r1.tools import plan as plan_lib  # pylint: disable=g-import-not-at-top  (the planner imports the library)
  tree_bytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # pylint: disable=unnecessary-lambda-assignment
  params = tree_bytes(state.params)
  resident = tree_bytes((state.params, state.moe_bias, state.opt_state, state.ref_params))
  return lambda m, chunk: plan_lib.update_peak_bytes(config, resident=resident, params=params, rows=rows,
                                                     seq_len=seq_len, num_micro_batches=m, logits_chunk=chunk)


def fitting_update_split(config: ModelConfig, state: TrainState, rows: int,
                         seq_len: int) -> tuple[int, int | None] | None:
  """The fastest (num_micro_batches, logits_chunk_size) at which one device holds the update of `rows`
  x `seq_len` tokens: (1, None) when it fits the device, else the fastest split r1.tools.plan
  finds within FIT_HEADROOM of it, else None. `state` may hold tracers (only shapes are read)."""
  from r1.tools import plan as plan_lib  # pylint: disable=g-import-not-at-top
  peak_of = _update_peak_fn(config, state, rows, seq_len)
  limit = plan_lib.device_memory_bytes()
  if peak_of(1, None) <= limit:
    return 1, None
  return plan_lib.fit_update_split(peak_of, rows, plan_lib.FIT_HEADROOM * limit)


def refuse_update_that_cannot_fit(config: ModelConfig, state: TrainState, rows: int, seq_len: int,
                                  num_micro_batches: int, logits_chunk_size: int | None) -> None:
  """Raises UpdateMemoryError, before XLA allocates, when one device cannot hold the update of
  `rows` x `seq_len` tokens at this split (r1.tools.plan's estimate, within -20%/+30% of XLA's): with a
  real vocabulary the [rows, T, V] logits alone are many GiB (SmolLM2's 49,152 tokens: 64 x 256 x
  49,152 float32 logits are 3.2 GB, and the backward keeps three such). Names the fastest split
  that fits; `state` may hold tracers (only shapes are read)."""
  from r1.tools import plan as plan_lib  # pylint: disable=g-import-not-at-top  (the planner imports the library)
  peak_of = _update_peak_fn(config, state, rows, seq_len)
  limit = plan_lib.device_memory_bytes()
  peak = peak_of(num_micro_batches, logits_chunk_size)
  if peak <= limit:
    return
  split = plan_lib.fit_update_split(peak_of, rows, plan_lib.FIT_HEADROOM * limit)
  advice = (f"set num_micro_batches={split[0]}, logits_chunk_size={split[1]}" if split else
            "no micro-batch / logits-chunk split fits: shard the model over a mesh, or use fewer rows or tokens")
  raise UpdateMemoryError(
      f"the update of {rows} rows x {seq_len} tokens ({config.vocab_size}-token vocabulary) needs about "
      f"{plan_lib.format_bytes(peak)} per device at num_micro_batches={num_micro_batches}, "
      f"logits_chunk_size={logits_chunk_size}; the device has {plan_lib.format_bytes(limit)}: {advice} "
      "(in a config: grpo.num_micro_batches, grpo.logits_chunk_size, or grpo.fit_memory=True)")

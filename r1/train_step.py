"""The fused, jitted policy update for GRPO and SFT: state in, state and metrics out.

  optimizer, schedule = optim.make_optimizer(3e-6, warmup_steps=10, decay_steps=1000)
  state = init_train_state(variables, optimizer, with_reference=True)
  step = make_grpo_step(config, optimizer, schedule, kl_coef=0.001, num_iterations=1)
  state, metrics = step(state, batch)      # state is donated

One call runs `num_iterations` (the paper's mu) optimizer updates on one rollout batch. Each update
accumulates gradients over micro-batches with `lax.scan`, clips by global norm, applies AdamW,
moves the aux-loss-free balancing bias by the forward's expert load, refreshes the reference
every `ref_update_every` updates, and is skipped whole (counted) if the loss or a gradient is not
finite. The batch formats are in `make_grpo_step` and `make_sft_step`.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from r1 import grpo
from r1 import optim
from r1 import sharding
from r1.model import ModelConfig, Transformer, abstract_variables

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """step int32[] updates applied; params; moe_bias ({} without noaux_tc routing); opt_state (optax);
  ref_params (a frozen copy of params, or None without a KL term); skipped_steps int32[]."""
  step: Array
  params: dict
  moe_bias: dict
  opt_state: Any
  ref_params: dict | None
  skipped_steps: Array


def init_train_state(variables: dict, optimizer, *, with_reference: bool = True) -> TrainState:
  """A TrainState owning `variables` (they are donated by the step: do not reuse them).

  The reference is a copy into fresh buffers, never an alias of the policy's.
  """
  params = variables["params"]
  ref = jax.tree.map(lambda x: x.copy(), params) if with_reference else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, moe_bias=variables.get("moe_bias", {}),
                    opt_state=jax.jit(optimizer.init)(params), ref_params=ref,
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
  return TrainState(step=replicated, params=params_sh, moe_bias=var_sh.get("moe_bias", {}), opt_state=opt_sh,
                    ref_params=params_sh if with_reference else None, skipped_steps=replicated)


# --- Shared machinery ---------------------------------------------------------------------------


def forward(config: ModelConfig, params, moe_bias, tokens, positions, segment_ids, targets, *,
            chunk_size: int | None = None, return_mtp: bool = False):
  """Policy forward -> (logprobs f32[B, T] of targets, entropy f32[B, T], ModelOutput without logits)."""
  variables = {"params": params, "moe_bias": moe_bias} if moe_bias else {"params": params}
  out = Transformer(config).apply(variables, tokens, positions, segment_ids, return_logits=False,
                                  return_mtp=return_mtp)
  logprobs, entropy = grpo.head_logprobs(config, params, out.hidden, targets, chunk_size)
  return logprobs, entropy, out


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


def _constrain_batch(mb: dict) -> dict:
  return {k: nn.with_logical_constraint(v, ("batch",) + (None,) * (v.ndim - 1)) for k, v in mb.items()}


def accumulate_gradients(loss_fn: Callable, params, micro_batches: dict, sum_keys):
  """lax.scan over micro-batches of loss_fn(params, mb) -> (loss, (sums, per_row, expert_load)).

  The losses must already be normalised for the whole batch (grpo.loss_weights), so gradients
  and losses add. Returns (loss, grads, sums, per_row outputs [n, b, ...], expert_load summed).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(carry, mb):
    loss_acc, grad_acc, sums_acc, load_acc = carry
    (loss, (sums, per_row, load)), grads = grad_fn(params, _constrain_batch(mb))
    grad_acc = jax.tree.map(jnp.add, grad_acc, grads)
    return (loss_acc + loss, grad_acc, grpo.combine_sums(sums_acc, sums), load_acc + load), per_row

  first = jax.tree.map(lambda x: x[0], micro_batches)
  load_shape = jax.eval_shape(lambda p, mb: loss_fn(p, mb)[1][2], params, first)
  init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params), grpo.empty_sums(sum_keys),
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
    new = new.replace(params=params, ref_params=jax.tree.map(lambda p, r: jnp.where(refresh, p, r), params,
                                                             state.ref_params))
  metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
             "skipped": (~finite).astype(jnp.float32)}
  metrics.update(optim.expert_load_metrics(expert_load, config, with_mtp))
  return new, metrics


def _jit_in_mesh(fn, mesh, **jit_kwargs):
  """jax.jit(fn), called under the mesh and its logical-axis rules when there is a mesh."""
  jitted = jax.jit(fn, **jit_kwargs)
  if mesh is None:
    return jitted

  def run(*args):
    with sharding.mesh_context(mesh):
      return jitted(*args)
  run.jitted = jitted
  return run


def _jit_step(step_fn, state_shardings, mesh):
  kwargs = {"donate_argnums": 0}
  if state_shardings is not None:
    kwargs["out_shardings"] = (state_shardings, None)
  return _jit_in_mesh(step_fn, mesh, **kwargs)


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


# --- GRPO ---------------------------------------------------------------------------------------

GRPO_SUM_KEYS = ("policy_loss", "kl_loss", "tokens", "kl", "ratio", "clip_low", "clip_high", "ratio_min",
                 "ratio_max", "entropy")


def make_grpo_grad_fn(config: ModelConfig, *, clip_eps=0.2, clip_eps_high=None, kl_coef=0.04,
                      loss_agg="seq-mean-token-mean", num_micro_batches=1, logits_chunk_size=None):
  """(params, moe_bias, batch, ref_logprobs|None, old_logprobs|None) -> (loss, grads, sums,
  logprobs f32[B, T], expert_load int32[L, E]). Not jitted; the building block of the step."""

  def loss_fn(params, mb, moe_bias):
    lp, ent, out = forward(config, params, moe_bias, mb["tokens"], mb["positions"], mb["segment_ids"],
                           grpo.next_token_targets(mb["tokens"]), chunk_size=logits_chunk_size)
    old = mb["old_logprobs"] if "old_logprobs" in mb else jax.lax.stop_gradient(lp)
    terms = grpo.grpo_token_terms(lp, old, mb.get("ref_logprobs"), mb["advantages"], mb["completion_mask"],
                                  clip_eps=clip_eps, clip_eps_high=clip_eps_high, kl_coef=kl_coef)
    loss, sums = grpo.weighted_sums(terms, mb["completion_mask"], mb["weights"], kl_coef)
    sums["entropy"] = jnp.sum(jnp.asarray(mb["completion_mask"], jnp.float32) * ent)
    return loss, (sums, jax.lax.stop_gradient(lp), out.expert_load)

  def grad_fn(params, moe_bias, batch, ref_logprobs=None, old_logprobs=None):
    fields = {k: batch[k] for k in ("tokens", "positions", "segment_ids", "completion_mask", "advantages")}
    fields["weights"] = grpo.loss_weights(batch["completion_mask"], loss_agg)
    if ref_logprobs is not None:
      fields["ref_logprobs"] = ref_logprobs
    if old_logprobs is not None:
      fields["old_logprobs"] = old_logprobs
    mbs = split_micro_batches(fields, num_micro_batches)
    loss, grads, sums, lp, load = accumulate_gradients(
        lambda p, mb: loss_fn(p, mb, moe_bias), params, mbs, GRPO_SUM_KEYS)
    return loss, grads, sums, merge_micro_batches(lp), load

  return grad_fn


def reference_logprobs(config: ModelConfig, ref_params, moe_bias, batch, *, num_micro_batches=1,
                       logits_chunk_size=None) -> Array:
  """f32[B, T] log-probabilities of the next tokens under the reference, micro-batch by micro-batch."""
  fields = {k: batch[k] for k in ("tokens", "positions", "segment_ids")}

  def one(mb):
    mb = _constrain_batch(mb)
    lp, _, _ = forward(config, ref_params, moe_bias, mb["tokens"], mb["positions"], mb["segment_ids"],
                       grpo.next_token_targets(mb["tokens"]), chunk_size=logits_chunk_size)
    return lp

  lp = jax.lax.map(one, split_micro_batches(fields, num_micro_batches))
  return jax.lax.stop_gradient(merge_micro_batches(lp))


def make_reference_logprobs_fn(config: ModelConfig, *, num_micro_batches: int = 1,
                               logits_chunk_size: int | None = None, mesh=None):
  """The reference forward on its own, jitted: fn(ref_params, moe_bias, batch) -> f32[B, T].

  batch needs tokens, positions, segment_ids [B, T] (the GRPO batch layout). It computes exactly
  what the GRPO step computes when batch has no "ref_logprobs"; dispatching it before the rewards
  are scored lets the device run the reference forward while the host scores (JAX dispatch is
  asynchronous), and the result goes into the step as batch["ref_logprobs"].
  """
  def fn(ref_params, moe_bias, batch):
    fields = {k: batch[k] for k in ("tokens", "positions", "segment_ids")}
    return reference_logprobs(config, ref_params, moe_bias, fields, num_micro_batches=num_micro_batches,
                              logits_chunk_size=logits_chunk_size)

  return _jit_in_mesh(fn, mesh)


def make_grpo_step(config: ModelConfig, optimizer, schedule, *, clip_eps: float = 0.2,
                   clip_eps_high: float | None = None, kl_coef: float = 0.04,
                   loss_agg: str = "seq-mean-token-mean", num_iterations: int = 1, num_micro_batches: int = 1,
                   logits_chunk_size: int | None = None, ref_update_every: int = 400,
                   bias_update_rate: float = 0.001, group_size: int | None = None,
                   state_shardings: TrainState | None = None, mesh=None):
  """The jitted GRPO update: step(state, batch) -> (state, metrics); `state` is donated.

  Batch (B = N prompts x G samples, groups of G consecutive rows; T prompt + completion):
    tokens: int32[B, T] prompt + completion (left-padded prompts are fine).
    positions: int32[B, T] RoPE positions (0 at the first real token).
    segment_ids: int32[B, T] 1 on real tokens, 0 on padding.
    completion_mask: [B, T] 1 at position t iff the *target* tokens[t + 1] is a completion token
      (so it is 0 at the last position and at the last prompt token's predecessor).
    advantages: f32[B] (grpo.group_advantages).
    old_logprobs: optional f32[B, T] pi_old(tokens[t + 1]) from the rollout. Without it the first
      iteration uses stop_gradient of its own logprobs (ratio exactly 1) and later iterations reuse
      those.
    ref_logprobs: optional f32[B, T]; else computed from state.ref_params when kl_coef != 0 (routed
      with the current balancing bias: the bias is routing state, not a parameter the reference copies).

  Args:
    num_iterations: the paper's mu, optimizer updates on this batch.
    num_micro_batches: gradient accumulation steps per update (B must divide).
    logits_chunk_size: time chunk of the LM head (None: whole micro-batch at once).
    ref_update_every: refresh the reference every this many updates (0: never).
    bias_update_rate: aux-loss-free balancing speed gamma (0: off).
    group_size: G, only for the frac_reward_zero_std metric.
    state_shardings, mesh: for a sharded step (train_state_shardings); batch arrays carry their own.
  Raises UpdateMemoryError when it is first traced, if one device cannot hold the update at this
  split (unsharded steps; it names the split to use).
  Metrics: loss, policy_loss, kl_loss, kl, entropy, clip_ratio/{low,high,region}_mean,
    ratio/{mean,min,max}, advantages/{mean,std}, frac_reward_zero_std, grad_norm, learning_rate,
    skipped (updates skipped for non-finite values this call), expert_load/<layer>/{min,max,entropy}
    (averaged over iterations; ratio extremes are min / max over them).
  """
  if num_iterations < 1:
    raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
  grad_fn = make_grpo_grad_fn(config, clip_eps=clip_eps, clip_eps_high=clip_eps_high, kl_coef=kl_coef,
                              loss_agg=loss_agg, num_micro_batches=num_micro_batches,
                              logits_chunk_size=logits_chunk_size)

  def one_update(state, batch, ref_lp, old_lp):
    loss, grads, sums, lp, load = grad_fn(state.params, state.moe_bias, batch, ref_lp, old_lp)
    state, metrics = apply_update(state, loss, grads, load, config=config, optimizer=optimizer,
                                  schedule=schedule, bias_update_rate=bias_update_rate,
                                  ref_update_every=ref_update_every)
    metrics.update(grpo.finalize_metrics(sums))
    return state, metrics, lp

  def step(state: TrainState, batch: dict):
    if mesh is None:   # Sharded: the stage plans per-device memory (r1.train.common.update_split).
      refuse_update_that_cannot_fit(config, state, *batch["tokens"].shape, num_micro_batches, logits_chunk_size)
    ref_lp = batch.get("ref_logprobs")
    if kl_coef and ref_lp is None:
      if state.ref_params is None:
        raise ValueError("kl_coef != 0 needs state.ref_params (init_train_state(with_reference=True)) "
                         "or batch['ref_logprobs']")
      ref_lp = reference_logprobs(config, state.ref_params, state.moe_bias, batch,
                                  num_micro_batches=num_micro_batches, logits_chunk_size=logits_chunk_size)
    if not kl_coef:
      ref_lp = None
    old_lp = batch.get("old_logprobs")
    state, metrics, lp0 = one_update(state, batch, ref_lp, old_lp)
    if num_iterations > 1:
      old_lp = lp0 if old_lp is None else old_lp

      def body(s, _):
        s, m, _ = one_update(s, batch, ref_lp, old_lp)
        return s, m

      state, rest = jax.lax.scan(body, state, None, length=num_iterations - 1)
      metrics = jax.tree.map(lambda a, r: jnp.concatenate([a[None], r]), metrics, rest)
      metrics = {k: v.min() if k == "ratio/min" else v.max() if k == "ratio/max" else
                 v.sum() if k == "skipped" else v.mean() for k, v in metrics.items()}
    metrics.update(grpo.advantage_metrics(batch["advantages"]))
    if group_size:
      # group_advantages gives exactly 0 to every row of a zero-std group, and only to those.
      zero = jnp.all(batch["advantages"].reshape(-1, group_size) == 0, axis=1)
      metrics["frac_reward_zero_std"] = zero.astype(jnp.float32).mean()
    return state, metrics

  return _jit_step(step, state_shardings, mesh)


# --- SFT ----------------------------------------------------------------------------------------


def mtp_targets_and_masks(targets, loss_mask, segment_ids, depth: int):
  """For each MTP depth k: targets int32[D, B, T] (token i + k + 2 = targets[i + k + 1]) and masks
  f32[D, B, T] (that target is a response token in the same packed segment)."""
  ys, ms = [], []
  t = targets.shape[1]
  for k in range(depth):
    shift = k + 1
    pad = lambda x: jnp.pad(x[:, shift:], ((0, 0), (0, min(shift, t))))[:, :t]
    same = (pad(segment_ids) == segment_ids) & (segment_ids != 0)
    ys.append(pad(targets))
    ms.append(pad(jnp.asarray(loss_mask, jnp.float32)) * same)
  return jnp.stack(ys), jnp.stack(ms)


def forward_kl(teacher_logits: Array, student_logits: Array, temperature: float = 1.0) -> Array:
  """KL(p_T || p_S) f32[...] per position, both softmaxes at `temperature`: [..., V] logits ->
  sum_v p_T(v) (log p_T(v) - log p_S(v)). Not scaled by temperature^2 (the loss does that)."""
  log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)


def head_logprobs_and_kl(config: ModelConfig, params: dict, hidden: Array, teacher_config: ModelConfig,
                         teacher_params: dict, teacher_hidden: Array, targets: Array, *,
                         temperature: float = 1.0, chunk_size: int | None = None):
  """Both LM heads, over T in chunks like grpo.head_logprobs: never more than one f32[B, chunk, V]
  of student and one of teacher logits alive (each chunk is rematerialised in the backward pass).

  hidden [B, T, D], teacher_hidden [B, T, D_T] (after the final norms; the teacher's gets no
  gradient), targets int32[B, T] -> (logprobs f32[B, T] of targets, entropy f32[B, T],
  kl f32[B, T] = forward_kl of the two next-token distributions at `temperature`).
  """
  student, teacher = Transformer(config), Transformer(teacher_config)
  teacher_params = jax.lax.stop_gradient(teacher_params)
  teacher_hidden = jax.lax.stop_gradient(teacher_hidden)

  def terms(h, h_t, y):
    logits = student.apply({"params": params}, h, method=lambda m, x: m.head(x))
    teacher_logits = teacher.apply({"params": teacher_params}, h_t, method=lambda m, x: m.head(x))
    lp, ent = grpo.logprobs_from_logits(logits, y)
    return lp, ent, forward_kl(teacher_logits, logits, temperature)

  b, t, _ = hidden.shape
  if not chunk_size or chunk_size >= t:
    return terms(hidden, teacher_hidden, targets)
  n = -(-t // chunk_size)
  pad = n * chunk_size - t
  to_chunks = lambda x: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)).reshape(
      b, n, chunk_size, *x.shape[2:]).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(lambda a: terms(*a)), (to_chunks(hidden), to_chunks(teacher_hidden),
                                                          to_chunks(targets)))
  return tuple(x.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t] for x in out)


def teacher_shardings(teacher_config: ModelConfig, mesh) -> dict:
  """NamedShardings for a distillation teacher's variables: a policy's, by r1.sharding's rules."""
  return sharding.variable_shardings(abstract_variables(teacher_config), mesh)


def make_sft_step(config: ModelConfig, optimizer, schedule, *, mtp_weight: float = 0.0, num_micro_batches: int = 1,
                  logits_chunk_size: int | None = None, bias_update_rate: float = 0.001,
                  teacher_config: ModelConfig | None = None, distill_weight: float = 0.0,
                  distill_temperature: float = 1.0, state_shardings: TrainState | None = None, mesh=None):
  """The jitted SFT update: step(state, batch) -> (state, metrics), masked next-token NLL on the
  response tokens (token mean over the whole batch), plus mtp_weight / D * sum_k L_MTP^k (V3 eq. 25)
  when mtp_weight > 0 and the config has MTP modules.

  With a teacher (logit distillation, Hinton et al. arXiv:1503.02531) the step is
  step(state, batch, teacher_variables) and the loss is
    nll + distill_weight * tau^2 * distill_kl,
  distill_kl = token mean over response targets of KL(p_T || p_S), both next-token distributions
  at temperature tau (tau^2 keeps the gradient's size as tau changes: d/dz_S = tau (p_S - p_T)).
  The teacher runs forward only, micro-batch by micro-batch beside the student, and may be another
  architecture (a DeepSeek-MoE teacher, a Qwen2 student) with the same vocabulary. distill_weight 0
  ignores the teacher: the step is exactly the plain SFT step (still called with teacher_variables).

  Batch (r1.data.pipeline.sft_dataset): inputs, targets, loss_mask, segment_ids, positions, all
  int32[B, T]; targets[t] is the token after inputs[t], loss_mask 1 on response targets.
  teacher_variables: the teacher's {"params", "moe_bias"?} (on a mesh placed by teacher_shardings);
  an argument, never a closure, so that they are not baked into the program as constants.
  Metrics: loss, nll, mtp_nll (if used), distill_kl (if distilling), entropy, grad_norm,
  learning_rate, skipped, expert load.
  """
  use_mtp = bool(mtp_weight) and config.num_nextn_predict_layers > 0
  depth = config.num_nextn_predict_layers
  if teacher_config is not None:
    if teacher_config.vocab_size != config.vocab_size:
      raise ValueError(f"distillation teacher vocab_size {teacher_config.vocab_size} != student vocab_size "
                       f"{config.vocab_size}: logit distillation needs one vocabulary (same tokenizer)")
    if distill_weight < 0 or distill_temperature <= 0:
      raise ValueError(f"distill_weight={distill_weight} must be >= 0 and distill_temperature="
                       f"{distill_temperature} > 0")
  elif distill_weight:
    raise ValueError(f"distill_weight={distill_weight} needs a teacher_config")
  use_distill = teacher_config is not None and distill_weight > 0
  sum_keys = ("nll", "tokens", "entropy") + (("mtp_nll",) if use_mtp else ()) + (
      ("distill_kl",) if use_distill else ())
  tau = float(distill_temperature)

  def loss_fn(params, mb, moe_bias, teacher_variables):
    if use_distill:
      variables = {"params": params, "moe_bias": moe_bias} if moe_bias else {"params": params}
      out = Transformer(config).apply(variables, mb["inputs"], mb["positions"], mb["segment_ids"],
                                      return_logits=False, return_mtp=use_mtp)
      teacher_hidden = Transformer(teacher_config).apply(
          jax.lax.stop_gradient(teacher_variables), mb["inputs"], mb["positions"], mb["segment_ids"],
          return_logits=False).hidden
      lp, ent, kl = head_logprobs_and_kl(config, params, out.hidden, teacher_config, teacher_variables["params"],
                                         teacher_hidden, mb["targets"], temperature=tau,
                                         chunk_size=logits_chunk_size)
    else:
      lp, ent, out = forward(config, params, moe_bias, mb["inputs"], mb["positions"], mb["segment_ids"],
                             mb["targets"], chunk_size=logits_chunk_size, return_mtp=use_mtp)
    m = jnp.asarray(mb["loss_mask"], jnp.float32)
    nll = -jnp.sum(m * mb["weights"][:, None] * lp)
    sums = {"nll": nll, "tokens": m.sum(), "entropy": jnp.sum(m * ent)}
    loss = nll
    if use_mtp:
      mtp_lp, _ = grpo.logprobs_from_logits(out.mtp_logits, mb["mtp_targets"].swapaxes(0, 1))
      w = (mb["mtp_masks"] * mb["mtp_weights"][..., None]).swapaxes(0, 1)  # [D, b, T]
      sums["mtp_nll"] = -jnp.sum(w * mtp_lp) / depth
      loss = loss + mtp_weight * sums["mtp_nll"]
    if use_distill:
      # The NLL's token-mean weights, so distill_kl is a token mean over the whole batch too.
      sums["distill_kl"] = jnp.sum(m * mb["weights"][:, None] * kl)
      loss = loss + distill_weight * tau ** 2 * sums["distill_kl"]
    return loss, (sums, jnp.zeros(lp.shape[:1]), out.expert_load)

  def step(state: TrainState, batch: dict, teacher_variables=None):
    fields = {k: batch[k] for k in ("inputs", "targets", "loss_mask", "segment_ids", "positions")}
    fields["weights"] = grpo.loss_weights(batch["loss_mask"], "token-mean")
    if use_mtp:
      ys, ms = mtp_targets_and_masks(batch["targets"], batch["loss_mask"], batch["segment_ids"], depth)
      fields["mtp_targets"] = ys.swapaxes(0, 1)  # [B, D, T] so micro-batches split on axis 0
      fields["mtp_masks"] = ms.swapaxes(0, 1)
      fields["mtp_weights"] = jax.vmap(lambda m: grpo.loss_weights(m, "token-mean"), out_axes=1)(ms)
    mbs = split_micro_batches(fields, num_micro_batches)
    loss, grads, sums, _, load = accumulate_gradients(
        lambda p, mb: loss_fn(p, mb, state.moe_bias, teacher_variables), state.params, mbs, sum_keys)
    state, metrics = apply_update(state, loss, grads, load, config=config, optimizer=optimizer, schedule=schedule,
                                  bias_update_rate=bias_update_rate, ref_update_every=0, with_mtp=use_mtp)
    metrics["nll"] = sums["nll"]
    metrics["entropy"] = sums["entropy"] / jnp.maximum(sums["tokens"], 1.0)
    metrics["num_tokens"] = sums["tokens"]
    if use_mtp:
      metrics["mtp_nll"] = sums["mtp_nll"]
    if use_distill:
      metrics["distill_kl"] = sums["distill_kl"]
    return state, metrics

  if teacher_config is None:
    return _jit_step(lambda state, batch: step(state, batch), state_shardings, mesh)
  return _jit_step(step, state_shardings, mesh)

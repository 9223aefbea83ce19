"""Supervised fine-tuning as pure functions: the NLL, MTP and distillation losses and the SFT step.

  step = make_sft_step(config, optimizer, schedule, mtp_weight=0.3)       # r1.train_state machinery
  state, metrics = step(state, batch)                                     # state is donated

Used by R1's cold start and post-RL SFT stages and by distillation (r1/stages/sft.py).
"""

import jax
import jax.numpy as jnp

from r1 import grpo
from r1 import logprobs as logprobs_lib
from r1 import sharding
from r1 import train_state
from r1.model import ModelConfig, Transformer, abstract_variables

Array = jax.Array


def sft_loss(logprobs: Array, loss_mask: Array) -> tuple[Array, dict]:
  """Masked next-token cross-entropy on response tokens: -sum(mask * logprobs) / sum(mask).

  logprobs: f32[B, T] log-probability of each target token; loss_mask: [B, T] 1 on response targets.
  Returns (loss, {"nll", "num_tokens"}).
  """
  m = jnp.asarray(loss_mask, jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  loss = -jnp.sum(m * logprobs) / n
  return loss, {"nll": loss, "num_tokens": m.sum()}


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
  """Both LM heads, over T in chunks like logprobs_lib.head_logprobs: never more than one f32[B, chunk, V]
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
    lp, ent = logprobs_lib.logprobs_from_logits(logits, y)
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
                  distill_temperature: float = 1.0, state_shardings: train_state.TrainState | None = None, mesh=None):
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
      lp, ent, out = logprobs_lib.forward(config, params, moe_bias, mb["inputs"], mb["positions"], mb["segment_ids"],
                             mb["targets"], chunk_size=logits_chunk_size, return_mtp=use_mtp)
    m = jnp.asarray(mb["loss_mask"], jnp.float32)
    nll = -jnp.sum(m * mb["weights"][:, None] * lp)
    sums = {"nll": nll, "tokens": m.sum(), "entropy": jnp.sum(m * ent)}
    loss = nll
    if use_mtp:
      mtp_lp, _ = logprobs_lib.logprobs_from_logits(out.mtp_logits, mb["mtp_targets"].swapaxes(0, 1))
      w = (mb["mtp_masks"] * mb["mtp_weights"][..., None]).swapaxes(0, 1)  # [D, b, T]
      sums["mtp_nll"] = -jnp.sum(w * mtp_lp) / depth
      loss = loss + mtp_weight * sums["mtp_nll"]
    if use_distill:
      # The NLL's token-mean weights, so distill_kl is a token mean over the whole batch too.
      sums["distill_kl"] = jnp.sum(m * mb["weights"][:, None] * kl)
      loss = loss + distill_weight * tau ** 2 * sums["distill_kl"]
    return loss, (sums, jnp.zeros(lp.shape[:1]), out.expert_load)

  def step(state: train_state.TrainState, batch: dict, teacher_variables=None):
    fields = {k: batch[k] for k in ("inputs", "targets", "loss_mask", "segment_ids", "positions")}
    fields["weights"] = grpo.loss_weights(batch["loss_mask"], "token-mean")
    if use_mtp:
      ys, ms = mtp_targets_and_masks(batch["targets"], batch["loss_mask"], batch["segment_ids"], depth)
      fields["mtp_targets"] = ys.swapaxes(0, 1)  # [B, D, T] so micro-batches split on axis 0
      fields["mtp_masks"] = ms.swapaxes(0, 1)
      fields["mtp_weights"] = jax.vmap(lambda m: grpo.loss_weights(m, "token-mean"), out_axes=1)(ms)
    mbs = train_state.split_micro_batches(fields, num_micro_batches)
    loss, grads, sums, _, load = train_state.accumulate_gradients(
        lambda p, mb: loss_fn(p, mb, state.moe_bias, teacher_variables), state.params, mbs, sum_keys)
    state, metrics = train_state.apply_update(state, loss, grads, load, config=config, optimizer=optimizer, schedule=schedule,
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
    return train_state.jit_step(lambda state, batch: step(state, batch), state_shardings, mesh)
  return train_state.jit_step(step, state_shardings, mesh)

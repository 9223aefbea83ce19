"""GRPO (DeepSeekMath arXiv:2402.03300 section 4; R1 arXiv:2501.12948 eq. 1-3) as pure functions.

  advantages = group_advantages(rewards, group_size)                     # R1 eq. 3
  loss, metrics = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask)   # eq. 1-2
  step = make_grpo_step(config, optimizer, schedule, kl_coef=0.001, group_size=16,
                        temperature=1.0, num_mini_batches=16)           # the fused update of a rollout
  state, metrics = step(state, batch)              # batch["rewards"] f32[B]; r1.train_state; donated

The shift convention everywhere: position t of a [B, T] token-level array scores the *target*
token t + 1 (`targets[:, t] = tokens[:, t + 1]`), so masks mark positions whose target is a
completion token (r1.logprobs). A new loss is an edit to this file: the token terms
(`grpo_token_terms`), their aggregation (`loss_weights`, `weighted_sums`) and the step that runs
them (`make_grpo_step`) are all here; the machinery every update shares is r1.train_state.
"""

import jax
import jax.numpy as jnp

from r1 import logprobs as logprobs_lib
from r1 import train_state
from r1.model import ModelConfig

Array = jax.Array

# log_softmax(logits / temperature) at the targets, and its entropy: what every logprob of the step is.
logprobs_from_logits = logprobs_lib.logprobs_from_logits

LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")

# exp() of a log-ratio above this is clamped: e^20 ~ 5e8 is far outside any ratio that the clip
# or the KL penalty would treat differently, and float32 exp overflows at ~88.
_MAX_LOG_RATIO = 20.0


def group_advantages(rewards: Array, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-6) -> Array:
  """Group-relative advantages, R1 eq. 3: A_i = (r_i - mean(r_group)) / (std(r_group) + eps).

  Args:
    rewards: f32[B], B = N * G: N groups of G consecutive rows (the G samples of one prompt).
    group_size: G.
    scale_by_std: False gives Dr. GRPO (arXiv:2503.20783): A_i = r_i - mean, no division.
    eps: added to the std.
  Returns:
    advantages f32[B]. std is the unbiased sample std (ddof=1, as torch.std in TRL's GRPOTrainer);
    a group whose rewards are all equal (or G = 1) gets advantages of exactly 0.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1 or rewards.shape[0] % group_size:
    raise ValueError(f"rewards must be f32[N * G] with G = group_size = {group_size}, got shape {rewards.shape}")
  r = rewards.reshape(-1, group_size)
  centered = r - r.mean(axis=1, keepdims=True)
  if scale_by_std:
    ddof = 1 if group_size > 1 else 0
    centered = centered / (jnp.std(r, axis=1, ddof=ddof, keepdims=True) + eps)
  # The mean of equal floats need not equal them exactly; zero-std groups carry no signal.
  constant = (r.max(axis=1, keepdims=True) == r.min(axis=1, keepdims=True))
  return jnp.where(constant, 0.0, centered).reshape(-1)


def loss_weights(mask: Array, loss_agg: str, max_completion_length: int | None = None) -> Array:
  """Per-row token weights w f32[B] such that the aggregated loss is sum_{b,t} mask * loss * w[b].

  seq-mean-token-mean (GRPO, R1 eq. 1): w_b = 1 / (B * max(|o_b|, 1)), |o_b| = sum_t mask[b].
  token-mean (DAPO arXiv:2503.14476): w_b = 1 / max(sum mask, 1).
  seq-mean-token-sum-norm (Dr. GRPO arXiv:2503.20783): w_b = 1 / (B * L), L the generation budget
    `max_completion_length`, a constant (None: the padded length T, which moves with the prompt
    bucket and so moves the effective learning rate).
  Computed on the whole batch, the weights make micro-batch losses add up to the batch loss.
  """
  mask = jnp.asarray(mask, jnp.float32)
  b, t = mask.shape
  if loss_agg == "seq-mean-token-mean":
    return 1.0 / (b * jnp.maximum(mask.sum(axis=1), 1.0))
  if loss_agg == "token-mean":
    return jnp.full((b,), 1.0, jnp.float32) / jnp.maximum(mask.sum(), 1.0)
  if loss_agg == "seq-mean-token-sum-norm":
    return jnp.full((b,), 1.0 / (b * (t if max_completion_length is None else max_completion_length)), jnp.float32)
  raise ValueError(f"loss_agg={loss_agg!r}: expected one of {LOSS_AGGREGATIONS}")


def grpo_token_terms(logprobs, old_logprobs, ref_logprobs, advantages, mask, *, clip_eps=0.2,
                     clip_eps_high=None, kl_coef=0.04, policy_weight=None) -> dict[str, Array]:
  """Per-token GRPO terms, all f32[B, T] (masked positions hold finite junk; weight them by mask).

  Returns policy (-clipped surrogate, times policy_weight f32[B, T] when given: a constant
  per-token weight such as truncated importance sampling's), kl (k3), loss (= policy + kl_coef *
  kl), ratio, and the TRL clip indicators clip_low (ratio < 1 - eps and A < 0), clip_high
  (ratio > 1 + eps_high and A > 0): the tokens whose gradient the clip zeroes.
  """
  mask = jnp.asarray(mask).astype(bool)
  eps_high = clip_eps if clip_eps_high is None else clip_eps_high
  adv = jnp.asarray(advantages, jnp.float32)[:, None]
  # Padding may hold -inf logprobs; zero the differences there so no NaN reaches the gradient.
  log_ratio = jnp.where(mask, logprobs - old_logprobs, 0.0)
  ratio = jnp.exp(jnp.minimum(log_ratio, _MAX_LOG_RATIO))
  # R1 eq. 1: min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A); DAPO's clip-higher if asymmetric.
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + eps_high) * adv)
  terms = {
      "policy": -surrogate if policy_weight is None else -surrogate * policy_weight,
      "ratio": ratio,
      "clip_low": ((ratio < 1.0 - clip_eps) & (adv < 0)).astype(jnp.float32),
      "clip_high": ((ratio > 1.0 + eps_high) & (adv > 0)).astype(jnp.float32),
  }
  if kl_coef:
    if ref_logprobs is None:
      raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs f32[B, T], got None")
    terms["kl"] = k3_kl(jnp.where(mask, ref_logprobs - logprobs, 0.0))
  else:
    terms["kl"] = jnp.zeros_like(ratio)
  terms["loss"] = terms["policy"] + kl_coef * terms["kl"]
  return terms


def k3_kl(log_ref_ratio: Array) -> Array:
  """R1 eq. 2, the unbiased k3 estimator of KL(pi || pi_ref) per token: e^d - d - 1 >= 0, d = log pi_ref/pi.

  Past d = 20 (pi_ref/pi ~ 5e8; float32's exp overflows at 88) it continues along its tangent at
  20: finite, and still pulling a token the policy has collapsed back at the steepest slope there
  (clamping d itself, min(d, 20), would give such a token zero gradient, exactly where the
  penalty should pull hardest; clamping only the exponent would turn its gradient's sign).
  """
  d = log_ref_ratio
  capped = jnp.minimum(d, _MAX_LOG_RATIO)
  # d - capped is exactly 0 below the cap: there this is e^d - d - 1 bit for bit.
  return jnp.exp(capped) * (1.0 + (d - capped)) - d - 1.0


def weighted_sums(terms: dict[str, Array], mask: Array, weights: Array, kl_coef: float) -> tuple[Array, dict]:
  """Reduces grpo_token_terms: (loss, sums) where loss = sum mask * w * loss_token.

  sums hold additive statistics (so micro-batches combine by +, min and max): the weighted
  policy_loss and kl_loss, masked token sums of kl, ratio and the clip indicators, the token
  count, and ratio_min / ratio_max. `finalize_metrics` turns them into means.
  """
  m = jnp.asarray(mask, jnp.float32)
  mw = m * weights[:, None]
  loss = jnp.sum(mw * terms["loss"])
  on = m > 0
  sums = {
      "policy_loss": jnp.sum(mw * terms["policy"]),
      "kl_loss": kl_coef * jnp.sum(mw * terms["kl"]),
      "tokens": jnp.sum(m),
      "kl": jnp.sum(m * terms["kl"]),
      "ratio": jnp.sum(m * terms["ratio"]),
      "clip_low": jnp.sum(m * terms["clip_low"]),
      "clip_high": jnp.sum(m * terms["clip_high"]),
      "ratio_min": jnp.min(jnp.where(on, terms["ratio"], jnp.inf)),
      "ratio_max": jnp.max(jnp.where(on, terms["ratio"], -jnp.inf)),
  }
  return loss, sums


def finalize_metrics(sums: dict) -> dict[str, Array]:
  """Token means from `weighted_sums`, under TRL GRPOTrainer names where the meaning is the same."""
  n = jnp.maximum(sums["tokens"], 1.0)
  low, high = sums["clip_low"] / n, sums["clip_high"] / n
  metrics = {
      "kl": sums["kl"] / n,
      "clip_ratio/low_mean": low,
      "clip_ratio/high_mean": high,
      "clip_ratio/region_mean": low + high,  # the two indicators are disjoint
      "ratio/mean": sums["ratio"] / n,
      "ratio/min": sums["ratio_min"],
      "ratio/max": sums["ratio_max"],
      "policy_loss": sums["policy_loss"],
      "kl_loss": sums["kl_loss"],
      "num_tokens": sums["tokens"],
  }
  if "entropy" in sums:
    metrics["entropy"] = sums["entropy"] / n
  return metrics


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, *, clip_eps=0.2, clip_eps_high=None,
              kl_coef=0.04, loss_agg="seq-mean-token-mean", max_completion_length=None):
  """The GRPO objective, negated for minimisation (R1 eq. 1-2).

  Per token: ratio = exp(logprobs - old_logprobs); surrogate = min(ratio A, clip(ratio, 1 - eps,
  1 + eps_high) A); KL = exp(ref - logprobs) - (ref - logprobs) - 1; loss = -(surrogate - kl_coef KL),
  aggregated by `loss_agg` (see `loss_weights`).

  Args:
    logprobs: f32[B, T] the policy's log-probabilities of the sampled tokens (differentiated).
    old_logprobs: f32[B, T] the sampling policy's (pi_old); pass stop_gradient(logprobs) for mu = 1.
    ref_logprobs: f32[B, T] the reference policy's, or None when kl_coef == 0.
    advantages: f32[B] one per sequence (group_advantages).
    mask: bool/float[B, T], 1 on completion tokens.
    clip_eps, clip_eps_high: the clip range [1 - clip_eps, 1 + clip_eps_high]; None: symmetric.
    kl_coef: beta of eq. 1.
    loss_agg: "seq-mean-token-mean" (GRPO), "token-mean" (DAPO) or "seq-mean-token-sum-norm" (Dr. GRPO).
    max_completion_length: Dr. GRPO's constant normaliser, the generation budget (None: T).
  Returns:
    (loss f32[], metrics dict of f32[]): kl, clip_ratio/{low,high,region}_mean, ratio/{mean,min,max},
    policy_loss, kl_loss, num_tokens, advantages/{mean,std}.
  """
  for name, x in (("logprobs", logprobs), ("old_logprobs", old_logprobs), ("mask", mask)):
    if jnp.shape(x) != jnp.shape(logprobs) or jnp.ndim(x) != 2:
      raise ValueError(f"{name} must be [B, T] like logprobs {jnp.shape(logprobs)}, got {jnp.shape(x)}")
  if jnp.shape(advantages) != jnp.shape(logprobs)[:1]:
    raise ValueError(f"advantages must be f32[B] with B = {jnp.shape(logprobs)[0]}, got {jnp.shape(advantages)}")
  terms = grpo_token_terms(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=clip_eps,
                           clip_eps_high=clip_eps_high, kl_coef=kl_coef)
  loss, sums = weighted_sums(terms, mask, loss_weights(mask, loss_agg, max_completion_length), kl_coef)
  metrics = finalize_metrics(sums)
  metrics.update(advantage_metrics(advantages))
  return loss, metrics


def advantage_metrics(advantages: Array) -> dict[str, Array]:
  """advantages/mean and advantages/std of f32[B] advantages (frac_reward_zero_std is the rollout's:
  r1.metrics.rollout_metrics, from the rewards)."""
  adv = jnp.asarray(advantages, jnp.float32)
  return {"advantages/mean": adv.mean(), "advantages/std": adv.std()}


# --- The GRPO step -----------------------------------------------------------------------------

GRPO_SUM_KEYS = ("policy_loss", "kl_loss", "tokens", "kl", "ratio", "clip_low", "clip_high", "ratio_min",
                 "ratio_max", "entropy")
TIS_SUM_KEYS = ("tis_weight", "tis_truncated")


def make_grpo_grad_fn(config: ModelConfig, *, clip_eps=0.2, clip_eps_high=None, kl_coef=0.04,
                      loss_agg="seq-mean-token-mean", max_completion_length=None, temperature=1.0, tis_cap=0.0,
                      num_micro_batches=1, logits_chunk_size=None):
  """(params, moe_bias, batch, ref_logprobs|None, old_logprobs|None) -> (loss, grads, sums,
  logprobs f32[B, T], expert_load int32[L, E]). Not jitted; the building block of the step.

  batch: tokens, positions, segment_ids, completion_mask [B, T], advantages f32[B], and with
  tis_cap > 0 sampler_logprobs f32[B, T]. Logprobs are of softmax(logits / temperature). Without
  old_logprobs, pi_old is stop_gradient of the forward's own logprobs (ratio exactly 1).
  """
  sum_keys = GRPO_SUM_KEYS + (TIS_SUM_KEYS if tis_cap else ())

  def loss_fn(params, mb, moe_bias):
    lp, ent, out = logprobs_lib.forward(config, params, moe_bias, mb["tokens"], mb["positions"], mb["segment_ids"],
                                        logprobs_lib.next_token_targets(mb["tokens"]), chunk_size=logits_chunk_size,
                                        temperature=temperature)
    old = mb["old_logprobs"] if "old_logprobs" in mb else jax.lax.stop_gradient(lp)
    mask = mb["completion_mask"]
    m = jnp.asarray(mask, jnp.float32)
    weight = None
    if tis_cap:
      # Truncated importance sampling (verl, after train/inference mismatch was shown to destabilise
      # RL): the rollout came from the sampler's pi, not from pi_old, so the policy term is
      # reweighted by min(pi_old / pi_sampler, cap), a constant per token.
      log_w = jnp.where(m > 0, old - mb["sampler_logprobs"], 0.0)
      weight = jax.lax.stop_gradient(jnp.minimum(jnp.exp(jnp.minimum(log_w, _MAX_LOG_RATIO)), tis_cap))
    terms = grpo_token_terms(lp, old, mb.get("ref_logprobs"), mb["advantages"], mask, clip_eps=clip_eps,
                             clip_eps_high=clip_eps_high, kl_coef=kl_coef, policy_weight=weight)
    loss, sums = weighted_sums(terms, mask, mb["weights"], kl_coef)
    sums["entropy"] = jnp.sum(m * ent)
    if tis_cap:
      sums.update({"tis_weight": jnp.sum(m * weight), "tis_truncated": jnp.sum(m * (weight >= tis_cap))})
    return loss, (sums, jax.lax.stop_gradient(lp), out.expert_load)

  def grad_fn(params, moe_bias, batch, ref_logprobs=None, old_logprobs=None):
    keys = ("tokens", "positions", "segment_ids", "completion_mask", "advantages") + (
        ("sampler_logprobs",) if tis_cap else ())
    fields = {k: batch[k] for k in keys}
    fields["weights"] = loss_weights(batch["completion_mask"], loss_agg, max_completion_length)
    if ref_logprobs is not None:
      fields["ref_logprobs"] = ref_logprobs
    if old_logprobs is not None:
      fields["old_logprobs"] = old_logprobs
    mbs = train_state.split_micro_batches(fields, num_micro_batches)
    loss, grads, sums, lp, load = train_state.accumulate_gradients(
        lambda p, mb: loss_fn(p, mb, moe_bias), params, mbs, sum_keys)
    return loss, grads, sums, train_state.merge_micro_batches(lp), load

  return grad_fn


def policy_logprobs(config: ModelConfig, params, moe_bias, batch, *, temperature: float = 1.0,
                    num_micro_batches: int = 1, logits_chunk_size: int | None = None) -> Array:
  """f32[B, T] log-probabilities of the next tokens under softmax(logits / temperature) of this
  policy (the reference's, or pi_old's), micro-batch by micro-batch, without gradient.

  batch needs tokens, positions, segment_ids [B, T] (the GRPO batch layout).
  """
  fields = {k: batch[k] for k in ("tokens", "positions", "segment_ids")}

  def one(mb):
    mb = train_state.constrain_batch(mb)
    lp, _, _ = logprobs_lib.forward(config, params, moe_bias, mb["tokens"], mb["positions"], mb["segment_ids"],
                                    logprobs_lib.next_token_targets(mb["tokens"]), chunk_size=logits_chunk_size,
                                    temperature=temperature)
    return lp

  lp = jax.lax.map(one, train_state.split_micro_batches(fields, num_micro_batches))
  return jax.lax.stop_gradient(train_state.merge_micro_batches(lp))


def reference_logprobs(config: ModelConfig, ref_params, moe_bias, batch, *, temperature: float = 1.0,
                       num_micro_batches=1, logits_chunk_size=None) -> Array:
  """f32[B, T] log-probabilities of the next tokens under the reference (`policy_logprobs`)."""
  return policy_logprobs(config, ref_params, moe_bias, batch, temperature=temperature,
                         num_micro_batches=num_micro_batches, logits_chunk_size=logits_chunk_size)


def make_reference_logprobs_fn(config: ModelConfig, *, temperature: float = 1.0, num_micro_batches: int = 1,
                               logits_chunk_size: int | None = None, mesh=None):
  """The reference forward on its own, jitted: fn(ref_params, ref_moe_bias, batch) -> f32[B, T].

  batch needs tokens, positions, segment_ids [B, T] (the GRPO batch layout). It computes exactly
  what the GRPO step computes when batch has no "ref_logprobs"; dispatching it before the rewards
  are scored lets the device run the reference forward while the host scores (JAX dispatch is
  asynchronous), and the result goes into the step as batch["ref_logprobs"].
  """
  def fn(ref_params, moe_bias, batch):
    return reference_logprobs(config, ref_params, moe_bias, batch, temperature=temperature,
                              num_micro_batches=num_micro_batches, logits_chunk_size=logits_chunk_size)

  return train_state.jit_in_mesh(fn, mesh)


def mini_batch_order(seed: int, step: Array, num_iterations: int, num_mini_batches: int, batch_size: int) -> Array:
  """int32[num_iterations * num_mini_batches, batch_size / num_mini_batches]: the rows of each
  sequential update of one rollout. Every iteration (the paper's mu) is a fresh permutation of
  the B rows, a function of (seed, step) only, so a resumed run updates in the same order; its
  M slices are the mini-batches. `step` is the train state's update count at the rollout."""
  if batch_size % num_mini_batches:
    raise ValueError(f"batch size {batch_size} is not divisible by num_mini_batches={num_mini_batches}")
  key = jax.random.fold_in(jax.random.key(seed), step)
  perms = [jax.random.permutation(jax.random.fold_in(key, i), batch_size) for i in range(num_iterations)]
  return jnp.stack(perms).reshape(num_iterations * num_mini_batches, batch_size // num_mini_batches).astype(jnp.int32)


def mismatch_metrics(sampler_logprobs: Array, train_logprobs: Array, mask: Array) -> dict[str, Array]:
  """Train/inference mismatch over completion tokens, all f32[]: how far the sampler's logprobs
  (absorbed-MLA decode on the latent cache, bf16 on accelerators) are from the training forward's
  at the same parameters (pi_old).

  mismatch/abs_mean, mismatch/abs_max: |log pi_sampler - log pi_train| per token.
  mismatch/kl: KL(pi_sampler || pi_train), the k3 estimate over the sampled tokens (>= 0).
  """
  m = jnp.asarray(mask, jnp.float32)
  diff = jnp.where(m > 0, train_logprobs - sampler_logprobs, 0.0)
  n = jnp.maximum(m.sum(), 1.0)
  return {"mismatch/abs_mean": jnp.sum(m * jnp.abs(diff)) / n,
          "mismatch/abs_max": jnp.max(jnp.abs(diff)),   # diff is 0 off the mask
          "mismatch/kl": jnp.sum(m * k3_kl(diff)) / n}


def _reduce_over_updates(metrics: dict) -> dict:
  """Per-update metrics [U] -> one value each: min / max for the ratio extremes, sum for skipped
  updates, the mean for the rest."""
  return {k: v.min() if k == "ratio/min" else v.max() if k == "ratio/max" else
          v.sum() if k == "skipped" else v.mean() for k, v in metrics.items()}


def make_grpo_step(config: ModelConfig, optimizer, schedule, *, clip_eps: float = 0.2,
                   clip_eps_high: float | None = None, kl_coef: float = 0.04,
                   loss_agg: str = "seq-mean-token-mean", max_completion_length: int | None = None,
                   temperature: float = 1.0, group_size: int | None = None, scale_by_std: bool = True,
                   num_iterations: int = 1, num_mini_batches: int = 1, num_micro_batches: int = 1,
                   shuffle_seed: int = 0, tis_cap: float = 0.0, logits_chunk_size: int | None = None,
                   ref_update_every: int = 400, bias_update_rate: float = 0.001,
                   state_shardings: train_state.TrainState | None = None, mesh=None):
  """The jitted GRPO update of one rollout: step(state, batch) -> (state, metrics); `state` is donated.

  One program runs advantages -> pi_old -> ratio -> k3 KL -> mu x M optimizer updates:
    advantages = group_advantages(batch["rewards"], group_size)      (or batch["advantages"])
    pi_old     = the training forward at the rollout's parameters, at `temperature`
    for each of mu iterations, a fresh shuffle of the B rows into M mini-batches; for each
      mini-batch, one optimizer update (gradient-accumulated over num_micro_batches)
  R1-Zero: 8,192 outputs per rollout in 16 mini-batches, mu = 1 (num_mini_batches=16). Updates 2..
  mu x M are off-policy: there the ratio, the clip and pi_old act.

  Batch (B = N prompts x G samples, groups of G consecutive rows; T prompt + completion):
    tokens: int32[B, T] prompt + completion (left-padded prompts are fine).
    positions: int32[B, T] RoPE positions (0 at the first real token).
    segment_ids: int32[B, T] 1 on real tokens, 0 on padding.
    completion_mask: [B, T] 1 at position t iff the *target* tokens[t + 1] is a completion token
      (so it is 0 at the last position and at the last prompt token's predecessor).
    rewards: f32[B] per-sample rewards (needs group_size = G): the advantages are computed here
      (group_advantages, scale_by_std). Or advantages: f32[B], for algorithms that bring their own.
    sampler_logprobs: optional f32[B, T], the sampler's logprob of tokens[t + 1] (same layout):
      logged against pi_old as the train/inference mismatch (`mismatch_metrics`), and with
      tis_cap > 0 the truncated importance weight min(pi_old / pi_sampler, tis_cap) (required then).
    old_logprobs: optional f32[B, T], pi_old given rather than computed.
    ref_logprobs: optional f32[B, T]; else computed from state.ref_params when kl_coef != 0, routed
      with state.ref_moe_bias (the balancing bias the reference was copied with: pi_ref stays fixed
      between refreshes while the policy's bias moves), in num_micro_batches x num_mini_batches
      pieces (make_reference_logprobs_fn with that split computes the same bits ahead of the step).

  Args:
    temperature: the rollouts' sampling temperature; every logprob (policy, pi_old, reference,
      entropy) is of softmax(logits / temperature), the distribution the samples came from.
    loss_agg, max_completion_length: the token aggregation (`loss_weights`, per mini-batch);
      Dr. GRPO's normaliser is max_completion_length (the generation budget) when given.
    num_iterations: the paper's mu, passes over the rollout.
    num_mini_batches: M, sequential updates per pass (B must divide by M x num_micro_batches).
    num_micro_batches: gradient accumulation steps per update.
    shuffle_seed: the mini-batch shuffle's seed (`mini_batch_order`; with M = 1 rows are not shuffled).
    tis_cap: truncated importance sampling's cap C (0: off).
    logits_chunk_size: time chunk of the LM head (None: whole micro-batch at once).
    ref_update_every: refresh the reference every this many rollout steps (calls of this step;
      mu x M updates each), the paper's "every 400 steps" (0: never).
    bias_update_rate: aux-loss-free balancing speed gamma (0: off), applied at every update.
    state_shardings, mesh: for a sharded step (train_state.train_state_shardings); batch arrays carry their own.
  The optimizer's schedule counts updates: build it with optim.make_optimizer(..., updates_per_step=
  num_iterations * num_mini_batches) so that warmup and decay count rollout steps.
  Raises UpdateMemoryError when it is first traced, if one device cannot hold the update at this
  split (unsharded steps; it names the split to use).
  Metrics: loss, policy_loss, kl_loss, kl, entropy, clip_ratio/{low,high,region}_mean,
    ratio/{mean,min,max}, advantages/{mean,std}, grad_norm, learning_rate, updates,
    skipped (updates skipped for non-finite values this call), expert_load/<layer>/{min,max,entropy}
    (averaged over the updates; ratio extremes are min / max over them), mismatch/{abs_mean,abs_max,kl}
    with sampler_logprobs, tis/{weight_mean,truncated} with tis_cap.
  """
  if num_iterations < 1 or num_mini_batches < 1:
    raise ValueError(f"num_iterations and num_mini_batches must be >= 1, got {num_iterations}, {num_mini_batches}")
  if temperature <= 0:
    raise ValueError(f"temperature={temperature}: GRPO needs the sampling distribution softmax(logits / T), T > 0 "
                     "(greedy rollouts have no logprobs to train on)")
  num_updates = num_iterations * num_mini_batches
  grad_fn = make_grpo_grad_fn(config, clip_eps=clip_eps, clip_eps_high=clip_eps_high, kl_coef=kl_coef,
                              loss_agg=loss_agg, max_completion_length=max_completion_length,
                              temperature=temperature, tis_cap=tis_cap, num_micro_batches=num_micro_batches,
                              logits_chunk_size=logits_chunk_size)
  # The forwards without gradient (reference, pi_old) over all B rows, in pieces of one update's
  # micro-batch: never more rows at once than the update holds.
  forward_kw = dict(temperature=temperature, num_micro_batches=num_micro_batches * num_mini_batches,
                    logits_chunk_size=logits_chunk_size)

  def one_update(state, rows):
    loss, grads, sums, lp, load = grad_fn(state.params, state.moe_bias, rows, rows.get("ref_logprobs"),
                                          rows.get("old_logprobs"))
    state, metrics = train_state.apply_update(state, loss, grads, load, config=config, optimizer=optimizer,
                                              schedule=schedule, bias_update_rate=bias_update_rate,
                                              ref_update_every=ref_update_every * num_updates)
    metrics.update(finalize_metrics(sums))
    if tis_cap:
      n = jnp.maximum(sums["tokens"], 1.0)
      metrics.update({"tis/weight_mean": sums["tis_weight"] / n, "tis/truncated": sums["tis_truncated"] / n})
    return state, metrics, lp

  def step(state: train_state.TrainState, batch: dict):
    b, t = batch["tokens"].shape
    if b % (num_mini_batches * num_micro_batches):
      raise ValueError(f"batch of {b} rows: not divisible into num_mini_batches={num_mini_batches} x "
                       f"num_micro_batches={num_micro_batches}")
    if mesh is None:   # Sharded: the stage plans per-device memory (r1.stages.common.update_split).
      train_state.refuse_update_that_cannot_fit(config, state, b // num_mini_batches, t, num_micro_batches,
                                                logits_chunk_size)
    if "advantages" in batch:
      advantages = batch["advantages"]
    elif "rewards" in batch:
      if group_size is None:
        raise ValueError("batch['rewards'] needs make_grpo_step(..., group_size=G) to form the groups")
      advantages = group_advantages(batch["rewards"], group_size, scale_by_std=scale_by_std)
    else:
      raise ValueError("the GRPO batch needs 'rewards' f32[B] (grouped G per prompt) or 'advantages' f32[B]")
    if tis_cap and "sampler_logprobs" not in batch:
      raise ValueError(f"tis_cap={tis_cap} needs batch['sampler_logprobs'] f32[B, T]")
    rows = {k: batch[k] for k in ("tokens", "positions", "segment_ids", "completion_mask")}
    rows["advantages"] = advantages
    if "sampler_logprobs" in batch:
      rows["sampler_logprobs"] = batch["sampler_logprobs"]
    if kl_coef:
      ref_lp = batch.get("ref_logprobs")
      if ref_lp is None:
        if state.ref_params is None:
          raise ValueError("kl_coef != 0 needs state.ref_params (train_state.init_train_state(with_reference=True)) "
                           "or batch['ref_logprobs']")
        ref_lp = reference_logprobs(config, state.ref_params, state.ref_moe_bias, batch, **forward_kw)
      rows["ref_logprobs"] = ref_lp
    if "old_logprobs" in batch:
      rows["old_logprobs"] = batch["old_logprobs"]

    if num_mini_batches == 1:
      # The first update's forward is at the rollout's parameters: its logprobs are pi_old (ratio
      # exactly 1), and the later iterations reuse them.
      state, metrics, first_lp = one_update(state, rows)
      rows.setdefault("old_logprobs", first_lp)
      if num_iterations > 1:
        state, rest = jax.lax.scan(lambda s, _: one_update(s, rows)[:2], state, None, length=num_iterations - 1)
        metrics = _reduce_over_updates(jax.tree.map(lambda a, r: jnp.concatenate([a[None], r]), metrics, rest))
    else:
      if "old_logprobs" not in rows:   # pi_old for every row, before the first update moves the policy.
        rows["old_logprobs"] = policy_logprobs(config, state.params, state.moe_bias, batch, **forward_kw)
      order = mini_batch_order(shuffle_seed, state.step, num_iterations, num_mini_batches, b)

      def body(s, idx):
        s, m, _ = one_update(s, jax.tree.map(lambda x: jnp.take(x, idx, axis=0), rows))
        return s, m

      state, metrics = jax.lax.scan(body, state, order)
      metrics = _reduce_over_updates(metrics)
    metrics.update(advantage_metrics(advantages))
    metrics["updates"] = jnp.asarray(num_updates, jnp.float32)
    if "sampler_logprobs" in rows:
      metrics.update(mismatch_metrics(rows["sampler_logprobs"], rows["old_logprobs"], rows["completion_mask"]))
    return state, metrics

  return train_state.jit_step(step, state_shardings, mesh)

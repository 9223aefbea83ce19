"""GRPO (DeepSeekMath arXiv:2402.03300 section 4; R1 arXiv:2501.12948 eq. 1-3) as pure functions.

  advantages = group_advantages(rewards, group_size)                     # R1 eq. 3
  loss, metrics = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask)   # eq. 1-2
  logprobs, entropy = token_logprobs(config, variables, tokens, targets, ...)  # chunked LM head

The shift convention everywhere: position t of a [B, T] token-level array scores the *target*
token t + 1 (`targets[:, t] = tokens[:, t + 1]`), so masks mark positions whose target is a
completion (or response) token. The fused train step that uses these lives in r1/train_step.py.
"""

import jax
import jax.numpy as jnp

from r1.model import ModelConfig, Transformer

Array = jax.Array

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


def frac_zero_std_groups(rewards: Array, group_size: int) -> Array:
  """f32[]: fraction of groups whose G rewards are all equal (TRL `frac_reward_zero_std`)."""
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  return jnp.mean((r.max(axis=1) == r.min(axis=1)).astype(jnp.float32))


def loss_weights(mask: Array, loss_agg: str) -> Array:
  """Per-row token weights w f32[B] such that the aggregated loss is sum_{b,t} mask * loss * w[b].

  seq-mean-token-mean (GRPO, R1 eq. 1): w_b = 1 / (B * max(|o_b|, 1)), |o_b| = sum_t mask[b].
  token-mean (DAPO arXiv:2503.14476): w_b = 1 / max(sum mask, 1).
  seq-mean-token-sum-norm (Dr. GRPO): w_b = 1 / (B * T), T the padded length.
  Computed on the whole batch, the weights make micro-batch losses add up to the batch loss.
  """
  mask = jnp.asarray(mask, jnp.float32)
  b, t = mask.shape
  if loss_agg == "seq-mean-token-mean":
    return 1.0 / (b * jnp.maximum(mask.sum(axis=1), 1.0))
  if loss_agg == "token-mean":
    return jnp.full((b,), 1.0, jnp.float32) / jnp.maximum(mask.sum(), 1.0)
  if loss_agg == "seq-mean-token-sum-norm":
    return jnp.full((b,), 1.0 / (b * t), jnp.float32)
  raise ValueError(f"loss_agg={loss_agg!r}: expected one of {LOSS_AGGREGATIONS}")


def grpo_token_terms(logprobs, old_logprobs, ref_logprobs, advantages, mask, *, clip_eps=0.2,
                     clip_eps_high=None, kl_coef=0.04) -> dict[str, Array]:
  """Per-token GRPO terms, all f32[B, T] (masked positions hold finite junk; weight them by mask).

  Returns policy (-clipped surrogate), kl (k3), loss (= policy + kl_coef * kl), ratio, and the
  TRL clip indicators clip_low (ratio < 1 - eps and A < 0), clip_high (ratio > 1 + eps_high and
  A > 0): the tokens whose gradient the clip zeroes.
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
      "policy": -surrogate,
      "ratio": ratio,
      "clip_low": ((ratio < 1.0 - clip_eps) & (adv < 0)).astype(jnp.float32),
      "clip_high": ((ratio > 1.0 + eps_high) & (adv > 0)).astype(jnp.float32),
  }
  if kl_coef:
    if ref_logprobs is None:
      raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs f32[B, T], got None")
    # R1 eq. 2: the unbiased k3 estimator pi_ref/pi - log(pi_ref/pi) - 1 >= 0.
    log_ref_ratio = jnp.minimum(jnp.where(mask, ref_logprobs - logprobs, 0.0), _MAX_LOG_RATIO)
    terms["kl"] = jnp.exp(log_ref_ratio) - log_ref_ratio - 1.0
  else:
    terms["kl"] = jnp.zeros_like(ratio)
  terms["loss"] = terms["policy"] + kl_coef * terms["kl"]
  return terms


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
              kl_coef=0.04, loss_agg="seq-mean-token-mean"):
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
  loss, sums = weighted_sums(terms, mask, loss_weights(mask, loss_agg), kl_coef)
  metrics = finalize_metrics(sums)
  metrics.update(advantage_metrics(advantages))
  return loss, metrics


def advantage_metrics(advantages: Array) -> dict[str, Array]:
  adv = jnp.asarray(advantages, jnp.float32)
  return {"advantages/mean": adv.mean(), "advantages/std": adv.std()}


def sft_loss(logprobs: Array, loss_mask: Array) -> tuple[Array, dict]:
  """Masked next-token cross-entropy on response tokens: -sum(mask * logprobs) / sum(mask).

  logprobs: f32[B, T] log-probability of each target token; loss_mask: [B, T] 1 on response targets.
  Returns (loss, {"nll", "num_tokens"}).
  """
  m = jnp.asarray(loss_mask, jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  loss = -jnp.sum(m * logprobs) / n
  return loss, {"nll": loss, "num_tokens": m.sum()}


def logprobs_from_logits(logits: Array, targets: Array) -> tuple[Array, Array]:
  """logits f32[..., V], targets int[...] -> (log p(target) f32[...], entropy f32[...] (no gradient))."""
  logits = logits.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  sg = jax.lax.stop_gradient(logits)
  probs = jax.nn.softmax(sg, axis=-1)
  entropy = jax.lax.stop_gradient(logz) - jnp.sum(probs * sg, axis=-1)
  return picked - logz, entropy


def head_logprobs(config: ModelConfig, params: dict, hidden: Array, targets: Array, chunk_size: int | None = None):
  """LM head + log-softmax over T in chunks: never more than f32[B, chunk, V] logits alive.

  Each chunk is rematerialised in the backward pass (jax.checkpoint), so training stores only
  `hidden`. hidden [B, T, D] after the final norm, targets int32[B, T] ->
  (logprobs f32[B, T], entropy f32[B, T]).
  """
  model = Transformer(config)
  b, t, d = hidden.shape
  head = lambda h: model.apply({"params": params}, h, method=lambda m, x: m.head(x))
  if not chunk_size or chunk_size >= t:
    return logprobs_from_logits(head(hidden), targets)
  n = -(-t // chunk_size)
  pad = n * chunk_size - t
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk_size, d).swapaxes(0, 1)
  y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, chunk_size).swapaxes(0, 1)

  @jax.checkpoint
  def chunk(hy):
    return logprobs_from_logits(head(hy[0]), hy[1])

  lp, ent = jax.lax.map(chunk, (h, y))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]
  return unchunk(lp), unchunk(ent)


def next_token_targets(tokens: Array) -> Array:
  """targets[:, t] = tokens[:, t + 1]; the last position gets 0 (its mask must be 0)."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))

"""GRPO math against an independent float64 numpy implementation of R1 eq. 1-3."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1 import grpo
from r1 import logprobs as logprobs_lib
from r1 import sft as sft_lib
from r1.model import Transformer, get_model_config, init_variables

AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


def np_grpo_loss(lp, old, ref, adv, mask, clip_eps, clip_eps_high, kl_coef, agg):
  """R1 eq. 1-2 in float64, written from the paper (no shared code with r1.grpo)."""
  lp, old, adv, mask = (np.asarray(x, np.float64) for x in (lp, old, adv, mask))
  hi = clip_eps if clip_eps_high is None else clip_eps_high
  ratio = np.exp(lp - old)
  a = adv[:, None]
  surrogate = np.minimum(ratio * a, np.clip(ratio, 1 - clip_eps, 1 + hi) * a)
  kl = np.zeros_like(lp)
  if kl_coef:
    d = np.asarray(ref, np.float64) - lp
    kl = np.exp(d) - d - 1
  per_token = -(surrogate - kl_coef * kl)
  b, t = lp.shape
  if agg == "seq-mean-token-mean":
    loss = np.mean([(per_token[i] * mask[i]).sum() / max(mask[i].sum(), 1) for i in range(b)])
  elif agg == "token-mean":
    loss = (per_token * mask).sum() / mask.sum()
  else:
    loss = (per_token * mask).sum() / (b * t)
  on = mask > 0
  stats = {
      "kl": kl[on].mean(),
      "clip_ratio/low_mean": ((ratio < 1 - clip_eps) & (a < 0))[on].mean(),
      "clip_ratio/high_mean": ((ratio > 1 + hi) & (a > 0))[on].mean(),
      "ratio/min": ratio[on].min(),
      "ratio/max": ratio[on].max(),
      "ratio/mean": ratio[on].mean(),
  }
  return loss, stats


def make_inputs(seed=3, b=6, t=8):
  rng = np.random.default_rng(seed)
  lp = rng.uniform(-3, -0.1, (b, t))
  old = lp + rng.normal(0, 0.4, (b, t))   # ratios spread well past both clip edges
  ref = lp + rng.normal(0, 0.5, (b, t))
  adv = rng.normal(0, 1, b)
  lengths = rng.integers(1, t, b)
  mask = (np.arange(t)[None] >= t - lengths[:, None] - 1) & (np.arange(t)[None] < t - 1)
  return lp, old, ref, adv, mask.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("clip_eps", "clip_eps_high", "kl_coef", "loss_agg"))
def loss_and_grad(lp, old, ref, adv, mask, clip_eps, clip_eps_high, kl_coef, loss_agg):
  f = lambda x: grpo.grpo_loss(x, old, ref, adv, mask, clip_eps=clip_eps, clip_eps_high=clip_eps_high,
                               kl_coef=kl_coef, loss_agg=loss_agg)
  (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(lp)
  return loss, metrics, grad


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("clip_eps_high,kl_coef", [(None, 0.04), (0.28, 0.04), (0.28, 0.0)])
def test_loss_and_gradient_match_float64_numpy(agg, clip_eps_high, kl_coef):
  lp, old, ref, adv, mask = make_inputs()
  loss, metrics, grad = loss_and_grad(*(jnp.float32(x) for x in (lp, old, ref, adv, mask)), clip_eps=0.2,
                                      clip_eps_high=clip_eps_high, kl_coef=kl_coef, loss_agg=agg)
  want, stats = np_grpo_loss(lp, old, ref, adv, mask, 0.2, clip_eps_high, kl_coef, agg)
  np.testing.assert_allclose(float(loss), want, rtol=2e-5, atol=1e-7)
  for k, v in stats.items():
    np.testing.assert_allclose(float(metrics[k]), v, rtol=2e-5, atol=1e-7, err_msg=k)
  # Clipping really happens on both sides in this data (else asymmetric clipping is untested).
  assert stats["clip_ratio/low_mean"] > 0 and stats["clip_ratio/high_mean"] > 0
  # Central differences of the float64 reference w.r.t. each logprob.
  h = 1e-6
  num = np.zeros_like(lp)
  for idx in np.ndindex(*lp.shape):
    up, dn = lp.copy(), lp.copy()
    up[idx] += h
    dn[idx] -= h
    num[idx] = (np_grpo_loss(up, old, ref, adv, mask, 0.2, clip_eps_high, kl_coef, agg)[0]
                - np_grpo_loss(dn, old, ref, adv, mask, 0.2, clip_eps_high, kl_coef, agg)[0]) / (2 * h)
  np.testing.assert_allclose(np.asarray(grad), num, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(grad)[mask == 0] == 0)
  np.testing.assert_allclose(float(metrics["policy_loss"] + metrics["kl_loss"]), float(loss), rtol=1e-6, atol=1e-7)


def test_asymmetric_clip_changes_the_loss():
  lp, old, ref, adv, mask = (jnp.float32(x) for x in make_inputs(seed=3))
  sym = grpo.grpo_loss(lp, old, ref, adv, mask, clip_eps=0.2)[0]
  asym = grpo.grpo_loss(lp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=0.28)[0]
  assert abs(float(sym) - float(asym)) > 1e-4


def test_ratio_is_exactly_one_on_policy():
  lp, _, ref, adv, mask = (jnp.float32(x) for x in make_inputs(seed=1))
  f = lambda x: grpo.grpo_loss(x, jax.lax.stop_gradient(x), ref, adv, mask, kl_coef=0.0, loss_agg="token-mean")
  (loss, m), grad = jax.value_and_grad(f, has_aux=True)(lp)
  assert float(m["ratio/min"]) == 1.0 and float(m["ratio/max"]) == 1.0
  assert float(m["clip_ratio/region_mean"]) == 0.0
  # d/dlp of -ratio * A at ratio 1 is -A per token, times the token-mean weight.
  want = -np.asarray(adv)[:, None] * np.asarray(mask) / float(mask.sum())
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-6, atol=1e-8)


def test_kl_coef_zero_needs_no_reference_and_nonzero_does():
  lp, old, _, adv, mask = (jnp.float32(x) for x in make_inputs())
  loss, m = grpo.grpo_loss(lp, old, None, adv, mask, kl_coef=0.0)
  assert np.isfinite(float(loss)) and float(m["kl"]) == 0.0
  with pytest.raises(ValueError, match="ref_logprobs"):
    grpo.grpo_loss(lp, old, None, adv, mask, kl_coef=0.04)
  with pytest.raises(ValueError, match="advantages"):
    grpo.grpo_loss(lp, old, None, adv[:2], mask, kl_coef=0.0)


def test_exp_overflow_is_guarded_and_padding_cannot_poison():
  lp, old, ref, adv, mask = make_inputs(seed=2)
  base = grpo.grpo_loss(*(jnp.float32(x) for x in (lp, old, ref, adv, mask)))[0]
  # Normal range: unchanged vs the unguarded float64 formula.
  np.testing.assert_allclose(float(base), np_grpo_loss(lp, old, ref, adv, mask, 0.2, None, 0.04,
                                                       "seq-mean-token-mean")[0], rtol=2e-5)
  lp2, old2, ref2 = lp.copy(), old.copy(), ref.copy()
  on = np.argwhere(mask > 0)
  lp2[tuple(on[0])] = 0.0
  old2[tuple(on[0])] = -200.0   # log ratio 200: exp would be inf in float32
  ref2[tuple(on[1])] = 0.0
  lp2[tuple(on[1])] = -150.0    # ref - logprob 150: same for the KL term
  off = np.argwhere(mask == 0)[0]
  lp2[tuple(off)] = -np.inf     # padding may hold anything
  old2[tuple(off)] = np.nan
  f = lambda x: grpo.grpo_loss(x, jnp.float32(old2), jnp.float32(ref2), jnp.float32(adv), jnp.float32(mask))[0]
  loss, grad = jax.value_and_grad(f)(jnp.float32(lp2))
  assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))


def np_group_advantages(r, g, scale):
  r = np.asarray(r, np.float64).reshape(-1, g)
  c = r - r.mean(1, keepdims=True)
  if scale:
    c = c / (r.std(1, ddof=1, keepdims=True) + 1e-6)
  return c.reshape(-1)


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages(scale):
  rng = np.random.default_rng(0)
  rewards = rng.uniform(0, 1, 12)
  rewards[4:8] = 0.1   # a zero-std group whose float mean is not exactly 0.1
  adv = np.asarray(grpo.group_advantages(jnp.float32(rewards), 4, scale_by_std=scale))
  want = np_group_advantages(rewards.astype(np.float32), 4, scale)
  want[4:8] = 0.0
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
  assert np.all(adv[4:8] == 0.0)
  # Within a non-constant group the advantages sum to 0 and (with std) have unit sample std.
  np.testing.assert_allclose(adv[:4].sum(), 0.0, atol=1e-5)
  if scale:
    np.testing.assert_allclose(adv[:4].std(ddof=1), 1.0, rtol=1e-4)


def test_group_advantages_degenerate_groups_are_zero_not_nan():
  assert np.all(np.asarray(grpo.group_advantages(jnp.ones(6), 3)) == 0)
  assert np.all(np.asarray(grpo.group_advantages(jnp.arange(4.0), 1)) == 0)   # G = 1
  with pytest.raises(ValueError, match="group_size"):
    grpo.group_advantages(jnp.ones(5), 2)


def test_loss_weights_make_micro_batches_add_up():
  lp, old, ref, adv, mask = (jnp.float32(x) for x in make_inputs())
  for agg in AGGS:
    full = grpo.grpo_loss(lp, old, ref, adv, mask, loss_agg=agg)[0]
    w = grpo.loss_weights(mask, agg)
    parts = 0.0
    for rows in (slice(0, 2), slice(2, 6)):
      terms = grpo.grpo_token_terms(lp[rows], old[rows], ref[rows], adv[rows], mask[rows])
      parts += grpo.weighted_sums(terms, mask[rows], w[rows], 0.04)[0]
    np.testing.assert_allclose(float(parts), float(full), rtol=1e-6, err_msg=agg)
  with pytest.raises(ValueError, match="loss_agg"):
    grpo.loss_weights(mask, "sum")


def test_sft_loss_is_masked_token_mean_nll():
  rng = np.random.default_rng(0)
  lp = -rng.uniform(0, 5, (3, 5))
  mask = rng.integers(0, 2, (3, 5))
  loss, m = sft_lib.sft_loss(jnp.float32(lp), jnp.int32(mask))
  np.testing.assert_allclose(float(loss), -(lp * mask).sum() / mask.sum(), rtol=1e-6)
  assert float(m["num_tokens"]) == mask.sum()


def test_chunked_head_logprobs_equal_full_logits():
  config = get_model_config("tiny_v3")
  variables = init_variables(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 11), 0, config.vocab_size)
  targets = logprobs_lib.next_token_targets(tokens)
  model = Transformer(config)

  @jax.jit
  def both(v):
    out = model.apply(v, tokens)
    full = logprobs_lib.logprobs_from_logits(out.logits, targets)
    chunked = logprobs_lib.head_logprobs(config, v["params"], out.hidden, targets, chunk_size=4)  # 4 does not divide 11
    return full, chunked, out.logits

  (lp, ent), (lp_c, ent_c), logits = both(variables)
  logits = np.asarray(logits, np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
  want = np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(lp), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(lp_c), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ent_c), -(np.exp(logp) * logp).sum(-1), atol=1e-4)
  np.testing.assert_allclose(np.asarray(ent), np.asarray(ent_c), atol=1e-5)

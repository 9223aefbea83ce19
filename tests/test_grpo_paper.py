"""The GRPO step as the paper runs it, against a float64 reference loop of the algorithm.

The reference (`reference_updates`) is written from R1 eq. 1-3 and the R1-Zero schedule, sharing
no code with r1.grpo beyond the mini-batch order: per update it takes the model's full float32
logits for the update's rows, forms log_softmax(logits / T) and every term of the loss and of
its gradient with respect to the logits in float64 (ratio against pi_old = the training forward
at the rollout's parameters, the clip, k3 KL, truncated importance weights, per-mini-batch
seq-mean-token-mean weights), pulls that gradient back through the model (jax.vjp) and takes an
SGD step on float64 parameters. The step under test is the fused jitted update with plain SGD.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1 import grpo
from r1 import optim
from r1 import train_state
from r1.model import Transformer, get_model_config, init_variables
from tests import test_train_step as train_step_test

CONFIG = get_model_config("tiny_v3", num_hidden_layers=2)
B, T, G = 8, 12, 4
LR = 0.5


def make_batch(seed=0):
  """test_train_step's layout (left-padded prompts, completions ending early) as numpy, with
  per-sample rewards in two groups of G = 4 instead of advantages."""
  batch = {k: np.asarray(v) for k, v in train_step_test.make_batch(seed, B, T).items() if k != "advantages"}
  batch["rewards"] = np.asarray([1, 0, 0, 1, 1, 0, 1, 1], np.float32)
  return batch


@jax.jit
def _logits(params, moe_bias, tokens, positions, segment_ids):
  return Transformer(CONFIG).apply({"params": params, "moe_bias": moe_bias}, tokens, positions, segment_ids).logits


def np_log_softmax(z):
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_targets(tokens):
  return np.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def np_logprobs(params, moe_bias, batch, temperature, rows=None):
  """float64 log_softmax(logits / T) at the next tokens, [len(rows), T], and the log-softmax itself."""
  rows = np.arange(B) if rows is None else rows
  args = [jnp.asarray(batch[k][rows]) for k in ("tokens", "positions", "segment_ids")]
  z = np.asarray(_logits(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params), moe_bias, *args), np.float64)
  logp = np_log_softmax(z / temperature)
  return np.take_along_axis(logp, np_targets(batch["tokens"][rows])[..., None], -1)[..., 0], logp


def np_group_advantages(rewards, g):
  r = rewards.astype(np.float64).reshape(-1, g)
  std = r.std(axis=1, ddof=1, keepdims=True)
  adv = np.where(std > 0, (r - r.mean(axis=1, keepdims=True)) / (std + 1e-6), 0.0)
  return adv.reshape(-1)


def reference_updates(params, ref_params, moe_bias, batch, *, temperature, num_iterations, num_mini_batches,
                      clip_eps, kl_coef, shuffle_seed=0, tis_cap=0.0, sampler_logprobs=None):
  """The algorithm in float64: returns (final params, per-update records of loss and ratio stats)."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  adv = np_group_advantages(batch["rewards"], G)
  old, _ = np_logprobs(params, moe_bias, batch, temperature)          # pi_old: the training forward
  ref, _ = np_logprobs(ref_params, moe_bias, batch, temperature)
  order = np.asarray(grpo.mini_batch_order(shuffle_seed, 0, num_iterations, num_mini_batches, B))
  if num_mini_batches == 1:
    order = np.broadcast_to(np.arange(B), (num_iterations, B))       # one mini-batch: the batch as is
  records = []
  for rows in order:
    lp, logp = np_logprobs(params, moe_bias, batch, temperature, rows)
    mask = batch["completion_mask"][rows].astype(np.float64)
    a = adv[rows][:, None]
    ratio = np.exp(lp - old[rows])
    clipped = ((ratio > 1 + clip_eps) & (a > 0)) | ((ratio < 1 - clip_eps) & (a < 0))
    surrogate = np.minimum(ratio * a, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref[rows] - lp
    kl = np.exp(d) - d - 1
    is_weight = np.ones_like(lp)
    if tis_cap:
      is_weight = np.minimum(np.exp(old[rows] - sampler_logprobs[rows]), tis_cap)
    per_token = -surrogate * is_weight + kl_coef * kl
    w = 1.0 / (len(rows) * np.maximum(mask.sum(1), 1))[:, None]           # seq-mean-token-mean
    loss = (w * mask * per_token).sum()
    # d per_token / d lp, then d lp / d logits = (onehot(target) - softmax(logits / T)) / T.
    dlp = -a * ratio * (~clipped) * is_weight + kl_coef * (1 - np.exp(d))
    g_lp = w * mask * dlp
    onehot = np.eye(CONFIG.vocab_size)[np_targets(batch["tokens"][rows])]
    g_logits = g_lp[..., None] * (onehot - np.exp(logp)) / temperature
    args = [jnp.asarray(batch[k][rows]) for k in ("tokens", "positions", "segment_ids")]
    p32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    _, vjp = jax.vjp(lambda p: _logits(p, moe_bias, *args), p32)
    (grads,) = vjp(jnp.asarray(g_logits, jnp.float32))
    params = jax.tree.map(lambda p, g_: p - LR * np.asarray(g_, np.float64), params, grads)
    on = mask > 0
    records.append({"loss": loss, "ratio_min": ratio[on].min(), "ratio_max": ratio[on].max(),
                    "clip": clipped[on].mean(), "tis_truncated": (is_weight >= tis_cap)[on].mean() if tis_cap else 0})
  return params, records


@pytest.fixture(scope="module")
def variables():
  return init_variables(CONFIG, jax.random.key(0))


def sgd_step(**kw):
  # Plain SGD, constant rate, no clipping: the reference's update rule.
  return grpo.make_grpo_step(CONFIG, optax.sgd(LR), optax.constant_schedule(LR), group_size=G, ref_update_every=0,
                             bias_update_rate=0.0, **kw)


def run_step(variables, step, batch):
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), optax.sgd(LR), with_reference=True)
  ref_params = jax.tree.map(lambda x: x * 1.3, variables["params"])   # a reference the policy is not
  state = state.replace(ref_params=jax.tree.map(jnp.copy, ref_params))
  state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  return state, jax.device_get(metrics), ref_params


def assert_params_close(got, want):
  for g_, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g_, np.float64), w, rtol=2e-4, atol=2e-6)


def test_temperature_loss_and_gradient_equal_float64_reference(variables):
  """At T = 0.7 every logprob of the update is of softmax(logits / 0.7): the loss, and through
  one SGD step the gradient, equal the reference's (the step used to train on T = 1)."""
  batch = make_batch(seed=1)
  state, m, ref_params = run_step(variables, sgd_step(temperature=0.7, kl_coef=0.04, clip_eps=0.2), batch)
  want, records = reference_updates(variables["params"], ref_params, variables["moe_bias"], batch, temperature=0.7,
                                    num_iterations=1, num_mini_batches=1, clip_eps=0.2, kl_coef=0.04)
  np.testing.assert_allclose(m["loss"], records[0]["loss"], rtol=1e-5)
  assert m["ratio/min"] == 1.0 and m["ratio/max"] == 1.0        # pi_old is this very forward
  assert_params_close(state.params, want)
  # The same step at T = 1 is measurably different: the temperature is not a no-op here.
  at_one, _ = reference_updates(variables["params"], ref_params, variables["moe_bias"], batch, temperature=1.0,
                                num_iterations=1, num_mini_batches=1, clip_eps=0.2, kl_coef=0.04)
  def moved(p):
    return np.asarray(p["embed_tokens"], np.float64) - np.asarray(variables["params"]["embed_tokens"])
  assert np.abs(moved(at_one) - moved(want)).max() > 10 * np.abs(moved(state.params) - moved(want)).max()


def test_mini_batches_are_sequential_updates_equal_to_float64_reference(variables):
  """M = 4 mini-batches of one rollout: four SGD updates in the shuffled order, each against
  pi_old of the rollout. The first is on-policy (ratio 1); from the second the ratio moves and
  the clip (eps 0.05, built to trigger) acts. Today's micro-batching made one update of all rows."""
  batch = make_batch(seed=2)
  kw = dict(temperature=1.0, kl_coef=0.04, clip_eps=0.05)
  state, m, ref_params = run_step(variables, sgd_step(num_mini_batches=4, shuffle_seed=0, **kw), batch)
  want, records = reference_updates(variables["params"], ref_params, variables["moe_bias"], batch,
                                    num_iterations=1, num_mini_batches=4, **kw)
  assert_params_close(state.params, want)
  np.testing.assert_allclose(m["loss"], np.mean([r["loss"] for r in records]), rtol=1e-4)
  # The first update is on-policy: 1 up to float32 rounding (its forward sees 2 rows, pi_old's 8).
  assert max(records[0]["ratio_max"] - 1, 1 - records[0]["ratio_min"]) < 1e-6
  assert all(max(r["ratio_max"] - 1, 1 - r["ratio_min"]) > 0.05 for r in records[1:]), records
  assert m["ratio/max"] == pytest.approx(max(r["ratio_max"] for r in records), rel=1e-4)
  assert m["ratio/min"] == pytest.approx(min(r["ratio_min"] for r in records), rel=1e-4)
  clip = np.mean([r["clip"] for r in records])
  assert clip > 0 and m["clip_ratio/region_mean"] == pytest.approx(clip, rel=1e-4)
  assert m["updates"] == 4 and int(state.step) == 4


def test_mu_iterations_of_mini_batches_with_mismatch_and_tis(variables):
  """mu = 2 passes x M = 2 mini-batches at T = 0.7, given sampler logprobs that disagree with the
  training forward: pi_old is the training forward (so the first update is on-policy whatever the
  sampler said), truncated importance weights min(pi_old / pi_sampler, 1.2) scale the policy
  term, and the mismatch is reported."""
  batch = make_batch(seed=3)
  old, _ = np_logprobs(variables["params"], variables["moe_bias"], batch, 0.7)
  noise = np.random.default_rng(0).normal(0, 0.3, old.shape)
  sampler = (old + noise) * batch["completion_mask"]
  kw = dict(temperature=0.7, kl_coef=0.04, clip_eps=0.2)
  step = sgd_step(num_iterations=2, num_mini_batches=2, shuffle_seed=5, tis_cap=1.2, **kw)
  state, m, ref_params = run_step(variables, step, dict(batch, sampler_logprobs=sampler.astype(np.float32)))
  want, records = reference_updates(variables["params"], ref_params, variables["moe_bias"], batch,
                                    num_iterations=2, num_mini_batches=2, shuffle_seed=5, tis_cap=1.2,
                                    sampler_logprobs=sampler, **kw)
  assert_params_close(state.params, want)
  np.testing.assert_allclose(m["loss"], np.mean([r["loss"] for r in records]), rtol=1e-4)
  on = batch["completion_mask"] > 0
  np.testing.assert_allclose(m["mismatch/abs_mean"], np.abs(noise[on]).mean(), rtol=1e-4)
  np.testing.assert_allclose(m["mismatch/abs_max"], np.abs(noise[on]).max(), rtol=1e-4)
  np.testing.assert_allclose(m["mismatch/kl"], (np.exp(-noise[on]) + noise[on] - 1).mean(), rtol=1e-3)
  truncated = np.mean([r["tis_truncated"] for r in records])   # the mean over updates, as every metric
  assert 0 < truncated < 1 and m["tis/truncated"] == pytest.approx(truncated, rel=1e-4)


def test_the_step_computes_the_group_advantages_from_rewards(variables):
  """One program from rewards: the same update as the group advantages passed in, and an
  `advantages` input for algorithms that bring their own."""
  batch = make_batch(seed=4)
  kw = dict(temperature=1.0, kl_coef=0.04, clip_eps=0.2)
  from_rewards, m1, _ = run_step(variables, sgd_step(**kw), batch)
  given = {k: v for k, v in batch.items() if k != "rewards"}
  given["advantages"] = np.asarray(grpo.group_advantages(jnp.asarray(batch["rewards"]), G))
  from_advantages, m2, _ = run_step(variables, sgd_step(**kw), given)
  for a, b in zip(jax.tree.leaves(from_rewards.params), jax.tree.leaves(from_advantages.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(m1["advantages/std"], np.std(np_group_advantages(batch["rewards"], G)), rtol=1e-5)
  with pytest.raises(ValueError, match="group_size"):
    no_groups = grpo.make_grpo_step(CONFIG, optax.sgd(LR), optax.constant_schedule(LR), ref_update_every=0)
    run_step(variables, no_groups, batch)


def test_schedule_and_reference_refresh_count_rollout_steps(variables):
  """With mu x M = 4 updates a rollout, warmup and decay count rollouts (the rate is held over a
  rollout's updates) and ref_update_every=2 refreshes after every second rollout, not every
  second update."""
  opt, sched = optim.make_optimizer(1e-3, warmup_steps=2, decay_steps=6, schedule="cosine", updates_per_step=4)
  per_rollout = optim.make_optimizer(1e-3, warmup_steps=2, decay_steps=6, schedule="cosine")[1]
  assert [float(sched(u)) for u in range(12)] == [float(per_rollout(u // 4)) for u in range(12)]
  assert float(sched(6 * 4 - 1)) == pytest.approx(float(per_rollout(5)))   # the decay spans all 6 rollouts
  step = grpo.make_grpo_step(CONFIG, opt, sched, group_size=G, kl_coef=0.04, num_iterations=2, num_mini_batches=2,
                             ref_update_every=2, bias_update_rate=0.0)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=True)
  initial = np.asarray(variables["params"]["embed_tokens"])
  state, m = step(state, {k: jnp.asarray(v) for k, v in make_batch(seed=5).items()})
  assert int(state.step) == 4 and float(m["learning_rate"]) == pytest.approx(1e-3 / 2)   # rollout 0 of warmup
  np.testing.assert_array_equal(np.asarray(state.ref_params["embed_tokens"]), initial)  # 1 rollout: frozen
  state, m = step(state, {k: jnp.asarray(v) for k, v in make_batch(seed=6).items()})
  assert float(m["learning_rate"]) == pytest.approx(1e-3)
  np.testing.assert_array_equal(np.asarray(state.ref_params["embed_tokens"]), np.asarray(state.params["embed_tokens"]))


def test_dr_grpo_normaliser_is_the_generation_budget_not_the_padded_length():
  """The same completions behind a 4- or a 12-token prompt bucket: Dr. GRPO's 1 / (B * L) with L
  the generation budget gives the same loss (1 / (B * T) moved it with the bucket)."""
  rng = np.random.default_rng(0)
  n = 6
  lp, old, ref = (rng.uniform(-3, -0.1, (4, n)) for _ in range(3))
  adv = rng.normal(0, 1, 4)
  mask = np.ones((4, n), np.float32)
  mask[1, 4:] = 0

  def loss_with_prompt(p):
    def pad(x):
      return jnp.asarray(np.pad(x, ((0, 0), (p, 0))), jnp.float32)
    return float(grpo.grpo_loss(pad(lp), pad(old), pad(ref), jnp.asarray(adv, jnp.float32), pad(mask), kl_coef=0.04,
                                loss_agg="seq-mean-token-sum-norm", max_completion_length=n)[0])

  assert loss_with_prompt(4) == pytest.approx(loss_with_prompt(12), rel=1e-6)
  w = grpo.loss_weights(jnp.asarray(np.pad(mask, ((0, 0), (12, 0)))), "seq-mean-token-sum-norm",
                        max_completion_length=n)
  np.testing.assert_allclose(np.asarray(w), 1 / (4 * n), rtol=1e-6)


def test_k3_kl_past_the_clamp_still_pulls_a_collapsed_token_back():
  """A token the reference likes (log pi_ref / pi = 30) keeps a KL gradient: the tangent at 20,
  finite and of the right sign (min(d, 20) gave it exactly zero)."""
  d = jnp.asarray([0.5, 19.0, 30.0], jnp.float32)
  kl = grpo.k3_kl(d)
  np.testing.assert_allclose(np.asarray(kl)[:2], np.exp(np.asarray(d[:2], np.float64)) - np.asarray(d[:2]) - 1,
                             rtol=1e-6)
  assert np.isfinite(np.asarray(kl)).all()
  grad = jax.grad(lambda x: grpo.k3_kl(x).sum())(d)
  np.testing.assert_allclose(float(grad[2]), np.exp(20.0) - 1, rtol=1e-5)
  # Through the loss: the policy's logprob of that token gets pushed up (a negative gradient).
  lp = jnp.asarray([[-31.0, -1.0]], jnp.float32)
  ref = jnp.asarray([[-1.0, -1.0]], jnp.float32)
  g = jax.grad(lambda x: grpo.grpo_loss(x, jax.lax.stop_gradient(x), ref, jnp.zeros(1), jnp.ones((1, 2)),
                                        kl_coef=0.001)[0])(lp)
  assert float(g[0, 0]) < -1e3


def test_reference_keeps_the_balancing_bias_it_was_copied_with(variables):
  """The policy's balancing bias moves every update; the reference is routed with its own copy,
  taken with its parameters at each refresh, so pi_ref is fixed between refreshes."""
  opt, sched = optim.make_optimizer(1e-3, decay_steps=None)
  step = grpo.make_grpo_step(CONFIG, opt, sched, group_size=G, kl_coef=0.04, ref_update_every=2, bias_update_rate=0.05)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=True)
  def bias(tree):
    return np.asarray(tree["layers_1"]["mlp"]["e_score_correction_bias"])
  batch = {k: jnp.asarray(v) for k, v in make_batch(seed=7).items()}
  state, _ = step(state, batch)
  assert np.abs(bias(state.moe_bias)).max() > 0                       # the policy's bias moved
  np.testing.assert_array_equal(bias(state.ref_moe_bias), bias(variables["moe_bias"]))   # the reference's did not
  # The KL term is computed with the reference's bias: with the policy's own parameters as the
  # reference, a reference bias that routes differently gives a KL, the policy's bias none.
  same = state.replace(ref_params=jax.tree.map(jnp.copy, state.params),
                       ref_moe_bias=jax.tree.map(jnp.copy, state.moe_bias))
  _, m_same = step(jax.tree.map(jnp.copy, same), batch)
  skewed = jax.tree.map(lambda b: b.at[0].set(100.0), state.moe_bias)   # every token to expert 0
  _, m_skewed = step(jax.tree.map(jnp.copy, same.replace(ref_moe_bias=skewed)), batch)
  assert float(m_same["kl"]) < 1e-6 < float(m_skewed["kl"])
  # A refresh copies both.
  state, _ = step(state, batch)
  np.testing.assert_array_equal(bias(state.ref_moe_bias), bias(state.moe_bias))

"""The fused GRPO / SFT train step on the tiny DeepSeek-V3: loss vs the math on full logits,
micro-batching, mu iterations, skipped non-finite steps, reference refresh, balancing bias, a
bandit that learns, and SFT with the MTP term."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1 import grpo
from r1 import optim
from r1 import sft as sft_lib
from r1 import train_state
from r1.model import Transformer, get_model_config, init_variables

# Two layers (one dense, one MoE) keep every feature and cut compile time by a third.
CONFIG = get_model_config("tiny_v3", num_hidden_layers=2)
B, T, G = 8, 12, 4


def make_batch(seed=0, b=B, t=T):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CONFIG.vocab_size, (b, t)).astype(np.int32)
  prompt = rng.integers(2, 5, b)          # left-padded prompts of different lengths
  pad = 5 - prompt
  seg = (np.arange(t)[None] >= pad[:, None]).astype(np.int32)
  tokens = tokens * seg
  positions = np.maximum(np.arange(t)[None] - pad[:, None], 0).astype(np.int32)
  end = t - rng.integers(0, 3, b)         # completions end early in some rows (right padding)
  seg = seg * (np.arange(t)[None] < end[:, None])
  # Position i scores token i + 1: completion tokens are 5..end-1, so the mask is 4..end-2.
  mask = ((np.arange(t)[None] >= 4) & (np.arange(t)[None] < end[:, None] - 1)).astype(np.float32)
  rewards = rng.integers(0, 2, b).astype(np.float32)
  rewards[:G] = [1, 0, 1, 0]
  rewards[G:2 * G] = 1.0                  # a zero-std group
  return {"tokens": jnp.asarray(tokens), "positions": jnp.asarray(positions), "segment_ids": jnp.asarray(seg),
          "completion_mask": jnp.asarray(mask), "advantages": grpo.group_advantages(jnp.asarray(rewards), G)}


def copy_tree(tree):
  return jax.tree.map(lambda x: np.array(x), tree)


@jax.jit
def _forward(variables, batch):
  return Transformer(CONFIG).apply(variables, batch["tokens"], batch["positions"], batch["segment_ids"])


def full_logprobs(variables, batch):
  """Independent path: the model's full [B, T, V] logits and a float64 log-softmax."""
  out = _forward(variables, batch)
  logits = np.asarray(out.logits, np.float64)
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  targets = np.pad(np.asarray(batch["tokens"])[:, 1:], ((0, 0), (0, 1)))
  return np.take_along_axis(logp, targets[..., None], -1)[..., 0], np.asarray(out.expert_load)


OPT, SCHED = optim.make_optimizer(1e-3, warmup_steps=2, decay_steps=20)


@pytest.fixture(scope="module")
def variables():
  return init_variables(CONFIG, jax.random.key(0))


@pytest.fixture(scope="module")
def grpo_step():
  # One compiled step shared by several tests: KL on, 2 micro-batches, chunked head.
  return grpo.make_grpo_step(CONFIG, OPT, SCHED, kl_coef=0.04, num_micro_batches=2, logits_chunk_size=5,
                           ref_update_every=2, bias_update_rate=0.01)


def fresh_state(variables):
  return train_state.init_train_state(jax.tree.map(jnp.copy, variables), OPT, with_reference=True)


def test_step_loss_matches_math_on_full_logits_and_ratio_is_one(variables, grpo_step):
  batch = make_batch()
  lp, _ = full_logprobs(variables, batch)
  # Reference = policy at step 0, so KL is 0; then move the reference to make the KL term real.
  state = fresh_state(variables)
  state = state.replace(ref_params=jax.tree.map(lambda x: x * 1.3, state.ref_params))
  ref_vars = {"params": jax.tree.map(lambda x: x * 1.3, variables["params"]), "moe_bias": variables["moe_bias"]}
  ref_lp, _ = full_logprobs(ref_vars, batch)
  state, m = grpo_step(state, batch)
  want, _ = grpo.grpo_loss(jnp.asarray(lp, jnp.float32), jnp.asarray(lp, jnp.float32),
                           jnp.asarray(ref_lp, jnp.float32), batch["advantages"], batch["completion_mask"],
                           kl_coef=0.04)
  np.testing.assert_allclose(float(m["loss"]), float(want), rtol=1e-4, atol=1e-6)
  assert float(m["kl"]) > 1e-4
  # mu = 1 without old logprobs: the ratio is exactly 1 and the clip never fires.
  assert float(m["ratio/min"]) == 1.0 and float(m["ratio/max"]) == 1.0
  assert float(m["clip_ratio/region_mean"]) == 0.0
  assert float(m["num_tokens"]) == float(batch["completion_mask"].sum())
  assert int(state.step) == 1 and int(state.skipped_steps) == 0 and float(m["grad_norm"]) > 0
  assert float(m["learning_rate"]) == pytest.approx(1e-3 / 2)   # first of 2 warmup updates
  assert 0 < float(m["entropy"]) <= np.log(CONFIG.vocab_size) + 1e-4


def test_balancing_bias_follows_the_sign_rule(variables, grpo_step):
  batch = make_batch(seed=1)
  _, load = full_logprobs(variables, batch)   # int32[L_moe, E] over the whole batch
  state = fresh_state(variables)
  state, m = grpo_step(state, batch)
  assert load.shape == (1, CONFIG.n_routed_experts)
  for row, name in enumerate(["layers_1"]):
    got = np.asarray(state.moe_bias[name]["mlp"]["e_score_correction_bias"])
    want = 0.01 * np.sign(load[row].mean() - load[row])
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert float(m[f"expert_load/{name}/max"]) == pytest.approx(load[row].max() / load[row].mean(), rel=1e-5)
  # rate 0 turns it off.
  same = optim.update_moe_bias(variables["moe_bias"], jnp.asarray(load), CONFIG, 0.0)
  assert same is variables["moe_bias"]


def test_non_finite_step_is_skipped(variables, grpo_step):
  batch = make_batch()
  batch["advantages"] = batch["advantages"].at[0].set(jnp.nan)
  state = fresh_state(variables)
  before = copy_tree((state.params, state.opt_state, state.moe_bias, state.step))
  state, m = grpo_step(state, batch)
  after = copy_tree((state.params, state.opt_state, state.moe_bias, state.step))
  jax.tree.map(np.testing.assert_array_equal, after, before)
  assert int(state.skipped_steps) == 1 and float(m["skipped"]) == 1.0
  assert not np.isfinite(float(m["loss"]))
  # The next finite batch trains normally.
  state, m = grpo_step(state, make_batch())
  assert int(state.step) == 1 and int(state.skipped_steps) == 1 and float(m["skipped"]) == 0.0
  assert not np.array_equal(np.asarray(state.params["embed_tokens"]), before[0]["embed_tokens"])


def test_reference_refreshes_every_n_steps_into_its_own_buffers(variables, grpo_step):
  state = fresh_state(variables)
  initial = copy_tree(state.params)
  state, _ = grpo_step(state, make_batch(seed=2))
  leaf = lambda p: p["embed_tokens"]
  np.testing.assert_array_equal(np.asarray(leaf(state.ref_params)), leaf(initial))   # step 1: frozen
  assert not np.array_equal(np.asarray(leaf(state.params)), leaf(initial))
  state, _ = grpo_step(state, make_batch(seed=3))
  jax.tree.map(np.testing.assert_array_equal, copy_tree(state.ref_params), copy_tree(state.params))  # step 2
  for p, r in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ref_params)):
    assert p.unsafe_buffer_pointer() != r.unsafe_buffer_pointer()
  state, _ = grpo_step(state, make_batch(seed=4))   # both still donate cleanly
  assert int(state.step) == 3


def test_overlapped_reference_logprobs_give_the_same_step(variables, grpo_step):
  # The stage dispatches the reference forward on its own before scoring rewards: passing its
  # output as batch["ref_logprobs"] must be the step that computes it inside.
  batch = make_batch(seed=6)
  state = fresh_state(variables)
  state, _ = grpo_step(state, make_batch(seed=7))   # params != reference from here
  reference_fn = grpo.make_reference_logprobs_fn(CONFIG, num_micro_batches=2, logits_chunk_size=5)
  ref_lp = reference_fn(state.ref_params, state.ref_moe_bias, batch)
  lp, _ = full_logprobs({"params": state.ref_params, "moe_bias": state.ref_moe_bias}, batch)
  mask = np.asarray(batch["segment_ids"])[:, 1:].astype(bool) & np.asarray(batch["segment_ids"])[:, :-1].astype(bool)
  np.testing.assert_allclose(np.asarray(ref_lp)[:, :-1][mask], lp[:, :-1][mask], atol=2e-5)
  inside, m_inside = grpo_step(jax.tree.map(jnp.copy, state), batch)
  outside, m_outside = grpo_step(jax.tree.map(jnp.copy, state), dict(batch, ref_logprobs=ref_lp))
  assert float(m_outside["kl"]) > 0
  for key in ("loss", "kl", "grad_norm"):
    np.testing.assert_allclose(float(m_outside[key]), float(m_inside[key]), rtol=1e-6, atol=1e-9)
  for a, b in zip(jax.tree.leaves(outside.params), jax.tree.leaves(inside.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_micro_batches_give_the_same_gradients(variables):
  batch = make_batch(seed=5)
  kw = dict(kl_coef=0.0, loss_agg="token-mean")
  one = jax.jit(grpo.make_grpo_grad_fn(CONFIG, **kw))
  four = jax.jit(grpo.make_grpo_grad_fn(CONFIG, num_micro_batches=4, logits_chunk_size=4, **kw))
  l1, g1, s1, lp1, load1 = one(variables["params"], variables["moe_bias"], batch)
  l4, g4, s4, lp4, load4 = four(variables["params"], variables["moe_bias"], batch)
  np.testing.assert_allclose(float(l4), float(l1), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(load4), np.asarray(load1))
  np.testing.assert_allclose(np.asarray(lp4), np.asarray(lp1), atol=1e-5)   # rows back in order
  for a, b in zip(jax.tree.leaves(g4), jax.tree.leaves(g1)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_mu_iterations_reuse_the_rollout_logprobs(variables):
  """mu = 3 in one call == three mu = 1 calls that are given the first policy's logprobs as old."""
  batch = make_batch(seed=6)
  kw = dict(kl_coef=0.0, clip_eps=0.05, ref_update_every=0, bias_update_rate=0.0)
  # Plain SGD: Adam's first update is ~sign(g), which flips on near-zero gradients.
  opt, sched = optax.sgd(1.0), optax.constant_schedule(1.0)
  fused = grpo.make_grpo_step(CONFIG, opt, sched, num_iterations=3, **kw)
  single = grpo.make_grpo_step(CONFIG, opt, sched, num_iterations=1, **kw)
  lp, _ = full_logprobs(variables, batch)
  s1, m = fused(train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=False), batch)
  s2 = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=False)
  with_old = dict(batch, old_logprobs=jnp.asarray(lp, jnp.float32))
  for _ in range(3):
    s2, m2 = single(s2, with_old)
  assert int(s1.step) == 3
  assert float(m["ratio/max"]) > 1.05 or float(m["ratio/min"]) < 0.95   # later iterations are off-policy
  assert float(m2["clip_ratio/region_mean"]) > 0
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_bandit_probability_of_the_rewarded_action_rises_monotonically(variables):
  """One prompt token, one action token: action 7 earns 1, actions 3, 11, 19 earn 0."""
  actions = np.array([7, 3, 11, 19, 7, 3, 11, 19], np.int32)
  tokens = np.stack([np.full(8, 1, np.int32), actions], 1)
  batch = {"tokens": jnp.asarray(tokens), "positions": jnp.broadcast_to(jnp.arange(2, dtype=jnp.int32), (8, 2)),
           "segment_ids": jnp.ones((8, 2), jnp.int32),
           "completion_mask": jnp.asarray([[1.0, 0.0]] * 8),   # position 0 scores the action
           "advantages": grpo.group_advantages(jnp.asarray((actions == 7).astype(np.float32)), 8)}
  opt, sched = optim.make_optimizer(1e-2, decay_steps=None)
  step = grpo.make_grpo_step(CONFIG, opt, sched, kl_coef=0.0, ref_update_every=0)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=False)
  prob = jax.jit(lambda p, b: jax.nn.softmax(
      Transformer(CONFIG).apply({"params": p, "moe_bias": b}, jnp.ones((1, 1), jnp.int32)).logits[0, 0])[7])
  probs = [float(prob(state.params, state.moe_bias))]
  for _ in range(5):
    state, _ = step(state, batch)
    probs.append(float(prob(state.params, state.moe_bias)))
  assert all(b > a for a, b in zip(probs, probs[1:])), probs
  assert probs[-1] > 5 * probs[0], probs


def test_sft_step_with_mtp_matches_independent_losses():
  config = get_model_config("tiny_v3_mtp", num_hidden_layers=2)
  variables = init_variables(config, jax.random.key(1))
  rng = np.random.default_rng(0)
  b, t = 4, 10
  inputs = rng.integers(1, config.vocab_size, (b, t)).astype(np.int32)
  seg = np.ones((b, t), np.int32)
  seg[:, 6:] = 2            # two packed examples per row
  seg[0, 8:] = 0            # padding
  positions = np.concatenate([np.arange(6), np.arange(4)])[None].repeat(b, 0).astype(np.int32)
  targets = np.roll(inputs, -1, 1)
  loss_mask = ((np.arange(t)[None] % 6 >= 2) & (seg > 0)).astype(np.int32)
  loss_mask[:, 5] = 0       # the last target of a segment is not a response token here
  loss_mask[:, -1] = 0
  batch = {k: jnp.asarray(v) for k, v in dict(inputs=inputs, targets=targets, loss_mask=loss_mask,
                                              segment_ids=seg, positions=positions).items()}
  opt, sched = optim.make_optimizer(1e-3, decay_steps=None)
  step = sft_lib.make_sft_step(config, opt, sched, mtp_weight=0.3, num_micro_batches=2, logits_chunk_size=4)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, variables), opt, with_reference=False)
  state, m = step(state, batch)

  out = jax.jit(lambda v: Transformer(config).apply(v, batch["inputs"], batch["positions"], batch["segment_ids"],
                                                    return_mtp=True))(variables)
  logsm = lambda x: np.asarray(jax.nn.log_softmax(jnp.asarray(x, jnp.float32)), np.float64)
  lp = np.take_along_axis(logsm(out.logits), targets[..., None], -1)[..., 0]
  nll = -(lp * loss_mask).sum() / loss_mask.sum()
  # MTP depth 1 at position i predicts inputs[i + 2] = targets[i + 1], in the same segment only.
  mlp = np.take_along_axis(logsm(out.mtp_logits[0])[:, :-1], targets[:, 1:, None], -1)[..., 0]
  mmask = loss_mask[:, 1:] * (seg[:, 1:] == seg[:, :-1]) * (seg[:, :-1] > 0)
  mtp_nll = -(mlp * mmask).sum() / mmask.sum()
  np.testing.assert_allclose(float(m["nll"]), nll, rtol=1e-5)
  np.testing.assert_allclose(float(m["mtp_nll"]), mtp_nll, rtol=1e-5)
  np.testing.assert_allclose(float(m["loss"]), nll + 0.3 * mtp_nll, rtol=1e-5)
  # The MTP block's bias moved too (its load counts are in expert_load), and params changed.
  assert np.any(np.asarray(state.moe_bias["mtp_0"]["block"]["mlp"]["e_score_correction_bias"]) != 0)
  assert int(state.step) == 1


def test_schedule_warms_up_from_above_zero_then_decays():
  _, schedule = optim.make_optimizer(1.0, warmup_steps=4, decay_steps=12)
  lr = [float(schedule(i)) for i in range(13)]
  np.testing.assert_allclose(lr[:5], [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)
  assert all(b < a for a, b in zip(lr[4:], lr[5:])) and lr[12] == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="schedule"):
    optim.make_optimizer(1.0, schedule="step")

"""The dense GQA students (Qwen2, Llama-3) beyond the HF fixtures: grouped attention against a
float64 numpy reference, llama3 RoPE against its formula, config checks, the sampler's GQA cache
against a teacher-forced forward, and a GRPO step on a dense policy."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1 import grpo, optim, sampling
from r1 import train_state
from r1.model import ModelConfig, RopeScaling, Transformer, get_model_config, init_variables, layers, param_count
from r1.model.gqa import GQA


def _numpy_rope(x, positions, inv_freq):
  """Half-split rotation of x [T, heads, d] (transformers' rotate_half), float64."""
  angles = positions[:, None].astype(np.float64) * inv_freq[None].astype(np.float64)  # [T, d/2]
  cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _numpy_gqa(params, x, config):
  """One GQA layer for one sequence x [T, D] in float64, with K/V heads repeated per query head."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  t = x.shape[0]
  q = np.einsum("td,dhk->thk", x, p["q_proj"])
  k = np.einsum("td,dhk->thk", x, p["k_proj"])
  v = np.einsum("td,dhk->thk", x, p["v_proj"])
  if config.attention_bias:
    q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
  inv_freq = layers.rope_inv_freq(config.gqa_head_dim, config.rope_theta, config.rope_scaling)
  q, k = _numpy_rope(q, np.arange(t), inv_freq), _numpy_rope(k, np.arange(t), inv_freq)
  group = config.num_attention_heads // config.kv_heads
  k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # query head h reads K/V head h // group
  scores = np.einsum("thk,shk->hts", q, k) / math.sqrt(config.gqa_head_dim)
  scores = np.where(np.tril(np.ones((t, t), bool))[None], scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("hts,shk->thk", probs, v)
  return np.einsum("thk,hkd->td", out, p["o_proj"])


@pytest.mark.parametrize("kv_heads,bias", [(2, True), (1, False), (4, True)])
def test_grouped_attention_matches_numpy(kv_heads, bias):
  config = get_model_config("tiny_qwen2", num_key_value_heads=kv_heads, attention_bias=bias, head_dim=12)
  t = 9
  x = jax.random.normal(jax.random.key(1), (1, t, config.hidden_size))
  module = GQA(config)
  positions = jnp.arange(t)[None]
  cos, sin = layers.rope_cos_sin(positions, config)
  mask = jnp.tril(jnp.ones((t, t), bool))[None]
  params = nn.unbox(module.init(jax.random.key(0), x, cos, sin, mask))["params"]
  # Non-zero biases, so that a missing bias term would show.
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape) if a.ndim == 2 else a,
                        params)
  got = module.apply({"params": params}, x, cos, sin, mask)
  want = _numpy_gqa(jax.device_get(params), np.asarray(x[0], np.float64), config)
  np.testing.assert_allclose(np.asarray(got[0]), want, rtol=2e-5, atol=2e-5)


def test_llama3_rope_scaling_follows_the_formula():
  scaling = RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192,
                        low_freq_factor=1.0, high_freq_factor=4.0)
  dim, theta = 128, 500000.0
  base = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
  got = layers.rope_inv_freq(dim, theta, scaling)
  wavelen = 2 * np.pi / base
  for i, (f, w) in enumerate(zip(base, wavelen)):
    if w < 8192 / 4:      # high frequencies: untouched
      want = f
    elif w > 8192 / 1:    # low frequencies: slowed by the factor
      want = f / 8
    else:                 # in between: a blend linear in 8192 / wavelength
      s = (8192 / w - 1) / (4 - 1)
      want = (1 - s) * f / 8 + s * f
    assert got[i] == pytest.approx(want, rel=1e-5), i
  # Both regimes and the blend occur for Llama-3.1's settings.
  assert (wavelen < 2048).any() and (wavelen > 8192).any() and ((wavelen >= 2048) & (wavelen <= 8192)).any()
  # llama3 leaves cos/sin and the softmax scale unscaled (YaRN's mscale is not applied).
  assert layers.rope_attention_factor(scaling) == 1.0
  assert layers.softmax_scale(get_model_config("llama3_1_8b")) == 128 ** -0.5


def test_dense_configs_are_checked():
  with pytest.raises(ValueError, match="dense model"):
    ModelConfig(architecture="qwen2", n_routed_experts=8)
  with pytest.raises(ValueError, match="not a multiple"):
    get_model_config("tiny_qwen2", num_key_value_heads=3)
  with pytest.raises(ValueError, match="architecture"):
    get_model_config("tiny_qwen2", architecture="gpt2")
  with pytest.raises(ValueError, match="rope_type"):
    RopeScaling(rope_type="dynamic")


def test_published_dense_param_counts():
  # Qwen2.5-Math-1.5B / R1-Distill-Qwen-1.5B: 1.78B with an untied head (1.54B tied + 0.23B head).
  assert param_count(get_model_config("qwen2_5_math_1_5b"))["total"] == 1_777_088_000
  # Llama-3.1-8B: "8.03B".
  assert param_count(get_model_config("llama3_1_8b"))["total"] == 8_030_261_248


@pytest.mark.parametrize("name", ["tiny_qwen2", "tiny_llama3"])
def test_sampler_logprobs_match_teacher_forced_forward(name):
  config = get_model_config(name, vocab_size=97)
  variables = init_variables(config, jax.random.key(0))
  variables = jax.tree.map(lambda a: a * 8 if a.ndim > 1 else a, variables)  # peaked, prompt-dependent logits
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(1, 97, n)) for n in (3, 11, 6)]
  g, n = 3, 7
  out = sampling.generate(config, variables, prompts, num_samples=g, max_new_tokens=n, temperature=1.0, seed=3)
  assert out.tokens.shape == (len(prompts) * g, n)
  assert len({tuple(np.asarray(out.tokens[r])) for r in range(g)}) > 1  # samples of one prompt differ
  forward = jax.jit(lambda v, x: Transformer(config).apply(v, x).logits)
  for row in range(len(prompts) * g):
    prompt = prompts[row // g]
    full = np.asarray(prompt + list(np.asarray(out.tokens[row])), np.int32)[None]
    logp = jax.nn.log_softmax(forward(variables, jnp.asarray(full))[0], axis=-1)
    want = [float(logp[len(prompt) - 1 + t, full[0, len(prompt) + t]]) for t in range(n)]
    np.testing.assert_allclose(np.asarray(out.logprobs[row]), want, atol=2e-5)
  # The cache holds 2 x K x head_dim per token per layer.
  assert sampling.cache_bytes_per_token(config) == 2 * 2 * 16 * 2 * 4


def test_dense_grpo_step_trains():
  config = get_model_config("tiny_qwen2", vocab_size=61)
  variables = init_variables(config, jax.random.key(0))
  assert "moe_bias" not in variables
  opt, sched = optim.make_optimizer(1e-2, warmup_steps=0, decay_steps=10)
  step = grpo.make_grpo_step(config, opt, sched, kl_coef=0.001, ref_update_every=0)
  state = train_state.init_train_state(variables, opt, with_reference=True)
  rng = np.random.default_rng(0)
  b, t = 8, 10
  tokens = rng.integers(1, 61, (b, t)).astype(np.int32)
  mask = (np.arange(t)[None] >= 4).astype(np.float32) * (np.arange(t)[None] < t - 1)
  rewards = jnp.asarray([1, 0, 0, 0, 1, 1, 0, 1], jnp.float32)
  batch = {"tokens": jnp.asarray(tokens), "positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
           "segment_ids": jnp.ones((b, t), jnp.int32), "completion_mask": jnp.asarray(np.repeat(mask, b, 0)),
           "advantages": grpo.group_advantages(rewards, 4)}
  before = jax.tree.map(np.asarray, state.params)
  state, m = step(state, batch)
  assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0 and int(state.skipped_steps) == 0
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, before))
  assert min(moved) > 0  # every parameter (biases included) gets a gradient

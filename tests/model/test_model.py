"""Model properties that the HF fixtures do not cover: parameter counts, MoE kernels and capacity,
packed-segment masking, MTP, routing against a numpy reference, rope/YaRN against the formulas."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1.model import Transformer, get_model_config, init_variables, param_count
from r1.model import layers, moe


def test_deepseek_v3_param_count_is_the_published_671b_37b():
  counts = param_count(get_model_config("deepseek_v3"))
  assert counts["total"] == 671_026_404_352            # "671B total"
  assert counts["active"] == 37_552_282_624            # "37B activated" (embedding and head included)
  assert round(counts["total"] / 1e9) == 671 and math.floor(counts["active"] / 1e9) == 37
  with_mtp = param_count(get_model_config("deepseek_v3", num_nextn_predict_layers=1))
  # The MTP module: one MoE block + eh_proj + 3 norms; it shares the embedding and head (14B with them).
  assert with_mtp["mtp"] == 11_610_067_968 and with_mtp["total"] == counts["total"]


def test_deepseek_v2_lite_param_count():
  counts = param_count(get_model_config("deepseek_v2_lite"))
  assert counts["total"] == 15_706_484_224                      # "15.7B"
  assert counts["active"] - counts["embedding"] // 2 == 2_451_435_008  # "2.4B" without the input embedding


def _numpy_route(logits, bias, c):
  """Straightforward per-token float64 reference of DeepSeek's routing."""
  logits = np.asarray(logits, np.float64)
  n, e = logits.shape
  if c.scoring_func == "sigmoid":
    scores = 1 / (1 + np.exp(-logits))
  else:
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
  weights, experts = [], []
  for i in range(n):
    choice = scores[i] + (bias if c.topk_method == "noaux_tc" else 0)
    allowed = np.ones(e, bool)
    if c.topk_method != "greedy" and c.n_group > 1:
      g = choice.reshape(c.n_group, -1)
      gs = np.sort(g, axis=1)[:, -2:].sum(1) if c.topk_method == "noaux_tc" else g.max(1)
      keep = np.argsort(-gs, kind="stable")[:c.topk_group]
      allowed = np.repeat(np.isin(np.arange(c.n_group), keep), e // c.n_group)
    pick = [j for j in np.argsort(-np.where(allowed, choice, -np.inf), kind="stable")][:c.num_experts_per_tok]
    w = scores[i, pick]
    if c.norm_topk_prob:
      w = w / (w.sum() + 1e-20)
    weights.append(w * c.routed_scaling_factor)
    experts.append(pick)
  return np.array(weights), np.array(experts)


@pytest.mark.parametrize("name", ["tiny_v3", "tiny_v2", "deepseek_v2_lite"])
def test_route_matches_numpy(name):
  c = get_model_config(name)
  if name == "tiny_v2":
    c = c.replace(topk_method="group_limited_greedy", n_group=4, topk_group=2)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, c.n_routed_experts)).astype(np.float32) * 2
  bias = rng.normal(size=c.n_routed_experts).astype(np.float32) * 0.3
  w, idx = moe.route(jnp.asarray(logits), jnp.asarray(bias), c)
  ref_w, ref_idx = _numpy_route(logits, bias, c)
  order = np.argsort(np.asarray(idx), axis=1)
  ref_order = np.argsort(ref_idx, axis=1)
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(idx), order, 1), np.take_along_axis(ref_idx, ref_order, 1))
  np.testing.assert_allclose(np.take_along_axis(np.asarray(w), order, 1), np.take_along_axis(ref_w, ref_order, 1),
                             rtol=1e-5)


def _moe_apply(config, x, mask, variables):
  return jax.jit(moe.MoE(config).apply)(variables, x, mask)


def _forward(config, variables, *args, **kwargs):
  """Jitted forward (eager op-by-op dispatch is ~10x slower than compiling these tiny models)."""
  return jax.jit(lambda v, *a: Transformer(config).apply(v, *a, **kwargs))(variables, *args)


def test_moe_kernels_agree_and_capacity_drops():
  c = get_model_config("tiny_v3")
  x = jax.random.normal(jax.random.key(0), (2, 16, c.hidden_size))
  mask = jnp.ones((2, 16), bool)
  variables = nn.unbox(moe.MoE(c).init(jax.random.key(1), x, mask))
  y_einsum, load = jax.jit(lambda v: _moe_apply(c, x, mask, v))(variables)
  y_ragged, load_r = jax.jit(lambda v: _moe_apply(c.replace(moe_impl="ragged"), x, mask, v))(variables)
  np.testing.assert_allclose(y_einsum, y_ragged, atol=1e-5)
  np.testing.assert_array_equal(load, load_r)
  assert int(load.sum()) == 2 * 16 * c.num_experts_per_tok
  # A capacity factor large enough to hold every assignment is dropless; a small one drops tokens.
  y_big, _ = _moe_apply(c.replace(capacity_factor=float(c.n_routed_experts)), x, mask, variables)
  np.testing.assert_allclose(y_big, y_einsum, atol=1e-6)
  y_small, _ = _moe_apply(c.replace(capacity_factor=0.25), x, mask, variables)
  assert moe.expert_capacity(32, c.replace(capacity_factor=0.25)) == 2
  assert np.abs(np.asarray(y_small - y_einsum)).max() > 1e-3
  # A bias that sends every token to expert 0 overflows the fast buffer: the fallback stays dropless.
  skewed = {**variables, "moe_bias": jax.tree.map(lambda b: b.at[0].set(100.0), variables["moe_bias"])}
  y_skew, load_skew = _moe_apply(c, x, mask, skewed)
  assert int(load_skew[0]) == 32 > moe.expert_capacity(32, c.replace(capacity_factor=moe.DROPLESS_FAST_CAPACITY_FACTOR))
  y_skew_ragged, _ = _moe_apply(c.replace(moe_impl="ragged"), x, mask, skewed)
  np.testing.assert_allclose(y_skew, y_skew_ragged, atol=1e-5)
  # Padding tokens are routed but not counted in the load.
  _, load_masked = _moe_apply(c, x, mask.at[0, :8].set(False), variables)
  assert int(load_masked.sum()) == 24 * c.num_experts_per_tok


def test_padding_takes_no_expert_capacity():
  """Eight identical tokens, the first four left padding: all pick the same K experts. Capacity
  4 per expert holds exactly the real tokens; padding ranked first under the stable sort and used
  to take all of it, dropping every real token's routed output."""
  c = get_model_config("tiny_v3")
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 1, c.hidden_size)), (1, 8, c.hidden_size))
  mask = jnp.asarray([[False] * 4 + [True] * 4])
  variables = nn.unbox(moe.MoE(c).init(jax.random.key(1), x, mask))
  capped = c.replace(capacity_factor=2.0)
  assert moe.expert_capacity(8, capped) == 4
  dropless, _ = _moe_apply(c, x, mask, variables)
  for impl in ("einsum", "ep"):   # "ep" without an expert mesh is the einsum kernel
    y, _ = _moe_apply(capped.replace(moe_impl=impl), x, mask, variables)
    np.testing.assert_allclose(np.asarray(y)[0, 4:], np.asarray(dropless)[0, 4:], atol=1e-6)
    assert np.abs(np.asarray(y)[0, :4]).max() > 0   # padding keeps its shared-expert output only


def test_packed_segments_equal_separate_sequences():
  """Two examples packed in one row (segment ids, restarting positions) = each run alone."""
  c = get_model_config("tiny_v3")
  v = init_variables(c, jax.random.key(0))
  a = jax.random.randint(jax.random.key(1), (1, 5), 1, c.vocab_size)
  b = jax.random.randint(jax.random.key(2), (1, 7), 1, c.vocab_size)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 4), jnp.int32)], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 7 + [0] * 4])
  positions = jnp.array([list(range(5)) + list(range(7)) + [0] * 4])
  out = _forward(c, v, packed, positions, segments).logits
  np.testing.assert_allclose(out[0, :5], _forward(c, v, a).logits[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 5:12], _forward(c, v, b).logits[0], atol=1e-5)
  assert np.isfinite(np.asarray(out)).all()


def test_mtp_logits_depend_on_the_next_token_only_causally():
  c = get_model_config("tiny_v3_mtp")
  v = init_variables(c, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 1, c.vocab_size)
  out = _forward(c, v, tokens, return_mtp=True)
  assert out.mtp_logits.shape == (1, 2, 9, c.vocab_size)
  assert out.expert_load.shape == (c.num_moe_layers + 1, c.n_routed_experts)
  changed = _forward(c, v, tokens.at[:, 5].set((tokens[:, 5] + 1) % c.vocab_size), return_mtp=True)
  diff = np.abs(np.asarray(changed.mtp_logits - out.mtp_logits)).max(axis=(0, 1, 3))
  # Depth 1 at position i reads tokens <= i + 1: positions < 4 are untouched, position 4 changes.
  assert (diff[:4] == 0).all() and diff[4] > 1e-4
  np.testing.assert_allclose(_forward(c, v, tokens).logits, out.logits, atol=1e-6)


def test_yarn_frequencies_and_scale_follow_the_formulas():
  c = get_model_config("deepseek_v3")
  inv = layers.rope_inv_freq(64, 10000.0, c.rope_scaling)
  base = 1.0 / 10000.0 ** (np.arange(0, 64, 2) / 64)
  # Highest frequencies are kept, lowest are divided by the factor (40).
  np.testing.assert_allclose(inv[:5], base[:5], rtol=1e-6)
  np.testing.assert_allclose(inv[-5:], base[-5:] / 40, rtol=1e-6)
  mscale = 0.1 * 1.0 * math.log(40) + 1.0
  assert layers.softmax_scale(c) == pytest.approx(192 ** -0.5 * mscale ** 2)
  assert layers.rope_attention_factor(c.rope_scaling) == 1.0


def test_apply_rope_layouts_rotate_pairs():
  x = jnp.arange(8, dtype=jnp.float32).reshape(1, 1, 8)
  angle = jnp.full((1, 1, 4), jnp.pi / 2)
  inter = layers.apply_rope(x, jnp.cos(angle), jnp.sin(angle), interleave=True)
  # pairs (0,1),(2,3),... rotated by 90 degrees: (a, b) -> (-b, a), output [evens | odds].
  np.testing.assert_allclose(inter[0, 0], [-1, -3, -5, -7, 0, 2, 4, 6], atol=1e-6)
  half = layers.apply_rope(x, jnp.cos(angle), jnp.sin(angle), interleave=False)
  np.testing.assert_allclose(half[0, 0], [-4, -5, -6, -7, 0, 1, 2, 3], atol=1e-6)


def test_bfloat16_compute_keeps_float32_logits():
  c = get_model_config("tiny_v3", dtype="bfloat16")
  v = init_variables(c, jax.random.key(0))
  out = _forward(c, v, jnp.ones((1, 4), jnp.int32))
  assert out.logits.dtype == jnp.float32 and out.hidden.dtype == jnp.bfloat16
  ref = _forward(c.replace(dtype="float32"), v, jnp.ones((1, 4), jnp.int32))
  assert np.abs(np.asarray(out.logits - ref.logits)).max() < 0.05


def test_remat_gives_the_same_logits_and_gradients():
  c = get_model_config("tiny_v3")
  v = init_variables(c, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, c.vocab_size)

  def loss(config):
    return jax.jit(jax.value_and_grad(lambda v: Transformer(config).apply(v, tokens).logits.std()))(v)

  (l0, g0), (l1, g1) = loss(c), loss(c.replace(remat="full"))
  assert float(l0) == float(l1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, atol=1e-7)

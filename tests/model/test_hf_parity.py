"""r1's DeepSeek model against transformers' logits on committed tiny checkpoints (no torch needed)."""

import os

import jax
import numpy as np
import pytest

import r1
from r1.model import Transformer

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
CASES = sorted(d for d in os.listdir(FIXTURES) if not d.startswith("_"))
TOL = 1e-4


def _reference(case):
  return dict(np.load(os.path.join(FIXTURES, case, "reference.npz")))


@pytest.fixture(scope="module", params=CASES)
def loaded(request):
  return request.param, r1.load_hf_checkpoint(os.path.join(FIXTURES, request.param)), _reference(request.param)


def test_fixture_set_covers_the_architecture():
  configs = [r1.load_hf_checkpoint(os.path.join(FIXTURES, c)).config for c in CASES]
  assert {c.q_lora_rank is None for c in configs} == {True, False}
  assert {c.topk_method for c in configs} == {"noaux_tc", "greedy", "group_limited_greedy"}
  assert any(c.n_group > 1 and c.topk_group < c.n_group for c in configs)
  assert {c.rope_scaling is None for c in configs} == {True, False}
  assert {c.rope_interleave for c in configs} == {True, False}
  assert all(c.qk_nope_head_dim != c.v_head_dim for c in configs)
  assert any(c.first_k_dense_replace > 0 for c in configs)


def test_logits_match_transformers(loaded):
  case, policy, ref = loaded
  logits = np.asarray(policy.logits(ref["tokens"]))
  assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape
  np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=0, err_msg=case)


def test_ragged_kernel_matches_transformers(loaded):
  case, policy, ref = loaded
  ragged = r1.Policy(policy.config.replace(moe_impl="ragged"), policy.variables)
  np.testing.assert_allclose(np.asarray(ragged.logits(ref["tokens"])), ref["logits"], atol=TOL, rtol=0, err_msg=case)


def test_left_padded_logits_match_transformers(loaded):
  case, policy, ref = loaded
  logits = np.asarray(policy.logits(ref["padded_tokens"], ref["padded_positions"], ref["padded_mask"]))
  real = ref["padded_mask"].astype(bool)
  np.testing.assert_allclose(logits[real], ref["padded_logits"][real], atol=TOL, rtol=0, err_msg=case)


def test_routing_really_varies_and_bias_matters(loaded):
  """The fixtures are discriminative: tokens use many experts, and the bias changes the choice."""
  case, policy, ref = loaded
  apply = jax.jit(Transformer(policy.config).apply)
  out = apply(policy.variables, ref["tokens"])
  load = np.asarray(out.expert_load)
  assert load.shape[1] == policy.config.n_routed_experts
  assert ((load > 0).sum(axis=1) >= 4).all(), f"{case}: routing collapsed onto few experts: {load}"
  assert (load.sum(axis=1) == ref["tokens"].size * policy.config.num_experts_per_tok).all()
  if "moe_bias" in policy.variables:
    zero_bias = jax.tree.map(np.zeros_like, policy.variables["moe_bias"])
    other = apply({**policy.variables, "moe_bias": zero_bias}, ref["tokens"])
    assert np.abs(np.asarray(other.logits) - ref["logits"]).max() > 100 * TOL


def test_rope_layout_matters(loaded):
  case, policy, ref = loaded
  flipped = r1.Policy(policy.config.replace(rope_interleave=not policy.config.rope_interleave), policy.variables)
  assert np.abs(np.asarray(flipped.logits(ref["tokens"])) - ref["logits"]).max() > 100 * TOL, case

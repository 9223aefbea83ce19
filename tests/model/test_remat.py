"""Remat policies change what the backward keeps, never the numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1.model import Transformer, get_model_config, init_variables
from r1.model.config import REMAT_POLICIES


def _loss_fn(config):
  def loss(params, variables, tokens, weights):
    logits = Transformer(config).apply({**variables, "params": params}, tokens).logits
    return jnp.sum(logits * weights), logits
  return loss


@pytest.fixture(scope="module")
def setup():
  config = get_model_config("tiny_v3", num_hidden_layers=2)  # one dense layer, one MoE layer
  variables = init_variables(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, config.vocab_size)
  weights = jax.random.normal(jax.random.key(2), (2, 12, config.vocab_size))
  return config, variables, tokens, weights


def test_policies_give_identical_logits_and_gradients(setup):
  config, variables, tokens, weights = setup
  results = {}
  for name in REMAT_POLICIES:
    grad_fn = jax.jit(jax.grad(_loss_fn(config.replace(remat=name)), has_aux=True))
    grads, logits = grad_fn(variables["params"], variables, tokens, weights)
    results[name] = (logits, grads)
  ref_logits, ref_grads = results["none"]
  for name, (logits, grads) in results.items():
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-6, err_msg=name)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7, err_msg=name)


def test_policies_save_less_for_the_backward(setup):
  config, variables, tokens, weights = setup

  def saved_bytes(name):
    # The VJP closure holds exactly the residuals the forward saved for the backward.
    loss = _loss_fn(config.replace(remat=name))
    _, vjp_fn, _ = jax.vjp(lambda p: loss(p, variables, tokens, weights), variables["params"], has_aux=True)
    return sum(x.nbytes for x in jax.tree.leaves(vjp_fn))

  none, dots, full = saved_bytes("none"), saved_bytes("dots"), saved_bytes("full")
  # "dots" keeps the projections but not the [B, H, T, T] scores; "full" only the layer inputs.
  assert none > dots > full, (none, dots, full)


def test_unknown_policy_is_named_in_the_error():
  with pytest.raises(ValueError, match="remat='sometimes'.*none, full, dots"):
    get_model_config("tiny_v3", remat="sometimes")

"""The rollout -> GRPO batch layout: the trainer's logprobs at the completion mask are the
sampler's logprobs, token for token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1
from r1 import sampling
from r1 import logprobs as logprobs_lib
from r1.model import get_model_config, init_variables
from r1.stages import rollout


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trainer_logprobs_at_completion_mask_equal_sampler_logprobs(temperature):
  """The trainer's forward at the rollout temperature scores what the sampler drew from:
  log_softmax(logits / T) at the sampled tokens, in the GRPO batch layout."""
  config = get_model_config("tiny_v3")
  variables = init_variables(config, jax.random.key(0))
  variables["params"]["embed_tokens"] = variables["params"]["embed_tokens"] * 30
  policy = r1.Policy(config, variables)
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
  free = policy.generate(prompts, num_samples=3, max_new_tokens=7, temperature=temperature, seed=2)
  stop = int(free.tokens[0, 3])  # a stop token that ends some rows early
  out = policy.generate(prompts, num_samples=3, max_new_tokens=7, temperature=temperature, seed=2,
                        stop_tokens=[stop])
  assert not bool(out.mask.all())
  prompt_tokens, prompt_mask = sampling.pad_prompts(prompts)
  batch = rollout.grpo_batch(prompt_tokens, prompt_mask, np.asarray(out.tokens), np.asarray(out.mask),
                             np.asarray(out.logprobs), num_samples=3)
  assert batch["tokens"].shape == (6, prompt_tokens.shape[1] + 7)
  assert batch["completion_mask"].sum() == int(out.lengths.sum())
  targets = logprobs_lib.next_token_targets(jnp.asarray(batch["tokens"]))
  logprobs, _, _ = jax.jit(lambda b: logprobs_lib.forward(config, variables["params"], variables["moe_bias"],
                                                          b["tokens"], b["positions"], b["segment_ids"], targets,
                                                          temperature=temperature))(batch)
  m = batch["completion_mask"] > 0
  np.testing.assert_allclose(np.asarray(logprobs)[m], batch["sampler_logprobs"][m], atol=1e-4)
  # Masked positions carry no sampler logprob and are padding in the sequence.
  assert (batch["sampler_logprobs"][~m] == 0).all()
  if temperature != 1.0:   # and the untempered forward does not (what the step used to train on)
    untempered, _, _ = logprobs_lib.forward(config, variables["params"], variables["moe_bias"],
                                            jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"]),
                                            jnp.asarray(batch["segment_ids"]), targets)
    assert np.abs(np.asarray(untempered)[m] - batch["sampler_logprobs"][m]).max() > 1e-2


def test_decode_completions_drops_the_stop_token():
  class Tok:
    def decode(self, ids):
      return " ".join(map(str, ids))
  texts = rollout.decode_completions(Tok(), np.array([[4, 5, 2, 0], [7, 8, 9, 6]]), np.array([3, 4]), drop_final=[2])
  assert texts == ["4 5", "7 8 9 6"]


def test_overlong_penalty_is_dapo_soft_punishment():
  np.testing.assert_allclose(rollout.overlong_penalty(np.array([10, 96, 100, 112, 128]), 128, 32),
                             [0.0, 0.0, -0.125, -0.5, -1.0])


def test_take_groups_prefers_informative_groups_and_keeps_shapes():
  g = 2

  def round_(totals, tag):
    totals = np.asarray(totals, np.float32)
    b = len(totals) // g
    return {"prompts": [f"{tag}{i}" for i in range(b)], "examples": [f"{tag}{i}" for i in range(b)],
            "total": totals, "lengths": np.arange(len(totals)), "texts": [f"{tag}{i}" for i in range(len(totals))],
            "components": {"accuracy": totals}}

  first = round_([1, 1, 0, 1, 0, 0], "a")      # groups a0 (flat), a1 (informative), a2 (flat)
  second = round_([0, 1, 1, 1, 1, 0], "b")     # b0, b2 informative
  out = rollout.take_groups([first, second], 3, g, dynamic=True)
  assert out["prompts"] == ["a1", "b0", "b2"]
  np.testing.assert_array_equal(out["total"], [0, 1, 0, 1, 1, 0])
  assert out["texts"] == ["a2", "a3", "b0", "b1", "b4", "b5"]
  np.testing.assert_array_equal(out["components"]["accuracy"], out["total"])
  # Not enough informative groups: flat ones fill, in order.
  short = rollout.take_groups([first], 3, g, dynamic=True)
  assert short["prompts"] == ["a1", "a0", "a2"]
  assert rollout.take_groups([first, second], 3, g, dynamic=False) is first


def test_dynamic_sampling_reorders_the_overlapped_reference_with_its_groups():
  """With max_extra_rounds = 0 dynamic sampling still moves informative groups first: the
  reference logprobs dispatched for the round must follow their rows, or each row gets another
  row's KL term."""
  g, t = 2, 3
  totals = np.asarray([1, 1, 0, 1, 0, 0], np.float32)   # groups 0 (flat), 1 (informative), 2 (flat)
  ref = jnp.asarray(np.arange(6 * t, dtype=np.float32).reshape(6, t))   # row r holds 3r .. 3r + 2

  def round_():
    return {"prompts": ["p0", "p1", "p2"], "examples": ["e0", "e1", "e2"], "total": totals.copy(),
            "lengths": np.arange(6), "ref_logprobs": ref}

  rnd, kept_ref = rollout.take_groups_and_reference([round_()], 3, g, dynamic=True)
  assert rnd["prompts"] == ["p1", "p0", "p2"]
  np.testing.assert_array_equal(rnd["lengths"], [2, 3, 0, 1, 4, 5])
  np.testing.assert_array_equal(np.asarray(kept_ref), np.asarray(ref)[[2, 3, 0, 1, 4, 5]])
  assert "ref_logprobs" not in rnd
  # Without dynamic sampling the round and its reference are kept as they are.
  rnd, kept_ref = rollout.take_groups_and_reference([round_()], 3, g, dynamic=False)
  assert rnd["prompts"] == ["p0", "p1", "p2"] and kept_ref is ref
  # Groups from a later round have no overlapped reference: the step computes it.
  second = dict(round_(), total=np.asarray([0, 1, 1, 0, 0, 0], np.float32))
  rnd, kept_ref = rollout.take_groups_and_reference([round_(), second], 3, g, dynamic=True)
  assert rnd["prompts"] == ["p1", "p0", "p1"] and kept_ref is None   # p1, then the second round's p0, p1

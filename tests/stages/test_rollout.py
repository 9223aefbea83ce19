"""The rollout -> GRPO batch layout: the trainer's logprobs at the completion mask are the
sampler's logprobs, token for token."""

import jax
import jax.numpy as jnp
import numpy as np

import r1
from r1 import sampling
from r1 import logprobs as logprobs_lib
from r1.model import get_model_config, init_variables
from r1.stages import rollout


def test_trainer_logprobs_at_completion_mask_equal_sampler_logprobs():
  config = get_model_config("tiny_v3")
  variables = init_variables(config, jax.random.key(0))
  variables["params"]["embed_tokens"] = variables["params"]["embed_tokens"] * 30
  policy = r1.Policy(config, variables)
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
  free = policy.generate(prompts, num_samples=3, max_new_tokens=7, temperature=1.0, seed=2)
  stop = int(free.tokens[0, 3])  # a stop token that ends some rows early
  out = policy.generate(prompts, num_samples=3, max_new_tokens=7, temperature=1.0, seed=2, stop_tokens=[stop])
  assert not bool(out.mask.all())
  prompt_tokens, prompt_mask = sampling.pad_prompts(prompts)
  batch = rollout.grpo_batch(prompt_tokens, prompt_mask, np.asarray(out.tokens), np.asarray(out.mask),
                             np.asarray(out.logprobs), num_samples=3)
  assert batch["tokens"].shape == (6, prompt_tokens.shape[1] + 7)
  assert batch["completion_mask"].sum() == int(out.lengths.sum())
  targets = logprobs_lib.next_token_targets(jnp.asarray(batch["tokens"]))
  logprobs, _, _ = jax.jit(lambda b: logprobs_lib.forward(config, variables["params"], variables["moe_bias"],
                                                          b["tokens"], b["positions"], b["segment_ids"], targets))(batch)
  m = batch["completion_mask"] > 0
  np.testing.assert_allclose(np.asarray(logprobs)[m], batch["old_logprobs"][m], atol=1e-4)
  # Masked positions carry no old logprob and are padding in the sequence.
  assert (batch["old_logprobs"][~m] == 0).all()


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

"""Non-finite rewards are zeroed and counted, never silently turned into a skipped step; a run whose
updates keep being skipped stops with a message (issue item 4)."""

import json
import logging
import os

import numpy as np
import pytest

from configs import tiny_r1_zero
from r1.rewards import registry
from r1.stages import common, pipeline, grpo as grpo_stage

# Rows of every batch where `broken_reward` returns NaN and inf.
NAN_ROW, INF_ROW = 1, 6


def broken_reward(completions, examples):
  """A reward with a bug: NaN for row NAN_ROW, inf for row INF_ROW, 0.25 elsewhere."""
  del examples
  out = np.full(len(completions), 0.25, np.float32)
  out[NAN_ROW], out[INF_ROW] = np.nan, np.inf
  return out


@pytest.fixture
def broken_reward_registered(monkeypatch):
  monkeypatch.setitem(registry.REWARDS, "broken", f"{__name__}:broken_reward")


def test_a_nonfinite_reward_is_zeroed_counted_and_named(broken_reward_registered, caplog):
  del broken_reward_registered
  examples = [{"id": f"ex{i}"} for i in range(8)]
  with caplog.at_level(logging.WARNING):
    total, parts, nonfinite = registry.compute_rewards({"broken": 2.0, "format": 1.0}, ["x"] * 8, examples,
                                                       return_nonfinite=True)
  assert np.isfinite(total).all()
  expected = np.full(8, 0.25, np.float32)
  expected[[NAN_ROW, INF_ROW]] = 0.0
  np.testing.assert_array_equal(parts["broken"], expected)
  np.testing.assert_array_equal(total, 2.0 * expected + parts["format"])
  assert np.flatnonzero(nonfinite).tolist() == [NAN_ROW, INF_ROW]
  message = caplog.text
  assert "reward 'broken' returned nan at row 1 (example ex1), inf at row 6 (example ex6) of 8" in message
  # Without return_nonfinite the API is as before: (total, components), already finite.
  total2, _ = registry.compute_rewards({"broken": 2.0, "format": 1.0}, ["x"] * 8, examples)
  np.testing.assert_array_equal(total2, total)


def test_zero_nonfinite_names_only_the_first_rows():
  values = np.full(10, np.nan, np.float32)
  fixed, bad = registry.zero_nonfinite("reward_model", values)
  assert bad.all() and (fixed == 0).all()
  clean, none = registry.zero_nonfinite("reward_model", np.ones(3))
  assert not none.any() and (clean == 1).all()


def grpo_config(total_steps):
  """The quick tiny GRPO stage from random init, cut down: what is checked is the step's bookkeeping."""
  c = tiny_r1_zero.get_config("quick")
  c.tokenizer.corpus_size = 300
  c = pipeline.stage_config(c, 1, None)
  c.total_steps = total_steps
  c.eval.at_start = False
  c.eval.num_examples = 4
  c.rollout.max_new_tokens = 32
  c.checkpoint.save_every = 1
  return c


def test_nonfinite_rewards_train_and_skipped_updates_stop_the_run(broken_reward_registered, monkeypatch, tmp_path):
  del broken_reward_registered
  config = grpo_config(total_steps=5)
  config.rewards = dict(config.rewards, broken=1.0)
  config.grpo.max_skipped_updates = 2
  # From step 2 on the update's batch carries NaN rewards, so NaN advantages (as a diverged
  # policy's loss would be): the train step skips every update, so the policy never moves again.
  place_batch, calls = common.place_batch, []

  def nan_after_first_step(batch, mesh):
    if "rewards" in batch:   # the update's batch (the reference's layout has none)
      calls.append(1)
      if len(calls) > 1:
        batch = dict(batch, rewards=batch["rewards"] * np.nan)
    return place_batch(batch, mesh)

  monkeypatch.setattr(common, "place_batch", nan_after_first_step)
  with pytest.raises(RuntimeError, match=r"GRPO step 3: the update was skipped for 2 steps in a row .* the policy "
                                         r"has not changed since step 1; stopping \(grpo.max_skipped_updates=2\)"):
    grpo_stage.run(config, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3]
  # Every step scores one batch of 4 prompts x 4 samples: the broken reward's rows 1 and 6 are
  # zeroed and counted, and step 1's update is applied on finite rewards.
  assert [r["rewards/nonfinite"] for r in rows] == [2.0, 2.0, 2.0]
  assert np.isfinite(rows[0]["reward"]) and np.isfinite(rows[0]["loss"]) and rows[0]["skipped"] == 0.0
  assert [r["skipped"] for r in rows[1:]] == [1.0, 1.0]

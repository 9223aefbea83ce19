"""Table-driven equivalence tests for r1.rewards.math.verify (bare answers and full responses)."""

import numpy as np
import pytest

from r1.rewards import math as math_reward
from tests.rewards.equivalence_cases import CASES


def test_table_is_big_and_balanced():
  assert len(CASES) >= 150
  assert sum(expected for _, _, expected, _ in CASES) >= 60
  assert sum(not expected for _, _, expected, _ in CASES) >= 40


@pytest.mark.parametrize("pred,gold,expected,what", CASES, ids=[c[3] for c in CASES])
def test_verify_bare_answer(pred, gold, expected, what):
  assert math_reward.verify(pred, gold) is expected, what


def test_verify_batch_matches_table_in_order():
  # Full responses this time, so extraction is on the path too; the order of results must hold.
  completions = [f"<think>working</think><answer>\\boxed{{{p}}}</answer>" for p, _, _, _ in CASES]
  rewards = math_reward.verify_batch(completions, [g for _, g, _, _ in CASES])
  assert rewards.dtype == np.float32 and rewards.shape == (len(CASES),)
  expected = np.array([e for _, _, e, _ in CASES], np.float32)
  # `\boxed{}`, `\boxed{\boxed{}` and `\boxed{3)}` are not answers in a box; skip those
  # extraction-specific rows.
  keep = np.array([p not in ("", "\\boxed{", "3)") for p, _, _, _ in CASES])
  np.testing.assert_array_equal(rewards[keep], expected[keep])


def test_verify_is_symmetric_on_table():
  # Swapping prediction and gold must not change the verdict: the grader compares values.
  malformed = {"empty prediction", "unbalanced paren: the 3 is still the answer (math-verify)",
               "unbalanced brace"}
  for pred, gold, expected, what in CASES:
    if what not in malformed:
      assert math_reward.verify(gold, pred) is expected, what

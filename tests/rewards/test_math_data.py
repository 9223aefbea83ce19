"""Acceptance on the shipped datasets: MATH-500 and GSM8K golds against themselves, their own
reference solutions, and the golds of other problems (false positives)."""

import random

import numpy as np

from r1.rewards import equivalence
from r1.rewards import latex
from r1.rewards import math as math_reward
from r1.rewards import workers
from tests.rewards.conftest import read_jsonl

# MATH-500 golds that differ from their own solution's last \boxed{}: none as of this dataset
# (all 500 verify); listed here with the reason if that ever changes.
MATH500_KNOWN_EXCEPTIONS = {}


def test_math500_gold_verifies_against_itself(math500):
  golds = [row["answer"] for row in math500]
  assert len(golds) == 500
  np.testing.assert_array_equal(math_reward.verify_batch(golds, golds), np.ones(500, np.float32))


def test_math500_gold_verifies_against_own_solution(math500):
  golds = [row["answer"] for row in math500]
  responses = [row["solution"] for row in math500]  # Full worked solutions ending in \boxed{}.
  rewards = math_reward.verify_batch(responses, golds)
  failing = {row["unique_id"] for row, r in zip(math500, rewards) if r != 1.0}
  assert failing == set(MATH500_KNOWN_EXCEPTIONS)
  # And the solution field used as the gold (its last box) against the bare gold answer.
  assert math_reward.verify_batch(golds, responses).sum() == 500 - len(MATH500_KNOWN_EXCEPTIONS)


def _cross_pairs(golds, n, seed):
  """n random (i, j) with i != j whose golds differ after normalisation."""
  rng = random.Random(seed)
  norm = [latex.normalize(latex.extract_gold(g)) for g in golds]
  pairs = []
  while len(pairs) < n:
    i, j = rng.randrange(len(golds)), rng.randrange(len(golds))
    if norm[i] != norm[j]:
      pairs.append((i, j))
  return pairs


# Distinct gold strings of *different* MATH-500 problems that have the same value (audited by
# hand); every other pair of distinct golds must grade as not equal.
MATH500_SAME_VALUE_GOLDS = {frozenset({"-2,1", "1,-2"})}


def test_math500_no_false_positives_between_problems_cheap_path_all_pairs(math500):
  # All 291 * 290 / 2 pairs of distinct normalised golds through the in-process path.
  norm = sorted({latex.normalize(row["answer"]) for row in math500})
  structs = [latex.structure(s) for s in norm]
  equal = set()
  for i, a in enumerate(structs):
    for j in range(i + 1, len(structs)):
      if equivalence.structures_equal(a, structs[j], equivalence.cheap_scalar_equal) is True:
        equal.add(frozenset({norm[i], norm[j]}))
  assert len(norm) > 250
  assert equal == MATH500_SAME_VALUE_GOLDS


def test_math500_no_false_positives_between_problems_full_path(math500):
  golds = [row["answer"] for row in math500]
  pairs = _cross_pairs(golds, 1000, seed=0)
  pool = workers.SympyPool(num_workers=2)
  try:
    rewards = math_reward.verify_batch(
        [golds[i] for i, _ in pairs], [golds[j] for _, j in pairs], pool=pool)
  finally:
    pool.close()
  norm = [latex.normalize(g) for g in golds]
  false_positives = [(golds[i], golds[j]) for (i, j), r in zip(pairs, rewards)
                     if r and frozenset({norm[i], norm[j]}) not in MATH500_SAME_VALUE_GOLDS]
  assert not false_positives
  assert rewards.sum() <= sum(frozenset({norm[i], norm[j]}) in MATH500_SAME_VALUE_GOLDS
                              for i, j in pairs)


def test_gsm8k_golds_verify_and_do_not_cross_match():
  for name in ("gsm8k_test.jsonl", "gsm8k_train.jsonl"):
    rows = read_jsonl(name)
    golds = [row["answer"] for row in rows]
    finals = [latex.extract_gold(g) for g in golds]
    assert all(f.replace(",", "").lstrip("-").replace(".", "").isdigit() for f in finals)
    n = len(golds)
    assert math_reward.verify_batch(golds, golds).sum() == n
    said = [f"Adding it up.\nSo the answer is {f}." for f in finals]
    assert math_reward.verify_batch(said, golds).sum() == n
    boxed = [f"<think>...</think><answer>\\boxed{{{f.replace(',', '')}}}</answer>" for f in finals]
    assert math_reward.verify_batch(boxed, golds).sum() == n
    pairs = _cross_pairs(golds, 5000, seed=1)
    cross = math_reward.verify_batch([finals[i] for i, _ in pairs], [golds[j] for _, j in pairs])
    assert cross.sum() == 0

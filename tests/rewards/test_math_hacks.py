"""Reward hacking: no answer is equal to every gold, and no answer raises.

Measured before the fix: `\\boxed{10^{10^{10}} + 1}`, `\\boxed{(10^{8})!}`, `\\boxed{9^{9^{9}}}` and
`\\boxed{2^{2^{2^{2^{2^{2}}}}}}` verified True against every gold (inf <= tol * inf once the value
went through `complex()`), and `\\boxed{10^{400}}` raised OverflowError (a float tolerance times a
Fraction) out of the reward function, ending the training step.
"""

import pytest

from r1.rewards import equivalence
from r1.rewards import math as math_reward
from r1.rewards import symbolic

ORDINARY_GOLDS = ["7", "42", "1/2", "0", "1", "-5", "2\\sqrt{3}", "10\\%", "x + 1"]

# Answers a policy could write for every problem: too big, too small, infinite, undefined, or not
# a number at all, and shotgun answers that list many values.
HACKS = [
    "10^{10^{10}} + 1", "(10^{8})!", "9^{9^{9}}", "2^{2^{2^{2^{2^{2}}}}}", "10^{400}", "-10^{400}",
    "10^{-400}", "-10^{-400}", "10^{10^{10}} - 10^{10^{10}} + 7.0000001", "1e400", "1e-400",
    "\\infty", "-\\infty", "\\pm\\infty", "\\frac{1}{0}", "\\frac{0}{0}", "0^0 \\cdot \\infty",
    "\\infty - \\infty", "\\text{undefined}", "\\text{anything}", "x", "\\emptyset", "\\mathbb{R}",
    "(-\\infty, \\infty)", "\\text{all real numbers}", "7, 42, 3, \\frac{1}{2}, 0, 1, -5, 2\\sqrt{3}",
    "\\{7, 42, 3, 0, 1, -5\\}",
]



def test_no_answer_equals_every_gold_and_none_raises(grading_pool):
  completions = [f"<think>.</think><answer>\\boxed{{{h}}}</answer>" for h in HACKS for _ in ORDINARY_GOLDS]
  golds = [g for _ in HACKS for g in ORDINARY_GOLDS]
  rewards = math_reward.verify_batch(completions, golds, pool=grading_pool)
  accepted = [(c, g) for c, g, r in zip(completions, golds, rewards) if r]
  # `\boxed{\infty}` etc. may equal an infinite gold, but none of these golds is one; and the shotgun
  # list equals no single value.
  assert accepted == []


def test_shotgun_boxes_match_only_the_last_box(grading_pool):
  # Every ordinary value boxed once: the last box is the answer, so one gold matches, not six.
  shotgun = " ".join(f"\\boxed{{{g}}}" for g in ["7", "42", "3", "0", "1", "-5"])
  rewards = math_reward.verify_batch([shotgun] * 6, ["7", "42", "3", "0", "1", "-5"], pool=grading_pool)
  assert rewards.tolist() == [0.0] * 5 + [1.0]


@pytest.mark.parametrize("big", ["10^{400}", "10^{399}", "-10^{400}", "1.5\\times10^{400}", "10^{-400}"])
def test_huge_and_tiny_literals_compare_in_process_without_overflow(big):
  # The cheap path compares exact Fractions: no float conversion, so no OverflowError.
  assert equivalence.cheap_scalar_equal(big, "7") is False
  assert equivalence.cheap_scalar_equal(big, "0") is False
  assert equivalence.cheap_scalar_equal(big, big) is True


@pytest.mark.parametrize("value", ["9^{9^{9}}", "10^{10^{10}} + 1", "(10^{8})!", "10^{-400}",
                                   "\\frac{1}{0}", "\\frac{0}{0}"])
def test_sympy_path_rejects_unrepresentable_values(value):
  # Worker-side comparison, called directly: mpmath values, never complex() (which made inf).
  for gold in ["7", "0", "\\frac{1}{2}", "2\\sqrt{3}"]:
    assert symbolic.symbolic_scalar_equal(value, gold) is False, (value, gold)


def test_ordinary_values_still_match(grading_pool):
  # The same comparisons keep accepting what is equal, big and small values included.
  pairs = [("10^{400}", "10^{400}"), ("10^{-400}", "10^{-400}"), ("\\infty", "\\infty"),
           ("-\\infty", "-\\infty"), ("\\frac{2}{4}", "\\frac{1}{2}"), ("\\sqrt{12}", "2\\sqrt{3}"),
           ("0.0", "0"), ("2^{2^{2}}", "16"), ("1.5\\times10^{3}", "1500")]
  rewards = math_reward.verify_batch([f"\\boxed{{{p}}}" for p, _ in pairs], [g for _, g in pairs],
                                     pool=grading_pool)
  assert rewards.tolist() == [1.0] * len(pairs)
  rewards = math_reward.verify_batch(["\\boxed{\\infty}", "\\boxed{-\\infty}"], ["-\\infty", "\\infty"],
                                     pool=grading_pool)
  assert rewards.tolist() == [0.0, 0.0]


def test_math_verify_veto_lets_only_the_same_infinity_through():
  import sympy
  from r1.rewards import math_verify_grader
  assert math_verify_grader.numerically_sane(sympy.oo, sympy.oo)
  assert not math_verify_grader.numerically_sane(sympy.oo, -sympy.oo)
  assert not math_verify_grader.numerically_sane(sympy.zoo, sympy.zoo)  # sympy says zoo == zoo
  assert not math_verify_grader.numerically_sane(sympy.nan, sympy.nan)
  assert not math_verify_grader.numerically_sane(sympy.Integer(10) ** 400 + 1, sympy.Integer(7))
  assert math_verify_grader.numerically_sane(sympy.Integer(28), sympy.Rational(28, 100))  # 28% = 0.28

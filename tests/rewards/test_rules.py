"""Format, language-consistency, reflection and registry tests."""

import numpy as np
import pytest

from r1.rewards import format as format_reward
from r1.rewards import language
from r1.rewards import reflection
from r1.rewards import registry

GOOD = "<think>\n2 + 2 is 4.\n</think>\n<answer>4</answer>"


@pytest.mark.parametrize("completion,strict,lenient", [
    (GOOD, True, True),
    ("  <think>a</think><answer>b</answer>\n", True, True),
    (GOOD + " trailing words", False, True),
    (GOOD + "<answer>5</answer>", False, True),
    ("<think>a</think><think>b</think><answer>c</answer>", False, True),
    ("<answer>4</answer><think>late</think>", False, False),
    ("<think>a</think>", False, False),
    ("<answer>4</answer>", False, False),
    ("<think></think><answer>4</answer>", False, True),
    ("<think>a</think><answer> </answer>", False, True),
    ("preamble <think>a</think><answer>b</answer>", False, True),
    ("<think>a<answer>b</answer></think>", False, False),
    ("", False, False),
])
def test_format_variants(completion, strict, lenient):
  assert format_reward.strict_format_ok(completion) is strict
  assert format_reward.lenient_format_ok(completion) is lenient


def test_format_with_prefilled_think_and_batch_dtype():
  completion = "reasoning</think><answer>4</answer>"
  assert not format_reward.strict_format_ok(completion)
  assert format_reward.strict_format_ok(completion, think_prefilled=True)
  rewards = format_reward.format_reward([GOOD, GOOD + "x"])
  assert rewards.dtype == np.float32 and rewards.tolist() == [1.0, 0.0]
  assert format_reward.lenient_format_reward([GOOD + "x", "none"]).tolist() == [1.0, 0.0]


def test_language_word_scripts():
  assert language.word_scripts("Let x 等于 2, привет") == ["latin", "latin", "cjk", "cjk", "cyrillic"]
  # Math does not count: LaTeX commands and $...$ spans are removed before counting.
  assert language.word_scripts("所以 $\\frac{a}{b} = c$ \\alpha 等") == ["cjk", "cjk", "cjk"]


@pytest.mark.parametrize("completion,target,expected", [
    ("<think>We add the numbers.</think><answer>4</answer>", "en", 1.0),
    ("<think>We add 数字</think>", "en", 0.5),
    ("<think>We add 数字</think>", "zh", 0.5),
    ("<think>我们把数字相加</think>", "zh", 1.0),
    ("<think>我们把数字相加</think>", "en", 0.0),
    ("<think>one two three 四</think> ignored words after", "en", 0.75),
    ("no think block, all english", "latin", 1.0),
    ("<think>$1+1=2$</think>", "en", 0.0),
])
def test_language_consistency(completion, target, expected):
  assert language.language_consistency(completion, target) == pytest.approx(expected)


def test_language_unknown_target():
  with pytest.raises(ValueError, match="klingon"):
    language.language_consistency("x", "klingon")


def test_reflection_counts():
  texts = ["Wait, wait. I checked it; that is WRONG. Let me re-evaluate. However, a mistake? Verify.",
           "Straightforward: 2 + 2 = 4. Awaiting nothing, checkmate.", ""]
  counts = reflection.reflection_counts(texts)
  assert counts["wait"].tolist() == [2, 0, 0]  # "Awaiting" is not "wait".
  assert counts["check"].tolist() == [1, 0, 0]  # "checkmate" is not "check".
  assert counts["wrong"].tolist() == [1, 0, 0]
  assert counts["re-evaluate"].tolist() == [1, 0, 0]
  assert counts["however"].tolist() == [1, 0, 0]
  assert counts["mistake"].tolist() == [1, 0, 0]
  assert counts["verify"].tolist() == [1, 0, 0]
  assert counts["total"].tolist() == [8, 0, 0]
  metrics = reflection.reflection_metrics(texts)
  assert metrics["reflection/any"] == pytest.approx(1 / 3)
  assert metrics["reflection/total"] == pytest.approx(8 / 3)


def test_registry_combines_weighted_components():
  completions = [GOOD, "<think>我们</think><answer>5</answer> extra", "<answer>\\boxed{4}</answer>"]
  examples = [{"answer": "4"}] * 3
  specs = {"math": 1.0, "format": 0.5, "language": {"weight": 0.25, "target": "en"}}
  total, parts = registry.compute_rewards(specs, completions, examples)
  assert set(parts) == {"math", "format", "language"}
  np.testing.assert_array_equal(parts["math"], [1.0, 0.0, 1.0])
  np.testing.assert_array_equal(parts["format"], [1.0, 0.0, 0.0])
  # No <think> block in the third: the whole completion counts as the CoT (all Latin words).
  np.testing.assert_array_equal(parts["language"], [1.0, 0.0, 1.0])
  np.testing.assert_allclose(total, [1.75, 0.0, 1.25])
  assert total.dtype == np.float32


def test_registry_errors_name_the_problem():
  with pytest.raises(KeyError, match="nope"):
    registry.compute_rewards({"nope": 1.0}, ["x"], [{}])
  with pytest.raises(ValueError, match="weight"):
    registry.compute_rewards({"format": {"think_prefilled": True}}, ["x"], [{}])
  with pytest.raises(ValueError, match="2 completions"):
    registry.compute_rewards({"format": 1.0}, ["x", "y"], [{}])


def test_every_registered_reward_resolves():
  for name in registry.REWARDS:
    assert callable(registry.get_reward(name))

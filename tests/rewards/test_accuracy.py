"""The routing accuracy reward: math examples via sympy, synthetic tasks via their verifiers."""

import numpy as np

from r1.data import make_task
from r1.data.sources import PromptExample
from r1.rewards import registry


def test_accuracy_routes_by_verifier():
  countdown = make_task("countdown").example(seed=0, index=3)
  arithmetic = make_task("arithmetic").example(seed=0, index=5)
  examples = [PromptExample("m", "q", "\\frac{1}{2}"), {"answer": "12", "verifier": "math"}, arithmetic, arithmetic,
              countdown, countdown]
  completions = ["<think>x</think> <answer>0.5</answer>", "\\boxed{13}",
                 f"<answer>{arithmetic.gold}</answer>", f"<answer>{int(arithmetic.gold) + 1}</answer>",
                 f"<answer>{countdown.gold}</answer>", "<answer>__import__('os').system('true')</answer>"]
  total, parts = registry.compute_rewards({"accuracy": 1.0}, completions, examples)
  np.testing.assert_array_equal(total, [1, 0, 1, 0, 1, 0])
  np.testing.assert_array_equal(parts["accuracy"], total)

"""Accuracy reward that routes each example to its own verifier.

An example says how it is checked (`PromptExample.verifier`): "math" (GSM8K, MATH-500) goes
through r1.rewards.math's batched sympy path; a synthetic task name ("arithmetic", "countdown")
goes to that task's verifier, applied to the extracted answer. Examples may be PromptExample
objects or dicts with "gold" (or "answer"), "verifier" and "meta".
"""

import numpy as np

from r1.rewards import math as math_reward


def _field(example, name, default=None):
  if isinstance(example, dict):
    return example.get(name, default)
  return getattr(example, name, default)


def _gold(example) -> str:
  gold = _field(example, "gold")
  return _field(example, "answer") if gold is None else gold


def accuracy_reward(completions: list[str], examples: list, pool=None) -> np.ndarray:
  """1.0 where the completion's answer is right for its example's verifier, else 0.0. f32[B]."""
  from r1.data import tasks  # pylint: disable=g-import-not-at-top  (numpy only; no JAX)
  rewards = np.zeros(len(completions), np.float32)
  math_rows = [i for i, ex in enumerate(examples) if _field(ex, "verifier", "math") == "math"]
  if math_rows:
    rewards[math_rows] = math_reward.verify_batch([completions[i] for i in math_rows],
                                                  [_gold(examples[i]) for i in math_rows], pool=pool)
  for i, ex in enumerate(examples):
    name = _field(ex, "verifier", "math")
    if name == "math":
      continue
    verify = tasks.get_verifier(name)
    answer = math_reward.extract_answer(completions[i])
    try:
      rewards[i] = float(answer is not None and bool(verify(answer, _gold(ex), _field(ex, "meta") or {})))
    except Exception:  # pylint: disable=broad-except  (hostile model output scores 0, never raises)
      rewards[i] = 0.0
  return rewards

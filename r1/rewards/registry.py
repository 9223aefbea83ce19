"""Reward registry: rewards named in a config with weights, combined per completion.

    config.rewards = {"math": 1.0, "format": 0.5}                       # name -> weight
    config.rewards = {"language": {"weight": 0.1, "target": "zh"}}      # with options
    total, components = registry.compute_rewards(config.rewards, completions, examples)
    # total: f32[B] = sum_k weight_k * reward_k; components: {name: f32[B]} for logging.

Every reward is `fn(completions: list[str], examples: list[dict], **options) -> f32[B]`. A new
reward is one file in r1/rewards/ and one line in REWARDS. Entries are imported on first use, so
naming only "format" never imports sympy or the code sandbox.

A NaN or inf from a reward would make the total, the group's advantages and so the whole GRPO loss
non-finite, and the update would be skipped for the batch. Such a value is set to 0 instead, with
a warning naming the reward, the row and its example, and counted (`return_nonfinite=True`; the
GRPO stage logs the count as `rewards/nonfinite`).
"""

import importlib
from collections.abc import Mapping, Sequence

from absl import logging
import numpy as np

# Rows listed by name in a non-finite reward's warning; the rest are counted.
_ROWS_NAMED = 4

REWARDS = {
    "accuracy": "r1.rewards.accuracy:accuracy_reward",
    "math": "r1.rewards.math:math_reward",
    "format": "r1.rewards.format:format_reward",
    "format_lenient": "r1.rewards.format:lenient_format_reward",
    "language": "r1.rewards.language:language_reward",
    "code": "r1.rewards.code:code_reward",
}


def get_reward(name: str):
  """The reward function registered under name."""
  if name not in REWARDS:
    raise KeyError(f"reward {name!r} is not registered; known rewards: {sorted(REWARDS)}")
  module, fn = REWARDS[name].split(":")
  return getattr(importlib.import_module(module), fn)


def _weight_and_options(name: str, spec) -> tuple[float, dict]:
  if isinstance(spec, (int, float)):
    return float(spec), {}
  if isinstance(spec, Mapping) or hasattr(spec, "items"):
    options = dict(spec.items())
    if "weight" not in options:
      raise ValueError(f"reward {name!r}: options {sorted(options)} need a 'weight'")
    return float(options.pop("weight")), options
  raise TypeError(f"reward {name!r}: spec {spec!r} should be a weight or a mapping with 'weight'")


def _example_id(example) -> str | None:
  if isinstance(example, Mapping):
    return example.get("id")
  return getattr(example, "id", None)


def zero_nonfinite(name: str, values, examples: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`values` with NaN and inf set to 0, and where they were; warns naming the reward and rows.

  Args:
    name: the reward's name, for the warning.
    values: f32[B] one reward per completion.
    examples: the B completions' examples (for their ids in the warning), or None.
  Returns:
    (f32[B] finite values, bool[B] True where the value was NaN or inf).
  """
  values = np.asarray(values, np.float32)
  bad = ~np.isfinite(values)
  if bad.any():
    rows = np.flatnonzero(bad)
    named = []
    for i in rows[:_ROWS_NAMED]:
      example = _example_id(examples[i]) if examples is not None else None
      named.append(f"{values[i]} at row {i}" + (f" (example {example})" if example is not None else ""))
    more = f" and {len(rows) - _ROWS_NAMED} more rows" if len(rows) > _ROWS_NAMED else ""
    logging.warning("reward %r returned %s%s of %d: set to 0 (counted in rewards/nonfinite)", name,
                    ", ".join(named), more, len(values))
    values = np.where(bad, np.float32(0.0), values)
  return values, bad


def compute_rewards(specs, completions: list[str], examples: list[dict], *, return_nonfinite: bool = False):
  """Weighted sum of the named rewards. Returns (total f32[B], {name: f32[B] unweighted}).

  A NaN or inf reward is set to 0 with a warning (zero_nonfinite); with return_nonfinite, a third
  value bool[B] says which completions had one.
  """
  if len(completions) != len(examples):
    raise ValueError(f"compute_rewards: {len(completions)} completions != {len(examples)} examples")
  total = np.zeros(len(completions), np.float32)
  nonfinite = np.zeros(len(completions), bool)
  components = {}
  for name, spec in specs.items():
    weight, options = _weight_and_options(name, spec)
    reward = np.asarray(get_reward(name)(completions, examples, **options), np.float32)
    if reward.shape != total.shape:
      raise ValueError(f"reward {name!r} returned shape {reward.shape}, expected {total.shape}")
    reward, bad = zero_nonfinite(name, reward, examples)
    nonfinite |= bad
    components[name] = reward
    total += np.float32(weight) * reward
  return (total, components, nonfinite) if return_nonfinite else (total, components)

"""Reward registry: rewards named in a config with weights, combined per completion.

    config.rewards = {"math": 1.0, "format": 0.5}                       # name -> weight
    config.rewards = {"language": {"weight": 0.1, "target": "zh"}}      # with options
    total, components = registry.compute_rewards(config.rewards, completions, examples)
    # total: f32[B] = sum_k weight_k * reward_k; components: {name: f32[B]} for logging.

Every reward is `fn(completions: list[str], examples: list[dict], **options) -> f32[B]`. A new
reward is one file in r1/rewards/ and one line in REWARDS. Entries are imported on first use, so
naming only "format" never imports sympy or the code sandbox.
"""

import importlib
from collections.abc import Mapping

import numpy as np

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


def compute_rewards(specs, completions: list[str], examples: list[dict]
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Weighted sum of the named rewards. Returns (total f32[B], {name: f32[B] unweighted})."""
  if len(completions) != len(examples):
    raise ValueError(f"compute_rewards: {len(completions)} completions != {len(examples)} examples")
  total = np.zeros(len(completions), np.float32)
  components = {}
  for name, spec in specs.items():
    weight, options = _weight_and_options(name, spec)
    reward = np.asarray(get_reward(name)(completions, examples, **options), np.float32)
    if reward.shape != total.shape:
      raise ValueError(f"reward {name!r} returned shape {reward.shape}, expected {total.shape}")
    components[name] = reward
    total += np.float32(weight) * reward
  return total, components

"""Format reward for the R1-Zero template (R1 §2.2.2, "format rewards").

The template asks for `<think> reasoning </think> <answer> answer </answer>`. Two variants:
  * strict: the whole completion is exactly one non-empty think block followed by exactly one
    non-empty answer block, with only whitespace around them and nothing after;
  * lenient: somewhere in the completion a think block is followed by an answer block; extra
    text and repeated blocks are allowed (useful early in training, when the strict one is ~0).
If the prompt already ends in `<think>` (the template pre-fills it), pass `think_prefilled=True`.
"""

import re

import numpy as np

_STRICT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_LENIENT = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def strict_format_ok(completion: str, think_prefilled: bool = False) -> bool:
  """Exactly one `<think>…</think>` then one `<answer>…</answer>`, both non-empty, nothing after."""
  if think_prefilled:
    completion = "<think>" + completion
  if any(completion.count(tag) != 1 for tag in _TAGS):
    return False
  m = _STRICT.fullmatch(completion)
  return bool(m) and bool(m.group(1).strip()) and bool(m.group(2).strip())


def lenient_format_ok(completion: str, think_prefilled: bool = False) -> bool:
  """A think block followed (anywhere later) by an answer block."""
  if think_prefilled:
    completion = "<think>" + completion
  return _LENIENT.search(completion) is not None


def format_reward(completions: list[str], examples: list[dict] | None = None,
                  think_prefilled: bool = False) -> np.ndarray:
  """Strict format reward, f32[B] in {0, 1}. `examples` is unused (registry signature)."""
  del examples
  return np.array([strict_format_ok(c, think_prefilled) for c in completions], np.float32)


def lenient_format_reward(completions: list[str], examples: list[dict] | None = None,
                          think_prefilled: bool = False) -> np.ndarray:
  """Lenient format reward, f32[B] in {0, 1}."""
  del examples
  return np.array([lenient_format_ok(c, think_prefilled) for c in completions], np.float32)

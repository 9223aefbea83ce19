"""Math accuracy reward: is the completion's final answer equal to the gold answer?

    from r1.rewards import math as math_reward
    math_reward.verify("... so the answer is \\boxed{\\frac{1}{2}}.", "0.5")   # True
    math_reward.extract_answer("<think>...</think><answer>42</answer>")        # "42"

Equivalence, in order of cost (see equivalence.py for the numeric policy):
  1. exact string after `latex.normalize`;
  2. numbers (integers, decimals, fractions, scientific notation, percentages) and answer
     structure (tuples, intervals, sets, lists, matrices) without sympy, in this process;
  3. sympy (`symbolic.py`: LaTeX -> sympy, simplify(a - b) == 0 or a.equals(b)) in a worker
     process with a hard timeout (`workers.py`), only for pairs steps 1-2 cannot decide.
A timeout, a parser error or any malformed input is "not equal": never an exception, never a hang.
"""

import os
import threading

import numpy as np

from r1.rewards import equivalence
from r1.rewards import latex
from r1.rewards import workers

# Whole completions longer than this are not graded (a 1M-token dump is not an answer).
MAX_COMPLETION_CHARS = 1 << 20

_default_pool: workers.SympyPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> workers.SympyPool:
  """The process-wide sympy pool (one worker per core, up to 8), started on first use."""
  global _default_pool
  with _pool_lock:
    if _default_pool is None:
      _default_pool = workers.SympyPool(num_workers=max(1, min(8, os.cpu_count() or 1)))
    return _default_pool


def shutdown() -> None:
  """Kills the default pool's workers (they restart on the next call that needs sympy)."""
  with _pool_lock:
    if _default_pool is not None:
      _default_pool.close()


def extract_answer(completion: str) -> str | None:
  """The final answer in a completion (see `latex.extract_answer`), or None."""
  if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
    return None
  return latex.extract_answer(completion)


def _prepare(completion: str, gold: str) -> tuple[str, str] | None:
  """Normalised (pred, gold), or None when either side has no gradable answer."""
  if not isinstance(gold, str) or not isinstance(completion, str):
    return None
  pred = extract_answer(completion)
  pred_norm = latex.normalize(pred) if pred is not None else None
  gold_norm = latex.normalize(latex.extract_gold(gold)) if len(gold) <= MAX_COMPLETION_CHARS else None
  if not pred_norm or not gold_norm:
    return None
  return pred_norm, gold_norm


def _cheap(pred: str, gold: str) -> bool | None:
  return equivalence.structures_equal(
      latex.structure(pred), latex.structure(gold), equivalence.cheap_scalar_equal)


def verify_batch(completions: list[str], golds: list[str],
                 pool: workers.SympyPool | None = None) -> np.ndarray:
  """Grades completions against golds in parallel. Returns rewards f32[N] in {0, 1}, in order.

  Cheap checks run here; undecided pairs go to `pool` (default: `default_pool()`), which spreads
  them over its worker processes with a hard per-item timeout.
  """
  if len(completions) != len(golds):
    raise ValueError(f"verify_batch: {len(completions)} completions != {len(golds)} golds")
  rewards = np.zeros(len(completions), np.float32)
  symbolic_items, symbolic_pairs = [], []
  for i, (completion, gold) in enumerate(zip(completions, golds)):
    pair = _prepare(completion, gold)
    if pair is None:
      continue
    try:
      cheap = _cheap(*pair)
    except RecursionError:
      continue
    if cheap is None:
      symbolic_items.append(i)
      symbolic_pairs.append(pair)
    else:
      rewards[i] = float(cheap)
  if symbolic_pairs:
    results = (pool or default_pool()).map(symbolic_pairs)
    rewards[symbolic_items] = np.asarray(results, np.float32)
  return rewards


def verify(completion: str, gold: str) -> bool:
  """True when the answer in `completion` (a full response or a bare answer) equals `gold`.

  `gold` may be a bare answer, a GSM8K answer field (`... #### 18`) or a MATH solution (its last
  `\\boxed{}`). Hang-proof: sympy work runs in a worker process with a hard timeout.
  """
  return bool(verify_batch([completion], [gold])[0])


def math_reward(completions: list[str], examples: list[dict], answer_key: str = "answer",
                pool: workers.SympyPool | None = None) -> np.ndarray:
  """Registry entry: 1.0 when the completion's answer equals example[answer_key]. f32[B]."""
  return verify_batch(completions, [ex[answer_key] for ex in examples], pool=pool)

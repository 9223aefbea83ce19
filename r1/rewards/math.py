"""Math accuracy reward: is the completion's final answer equal to the gold answer?

    from r1.rewards import math as math_reward
    math_reward.verify("... so the answer is \\boxed{\\frac{1}{2}}.", "0.5")   # True
    math_reward.extract_answer("<think>...</think><answer>42</answer>")        # "42"

Equivalence, in order of cost (see equivalence.py for the numeric policy):
  1. exact string after `latex.normalize`;
  2. numbers (integers, decimals, fractions, scientific notation, percentages) and answer
     structure (tuples, intervals, sets, lists, matrices) without sympy, in this process; a True
     here is final, and so is a False between two plain numbers;
  3. in a worker process with a hard timeout (`workers.py`), for every other pair: sympy
     (`symbolic.py`: LaTeX -> sympy, simplify(a - b) == 0 or a.equals(b)), then the field's grader,
     math-verify (`math_verify_grader.py`), on the raw answer text; equal if either says so.
A timeout, a parser error or any malformed input is "not equal": never an exception, never a hang.
No value is equal to everything: numbers are compared exactly or by mpmath at 30 digits, never
through floats that overflow to inf (`10^{10^{10}}`) or underflow to 0 (`10^{-400}`).
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


# math-verify reads at most this tail of a completion (its answer is at the end), and nothing with
# brackets nested deeper than this: its regexes and latex2sympy's recursion spend seconds on such
# input (a 2 KB `{{{...` times out), and no answer nests that deep.
FIELD_MAX_CHARS = 10_000
FIELD_MAX_DEPTH = 40


def _max_depth(text: str) -> int:
  depth = deepest = 0
  for ch in text:
    if ch in "{([":
      depth += 1
      deepest = max(deepest, depth)
    elif ch in "})]":
      depth = max(depth - 1, 0)
  return deepest


def answer_text(completion: str) -> str | None:
  """What math-verify reads: the last `<answer>` block's content, else the completion's tail;
  None when it is nested too deep to be an answer."""
  start = completion.rfind("<answer>")
  if start >= 0:
    end = completion.find("</answer>", start)
    completion = completion[start + len("<answer>"):end if end >= 0 else len(completion)]
  text = completion[-FIELD_MAX_CHARS:]
  return text if _max_depth(text) <= FIELD_MAX_DEPTH else None


def _prepare(completion: str, gold: str) -> tuple[str | None, str | None, str, str, bool] | None:
  """(pred, gold) normalised for r1's checks, their texts for math-verify, and whether r1's
  extraction is unambiguous; None when nothing is gradable (not strings, too long, no gold)."""
  if not isinstance(gold, str) or not isinstance(completion, str):
    return None
  if len(completion) > MAX_COMPLETION_CHARS or len(gold) > MAX_COMPLETION_CHARS:
    return None
  if "\x00" in completion or "\x00" in gold:
    return None
  gold_answer = latex.extract_gold(gold).strip()
  if not gold_answer:
    return None
  # math-verify reads a MATH solution (or `$$\boxed{2}, \boxed{3}$$`) whole; GSM8K's `#### 18` it
  # cannot, so it gets the number after the hashes.
  gold_text = gold_answer if "####" in gold else gold
  pred = extract_answer(completion)
  return (latex.normalize(pred) if pred is not None else None, latex.normalize(gold_answer),
          answer_text(completion), gold_text, _committed(completion, pred))


def _committed(completion: str, pred: str | None) -> bool:
  """Whether r1's extraction is what the completion commits to: an `<answer>` block, a bare
  one-line answer, or a last `\boxed{}` with no "answer" after it. A box followed by "The final
  answer is $10,455$" was an intermediate result, which math-verify looks past."""
  if pred is None:
    return False
  if "<answer>" in completion or pred == completion.strip():
    return True
  box = max(completion.rfind("\\boxed"), completion.rfind("\\fbox"))
  return box >= 0 and "answer" not in completion[box:].lower()


def _cheap(pred: str | None, gold: str | None, committed: bool) -> bool | None:
  """r1's in-process verdict: True is final; False only between two plain numbers that the
  completion committed to (`_prepare`). Anything else is None and goes to the worker, where
  math-verify gets its say: r1's string structure calls `12,000,023` a list and `x \\geq 5` vs
  `5 \\le x` different, which math-verify gets right.
  """
  if not pred or not gold:
    return None
  equal = equivalence.structures_equal(
      latex.structure(pred), latex.structure(gold), equivalence.cheap_scalar_equal)
  if equal is True:
    return True
  numbers = [equivalence.parse_number(equivalence.strip_parens(s)) for s in (pred, gold)]
  return False if committed and all(n is not None for n in numbers) else None


def verify_batch(completions: list[str], golds: list[str],
                 pool: workers.SympyPool | None = None) -> np.ndarray:
  """Grades completions against golds in parallel. Returns rewards f32[N] in {0, 1}, in order.

  Cheap checks run here (linear-time string work); undecided pairs go to `pool` (default:
  `default_pool()`), whose worker processes run sympy and math-verify under a hard per-item timeout.
  """
  if len(completions) != len(golds):
    raise ValueError(f"verify_batch: {len(completions)} completions != {len(golds)} golds")
  rewards = np.zeros(len(completions), np.float32)
  worker_items, worker_requests = [], []
  for i, (completion, gold) in enumerate(zip(completions, golds)):
    request = _prepare(completion, gold)
    if request is None:
      continue
    try:
      cheap = _cheap(request[0], request[1], request[4])
    except RecursionError:
      continue
    if cheap is None:
      worker_items.append(i)
      worker_requests.append(request[:4])
    else:
      rewards[i] = float(cheap)
  if worker_requests:
    results = (pool or default_pool()).map(worker_requests)
    rewards[worker_items] = np.asarray(results, np.float32)
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

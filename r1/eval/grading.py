"""Grading sampled completions: correctness per sample and the answer vote behind cons@k (R1 §3).

Each example is graded by its `PromptExample.verifier`: "math" goes to `r1.rewards.math` (batched,
math-verify and sympy in its worker pool), a synthetic task's name to that task's verifier
(`r1.data.tasks.get_verifier`): the same routing as the training reward.
"""

from collections.abc import Sequence

import numpy as np

from r1.data import tasks as tasks_lib
from r1.eval import metrics
from r1.rewards import accuracy
from r1.rewards import math as math_lib


def _synthetic_ok(verify, answer: str, gold: str, meta: dict) -> bool:
  # Synthetic verifiers assume a well-formed gold (int(gold)); in a vote the "gold" is another
  # sample's answer, so a malformed one means "not the same answer", not a crash.
  try:
    return bool(verify(answer, gold, meta))
  except (ValueError, TypeError, KeyError, ArithmeticError):
    return False


def check_verifier(verifier: str) -> None:
  """Raises ValueError unless `verifier` is one that evaluation can grade (before any sampling)."""
  if verifier != "math" and verifier not in tasks_lib.TASKS:
    raise ValueError(f"cannot grade verifier {verifier!r}: evaluation knows 'math' and the synthetic "
                     f"tasks {sorted(tasks_lib.TASKS)}")


def grade(completions: Sequence[str], examples: Sequence, pool=None
          ) -> tuple[np.ndarray, list[str | None]]:
  """Grades each completion against its example with the example's verifier.

  Args:
    completions: N response texts (stop token already stripped).
    examples: N PromptExample (one per completion; repeat an example for its k samples).
    pool: the sympy pool for "math" (default: `r1.rewards.math.default_pool()`).
  Returns:
    (correct bool[N], answers: the N extracted answers, None where there is none).
  """
  if len(completions) != len(examples):
    raise ValueError(f"grade: {len(completions)} completions != {len(examples)} examples")
  for ex in examples:
    check_verifier(ex.verifier)
  answers = [math_lib.extract_answer(c) for c in completions]
  # The same routing as the training reward (math: batched sympy over the pool; tasks: theirs).
  correct = accuracy.accuracy_reward(list(completions), list(examples), pool=pool) > 0.5
  return correct, answers


def _distinct_pairs(answers: Sequence[str | None]) -> list[tuple[str, str]]:
  """Ordered pairs (earlier, later) of the distinct non-None answers, in first-appearance order."""
  distinct = list(dict.fromkeys(a for a in answers if a is not None))
  return [(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1:]]


def answer_equivalence(groups: Sequence[Sequence[str | None]], examples: Sequence, pool=None
                       ) -> list[dict[tuple[str, str], bool]]:
  """For each problem, whether each pair of its distinct answers is the same answer.

  Two answers are the same when the problem's verifier accepts each one with the other as gold
  (both directions, so the relation is symmetric: Countdown's verifier ignores the gold and
  accepts any expression reaching the target, so there all correct answers are one vote and
  each wrong expression its own). Math pairs of every problem go to one batched verify call.

  Args:
    groups: P lists of extracted answers (the k samples of each problem).
    examples: P PromptExample.
  Returns:
    P dicts {(a, b): bool} over the ordered pairs of `_distinct_pairs(groups[p])`.
  """
  out = [dict() for _ in groups]
  math_keys, math_preds, math_golds = [], [], []
  for p, (answers, ex) in enumerate(zip(groups, examples)):
    check_verifier(ex.verifier)
    for a, b in _distinct_pairs(answers):
      if ex.verifier == "math":
        math_keys.append((p, a, b))
        # The answer side is wrapped so the verifier re-extracts exactly `a` (a bare multi-line
        # answer would otherwise extract to None).
        math_preds += [f"<answer>{b}</answer>", f"<answer>{a}</answer>"]
        math_golds += [a, b]
      else:
        verify = tasks_lib.get_verifier(ex.verifier)
        out[p][(a, b)] = (_synthetic_ok(verify, b, a, ex.meta)
                          and _synthetic_ok(verify, a, b, ex.meta))
  if math_keys:
    ok = math_lib.verify_batch(math_preds, math_golds, pool=pool).reshape(-1, 2) > 0.5
    for (p, a, b), both in zip(math_keys, ok):
      out[p][(a, b)] = bool(both.all())
  return out


def consensus(answers: Sequence[Sequence[str | None]], correct, examples: Sequence,
              pool=None) -> tuple[np.ndarray, list[str | None], np.ndarray]:
  """cons@k per problem: majority vote over answers grouped by `answer_equivalence`.

  Two answers are one vote when `answer_equivalence` says so, or when both were graded correct:
  verifiers assume a canonical gold (`int(gold)`), so "1,000" fails as the gold of "1000" though
  both equal the real gold. The voted group's answer is graded by its first sample's correctness
  (ties: the group whose first sample is earliest; see `metrics.majority_vote`).

  Args:
    answers: P lists of k extracted answers. correct: bool[P, k]. examples: P PromptExample.
  Returns:
    (cons_correct bool[P], voted answer per problem (None: no answers), votes int[P]).
  """
  correct = np.asarray(correct, bool)
  tables = answer_equivalence(answers, examples, pool)
  cons_correct = np.zeros(len(answers), bool)
  voted, votes = [], np.zeros(len(answers), np.int64)
  for p, (row, table) in enumerate(zip(answers, tables)):
    right = {a for a, ok in zip(row, correct[p]) if ok and a is not None}
    winner, votes[p] = metrics.majority_vote(
        row, lambda a, b, t=table, r=right: t[(a, b)] or (a in r and b in r))
    voted.append(None if winner is None else row[winner])
    cons_correct[p] = winner is not None and bool(correct[p, winner])
  return cons_correct, voted, votes

"""Evaluation metrics as pure functions of graded samples (no JAX, no model).

  pass_at_k(n, c, k)             unbiased pass@k from n samples with c correct (Chen et al. 2021)
  pass_at_1_mean(correct)        R1's pass@1: correctness averaged over the k samples, then problems
  majority_vote(answers, same)   cons@k's vote, answers grouped by an equivalence predicate
  bootstrap_ci / wilson_interval confidence intervals
  length_stats(lengths, stopped) response-length summary

Shapes: P problems, k samples per problem; `correct: bool[P, k]` has row p = problem p.
"""

from collections.abc import Callable, Sequence

import numpy as np


def pass_at_k(n, c, k: int):
  """Unbiased pass@k estimator: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, eq. 1).

  Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the binomials (they overflow
  float64 for n in the hundreds).

  Args:
    n: samples per problem, int or int[P].
    c: correct samples, int or int[P], 0 <= c <= n.
    k: the k of pass@k, 1 <= k <= min(n).
  Returns:
    float for scalar n and c, else f64[P]: probability that at least one of k samples drawn
    without replacement from the n is correct.
  """
  n_arr, c_arr = np.broadcast_arrays(np.asarray(n, np.int64), np.asarray(c, np.int64))
  if np.any(c_arr < 0) or np.any(c_arr > n_arr):
    raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n!r}, c={c!r}")
  if not 1 <= k <= int(n_arr.min(initial=k)):
    raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n!r}")
  out = np.empty(n_arr.shape, np.float64)
  for idx in np.ndindex(n_arr.shape):
    ni, ci = int(n_arr[idx]), int(c_arr[idx])
    if ni - ci < k:  # Every k-subset holds a correct sample.
      out[idx] = 1.0
    else:
      i = np.arange(ni - ci + 1, ni + 1, dtype=np.float64)
      out[idx] = 1.0 - float(np.prod(1.0 - k / i))
  return float(out) if out.ndim == 0 else out


def pass_at_k_values(k: int) -> list[int]:
  """The k's reported for k samples: powers of two below k, then k itself (k=6 -> [1, 2, 4, 6])."""
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  values, j = [], 1
  while j < k:
    values.append(j)
    j *= 2
  return values + [k]


def _check_correct(correct) -> np.ndarray:
  correct = np.asarray(correct)
  if correct.ndim != 2 or correct.shape[1] < 1:
    raise ValueError(f"correct must be bool[P, k] with k >= 1, got shape {correct.shape}")
  return correct.astype(np.float64)


def per_problem_pass_at_1(correct) -> np.ndarray:
  """correct: bool[P, k] -> f64[P], each problem's fraction of correct samples."""
  return _check_correct(correct).mean(axis=1)


def pass_at_1_mean(correct) -> float:
  """R1's pass@1 (R1 §3, "Evaluation Setup"): correctness averaged over the k samples of each
  problem, then over problems. correct: bool[P, k]. Equals mean_p pass_at_k(k, c_p, 1)."""
  scores = per_problem_pass_at_1(correct)
  return float(scores.mean()) if scores.size else 0.0


def mean_pass_at_k(correct, k: int) -> float:
  """Unbiased pass@k averaged over problems. correct: bool[P, n] with n >= k samples each."""
  correct = _check_correct(correct)
  if not correct.shape[0]:
    return 0.0
  n = correct.shape[1]
  c = correct.sum(axis=1).astype(np.int64)
  return float(np.mean(pass_at_k(np.full(c.shape, n), c, k)))


def majority_vote(answers: Sequence[str | None],
                  same: Callable[[str, str], bool]) -> tuple[int | None, int]:
  """cons@k's vote: the sample whose answer most samples agree with.

  Answers are grouped greedily in sample order: each answer joins the first group whose
  representative (its first answer) it is `same` as, else starts a new group. Identical strings
  are always one group without calling `same`. None (no extractable answer) casts no vote.

  Tie-break: among groups with the most votes, the one whose first sample comes earliest wins,
  so the vote is a deterministic function of the sample order.

  Args:
    answers: the k extracted answers of one problem, in sample order.
    same: same(representative, answer) -> bool, an equivalence judged by the verifier.
  Returns:
    (index of the winning group's first sample, its vote count), or (None, 0) when no sample
    has an answer.
  """
  reps: list[int] = []   # Sample index of each group's representative.
  votes: list[int] = []
  for i, answer in enumerate(answers):
    if answer is None:
      continue
    for g, r in enumerate(reps):
      if answers[r] == answer or same(answers[r], answer):
        votes[g] += 1
        break
    else:
      reps.append(i)
      votes.append(1)
  if not reps:
    return None, 0
  best = max(range(len(reps)), key=lambda g: (votes[g], -reps[g]))
  return reps[best], votes[best]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion (z=1.96: 95%). Assumes independent trials."""
  if trials <= 0:
    return 0.0, 1.0
  if not 0 <= successes <= trials:
    raise ValueError(f"wilson_interval: need 0 <= successes <= trials, got {successes}/{trials}")
  p = successes / trials
  denom = 1 + z * z / trials
  centre = (p + z * z / (2 * trials)) / denom
  half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
  return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_ci(scores, confidence: float = 0.95, num_resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval for the mean of per-problem scores f[P].

  For pass@1 the problem is the unit to resample: the k samples of one problem are correlated, so
  an interval over all P*k samples as independent trials (Wilson) would be too narrow.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1:
    raise ValueError(f"bootstrap_ci: scores must be f[P], got shape {scores.shape}")
  if not scores.size:
    return 0.0, 1.0
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, scores.size, size=(num_resamples, scores.size))
  means = scores[idx].mean(axis=1)
  alpha = (1 - confidence) / 2
  return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def length_stats(lengths, stopped) -> dict[str, float]:
  """Response lengths in tokens. lengths: int[N] (stop token included), stopped: bool[N]
  (False: cut off at max_new_tokens)."""
  lengths = np.asarray(lengths, np.float64)
  stopped = np.asarray(stopped, bool)
  if lengths.shape != stopped.shape:
    raise ValueError(f"length_stats: lengths {lengths.shape} != stopped {stopped.shape}")
  if not lengths.size:
    return {"mean_length": 0.0, "max_length": 0.0, "p50_length": 0.0, "truncated_frac": 0.0}
  return {"mean_length": float(lengths.mean()), "max_length": float(lengths.max()),
          "p50_length": float(np.median(lengths)), "truncated_frac": float(1.0 - stopped.mean())}

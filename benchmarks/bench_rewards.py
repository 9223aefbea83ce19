"""Graded completions per second for the math reward on MATH-500-style answers.

Builds completions from MATH-500: each problem's reference solution (its `\\boxed{}` is correct),
the same solution with the box swapped for another problem's gold (wrong), and a bare answer in
a form only sympy can match (`1\\cdot(gold)`). Grades them with `verify_batch` on a pool of
--workers processes (2 by default: the 2-core target) and, if installed, with math-verify.

    python benchmarks/bench_rewards.py                 # prints a table, then one JSON line
    python benchmarks/bench_rewards.py --repeat 3 --workers 2
"""

import argparse
import json
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from r1.rewards import latex  # noqa: E402
from r1.rewards import math as math_reward  # noqa: E402
from r1.rewards import workers  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[1] / "r1" / "data" / "datasets" / "math500.jsonl"


def build_cases(seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:
  rows = [json.loads(line) for line in open(DATA)]
  golds = [row["answer"] for row in rows]
  rng = random.Random(seed)
  others = [golds[rng.randrange(len(golds))] for _ in golds]
  wrong = [row["solution"][:row["solution"].rfind("\\boxed")] + f"\\boxed{{{o}}}."
           for row, o in zip(rows, others)]
  # The same value in a form only sympy can match: 1 \cdot (gold).
  alt = [f"<think>...</think><answer>1\\cdot({latex.normalize(g)})</answer>"
         if latex.normalize(g) and "," not in g and "\\begin" not in g else g for g in golds]
  return {
      "reference solutions (right)": ([row["solution"] for row in rows], golds),
      "swapped boxes (mostly wrong)": (wrong, golds),
      "bare golds vs gold": (golds, golds),
      "rewritten forms (sympy path)": (alt, golds),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--repeat", type=int, default=2)
  args = parser.parse_args()

  pool = workers.SympyPool(num_workers=args.workers)
  pool.map([("x+1", "1+x")] * args.workers)  # Start-up is not part of the measurement.
  cases = build_cases()
  rows, results = [], {}
  for name, (completions, golds) in cases.items():
    best, rewards = float("inf"), None
    for _ in range(args.repeat):
      start = time.perf_counter()
      rewards = math_reward.verify_batch(completions, golds, pool=pool)
      best = min(best, time.perf_counter() - start)
    rate = len(completions) / best
    rows.append((name, len(completions), float(rewards.mean()), best, rate))
    results[name] = round(rate, 1)
  all_c = [c for cs, _ in cases.values() for c in cs]
  all_g = [g for _, gs in cases.values() for g in gs]
  start = time.perf_counter()
  math_reward.verify_batch(all_c, all_g, pool=pool)
  overall = len(all_c) / (time.perf_counter() - start)
  pool.close()

  mv_rate = None
  try:
    import math_verify  # noqa: F401  Optional comparison only.
  except ImportError:
    mv_note = "math-verify not installed: comparison skipped"
  else:
    start = time.perf_counter()
    for c, g in zip(all_c, all_g):
      math_verify.verify(math_verify.parse(g), math_verify.parse(c))
    mv_rate = len(all_c) / (time.perf_counter() - start)
    mv_note = f"math-verify (1 process): {mv_rate:.1f} completions/s"

  print(f"{'case':34s} {'n':>5s} {'reward':>7s} {'sec':>7s} {'compl/s':>9s}")
  for name, n, mean, sec, rate in rows:
    print(f"{name:34s} {n:5d} {mean:7.3f} {sec:7.3f} {rate:9.1f}")
  print(f"{'all (mixed)':34s} {len(all_c):5d} {'':7s} {len(all_c) / overall:7.3f} {overall:9.1f}")
  print(f"workers={args.workers} timeouts={pool.num_timeouts}; {mv_note}")
  print(json.dumps({"benchmark": "math_reward", "workers": args.workers,
                    "completions_per_s": round(overall, 1), "per_case": results,
                    "timeouts": pool.num_timeouts, "math_verify_per_s": mv_rate}))


if __name__ == "__main__":
  main()

"""Hostile strings never freeze the trainer: the in-process string work is linear, the rest is timed.

The ReDoS this guards against: `_TRAILING_UNIT` (a regex with nested quantifiers over the answer's
tail) took 4 s in `latex.normalize` on "12" + " square units" * 19, doubling with each repeat.
"""

import os
import random
import time

import pytest

from r1.rewards import latex
from r1.rewards import math as math_reward

# Per call of the trainer-side work (extract, normalise, structure, cheap comparison). A linear
# scan of a 1 MB completion takes milliseconds; the budget leaves room for a loaded CI machine.
IN_PROCESS_BUDGET_S = 0.5
GOLD = "\\frac{7}{13}"  # A value none of the generated strings can spell.
PWNED = "/tmp/r1_fuzz_pwned"

_TOKENS = ["12", " square units", " cm", "^2", " ", "\\frac", "{", "}", "(", ")", "[", "]", "\\sqrt",
           "\\boxed{", "\\left(", "\\right)", "=", ",", "\\text{", "$", "\\$", "<answer>", "</answer>",
           "####", "the answer is ", "\\\\", "&", "\\begin{pmatrix}", "\\end{pmatrix}", "\\pm", "%",
           "x", "e", "10^{", "!", "\\cup", "\\{", "\\}", ".", "-", "+", "\\infty", "\\", "\n", "\x00"]


def _hostile_strings(seed: int, n: int) -> list[str]:
  """Repetitions, deep nesting, long digit runs and unbalanced brackets, seeded."""
  rng = random.Random(seed)
  out = ["12" + " square units" * 19, "12" + " square units" * 70, "1" + " cm" * 300 + " x",
         "\\boxed{" + "(" * 5000, "\\frac{" * 3000, "9" * 100_000, "\\boxed{" + "9" * 100_000 + "}",
         "{" * 50_000 + "}" * 49_999, "1," * 400, "\\sqrt" * 2000 + "2", "x=" * 400,
         f"\\boxed{{__import__('os').system('touch {PWNED}')}}",
         f"<answer>__import__('os').system('touch {PWNED}')</answer>",
         f"The answer is $(lambda: __import__('os').system('touch {PWNED}'))()$"]
  while len(out) < n:
    kind = rng.randrange(4)
    if kind == 0:  # One token repeated.
      out.append(rng.choice(_TOKENS) * rng.randrange(10, 5000))
    elif kind == 1:  # Nesting: k opens, a payload, maybe fewer closes.
      opener = rng.choice(["{", "(", "\\frac{", "\\sqrt{", "\\boxed{", "\\left(", "\\text{", "10^{"])
      depth = rng.randrange(10, 3000)
      closer = {"(": ")", "\\left(": "\\right)"}.get(opener, "}")
      out.append(opener * depth + "3" + closer * rng.randrange(0, depth + 1))
    elif kind == 2:  # Digit runs with separators and units.
      run = "".join(rng.choice("0123456789") for _ in range(rng.randrange(50, 3000)))
      out.append(rng.choice(["", "\\boxed{", "$"]) + run + rng.choice(["", " square units" * 30, ",000" * 50]))
    else:  # Random token soup.
      out.append("".join(rng.choice(_TOKENS) for _ in range(rng.randrange(5, 800))))
  return out


def test_redos_trailing_units_is_linear():
  for repeats in (19, 70):
    start = time.monotonic()
    assert latex.normalize("12" + " square units" * repeats) == "12"
    assert time.monotonic() - start < 0.05
  assert latex.normalize("12 square units") == "12"
  assert latex.normalize("5 cm^2") == "5"
  assert latex.normalize("7 sq. ft") == "7"
  assert latex.normalize("x units") == "x units"  # Not after a number: a unit word is kept.


def test_fuzz_in_process_work_is_fast():
  slow = []
  for s in _hostile_strings(seed=0, n=400):
    for completion in (s, f"<think>{s}</think><answer>{s}</answer>"):
      start = time.monotonic()
      request = math_reward._prepare(completion, GOLD)
      if request is not None:
        try:
          math_reward._cheap(request[0], request[1], request[4])
        except RecursionError:
          pass  # verify_batch scores a RecursionError "not equal".
      elapsed = time.monotonic() - start
      if elapsed > IN_PROCESS_BUDGET_S:
        slow.append((completion[:60], round(elapsed, 2)))
  assert slow == []



def test_fuzz_end_to_end_is_false_fast_and_executes_nothing(grading_pool):
  if os.path.exists(PWNED):
    os.remove(PWNED)
  strings = _hostile_strings(seed=1, n=60)
  for s in strings:
    start = time.monotonic()
    assert math_reward.verify_batch([s], [GOLD], pool=grading_pool)[0] == 0.0, s[:80]
    assert time.monotonic() - start < 5.0, s[:80]
  assert not os.path.exists(PWNED)
  assert grading_pool.map([("2x", "x+x")]) == [True]  # The pool still grades afterwards.

"""The field's grader (Hugging Face math-verify) as a second opinion. Runs ONLY in sympy workers.

math-verify is what TRL and open-r1 grade with: its extraction finds answers r1's does not (an
answer in `$...$` after "Answer", "The final answer is $x$. I hope it is correct.", answers split
over several `\\boxed{}`), and its comparison knows relations, matrices in any bracket style,
unordered solution sets, thousands separators and `pct`. r1 accepts a completion when either r1's
own comparison or math-verify's says equal (`symbolic.grade`), so the grader is at least as good as
either alone on what each gets right.

Why it runs here and not in the trainer: its timeout is SIGALRM-based (it raises in threads and
cannot stop a C-level big-integer power), so it is called with its timeouts off, inside the worker
process that `workers.SympyPool` kills at the item's deadline.

Why a numeric veto on top: math-verify compares numbers after rounding to `float_rounding` digits,
through Python floats. A value too big or too small for that (`10^{10^{10}}`, `(10^8)!`,
`10^{-400}`) is not compared safely there, so a pair of plain numbers math-verify calls equal is
accepted only when both sides, evaluated by mpmath at 30 digits (no float conversion), are finite
(or the same infinity), zero only together, and, outside [1e-15, 1e15], equal under r1's relative
tolerance (`equivalence.REL_TOL`). Everything is "not equal" on any error.
"""

import itertools
import logging
import re

import sympy

from r1.rewards import symbolic
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# math-verify warns once that its timeouts are off: here the worker's hard kill is the timeout.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# The answer's `\boxed{}` first, as R1's template and MATH ask; then any LaTeX; then plain numbers.
_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_FLOAT_ROUNDING = 6  # math-verify's default: decimals kept when comparing numbers.
_FLOAT_SAFE = sympy.Integer(10) ** 15  # Beyond this (or below its inverse) floats lose the digits.


_PLAIN_NUMBER = re.compile(r"[\d\s.,%+-]+")
_LETTER = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[A-Za-z]{4,}")  # A word of prose, not a variable or a unit like `pct`.


def _delimited(text: str) -> bool:
  return any(d in text for d in ("$", "\\(", "\\[", "\\boxed", "\\fbox"))


def _as_gold_text(gold: str) -> str:
  """A gold in `$...$` (so `\\frac{1}{2}`, `x \\geq 5` and `2, 3` are read whole), except a plain
  number, which stays bare so that `1,22` is the decimal math-verify reads it as."""
  if _delimited(gold) or (_PLAIN_NUMBER.fullmatch(gold) and ", " not in gold):
    return gold
  return "$" + gold.strip() + "$"


def _as_pred_text(pred: str) -> str:
  """A bare one-line answer (`\\left( 3, \\frac{\\pi}{2} \\right)`, `... = 0`, `2k+2`, `1+274i`) is read
  whole: in `$...$`, or math-verify's plain-number fallback picks the `3`, the `0` or the `2` out of
  it. Prose ("so the answer is 1,000.99m²") and bare numbers (`1 000`) stay as they are: there the
  fallback is the field's rule (the last number)."""
  line = pred.strip()
  if _delimited(pred) or "\n" in line:
    return pred
  if (any(c in line for c in "\\{}^_=") or
      (_LETTER.search(line) and not _WORD.search(line))):
    return "$" + line + "$"
  return pred


def _value(expr) -> sympy.Basic | None:
  """expr evaluated to 30 digits when it is a plain number (no symbols, not a set/relation)."""
  if not isinstance(expr, sympy.Expr) or expr.free_symbols:
    return None
  return sympy.N(expr.doit(), 30)  # doit: math-verify keeps `28 pct` as an unevaluated 28*(1/100).


def numerically_sane(gold, pred) -> bool:
  """False when gold and pred are numbers that math-verify's float rounding cannot compare."""
  vg, vp = _value(gold), _value(pred)
  if vg is None and vp is None:
    return True
  if vg is None or vp is None:
    return True  # One side is not a plain number: math-verify's structural comparison decides.
  finite_g, finite_p = vg.is_finite is True, vp.is_finite is True
  if not (finite_g and finite_p):
    # oo == oo; 1/0 (zoo) and 0/0 (nan) equal nothing, as in symbolic._expressions_equal.
    return (not finite_g and not finite_p) and bool(vg == vp) and vg in (sympy.oo, -sympy.oo)
  if vg != 0 and vp != 0:
    big, small = sympy.Max(sympy.Abs(vg), sympy.Abs(vp)), sympy.Min(sympy.Abs(vg), sympy.Abs(vp))
    if big <= _FLOAT_SAFE and small >= 1 / _FLOAT_SAFE:
      return True  # In float range: math-verify's rounding (and its percent rule, 28% = 0.28) stands.
  return symbolic.numbers_close(vg, vp)  # r1's policy: zero only equals zero, then REL_TOL.


def answers_equal(pred_text: str, gold_text: str) -> bool:
  """math-verify's verdict on a completion's answer text against a gold answer. Never raises.

  Args:
    pred_text: what the completion commits to (the `<answer>` content, or the whole completion).
    gold_text: the gold answer (bare, or in `$...$` / `\\boxed{}`).
  """
  try:
    golds = parse(_as_gold_text(gold_text), _EXTRACTION, parsing_timeout=None)
    preds = parse(_as_pred_text(pred_text), _EXTRACTION, parsing_timeout=None)
    for gold, pred in itertools.product(golds, preds):
      if (verify(gold, pred, float_rounding=_FLOAT_ROUNDING, timeout_seconds=None)
          and numerically_sane(gold, pred)):
        return True
  except Exception:  # Parser and sympy errors of every type mean "not shown equal".
    return False
  return False

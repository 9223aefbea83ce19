"""sympy side of math grading. Runs ONLY inside worker processes under a hard timeout.

sympy can run forever (`9^{9^{9^9}}` asks for a number with 10^8 digits to the 9th power) and
cannot be interrupted from Python, so `workers.py` kills the process instead. Nothing here uses
`eval`/`sympify` on untrusted text: LaTeX goes through the antlr4 grammar (`parse_latex`, strict).
"""

import functools

import sympy
from sympy.parsing.latex import parse_latex

from r1.rewards import equivalence
from r1.rewards import latex

# parse_latex reads these as plain symbols; in answers they are the constants.
_CONSTANTS = {sympy.Symbol("pi"): sympy.pi, sympy.Symbol("e"): sympy.E, sympy.Symbol("i"): sympy.I}


@functools.lru_cache(maxsize=4096)  # A gold is parsed once per group of G completions, not G times.
def to_sympy(s: str) -> sympy.Basic | None:
  """Normalised LaTeX -> sympy expression, or None when the strict parser rejects it."""
  s = s.rstrip("%")
  if not s or "**" in s:
    return None
  try:
    expr = parse_latex(s, strict=True)
  except Exception:  # LaTeXParsingError, antlr errors, sympy errors in the converter.
    return None
  return expr.xreplace(_CONSTANTS)


def numbers_close(va: sympy.Basic, vb: sympy.Basic) -> bool:
  """The numeric policy on two finite values that mpmath evaluated (`sympy.N`, 30 digits).

  No conversion to Python floats: `complex()` of `10^{10^{10}}` is inf, and inf <= tol * inf made a
  power tower equal to every gold. Zero equals only zero (`10^{-400}` is not 0).
  """
  if va == 0 or vb == 0:
    return bool(va == vb)
  return bool(sympy.Abs(va - vb) <= _REL_TOL * sympy.Max(sympy.Abs(va), sympy.Abs(vb)))


_REL_TOL = sympy.Rational(equivalence.REL_TOL.numerator, equivalence.REL_TOL.denominator)
_INFINITIES = (sympy.oo, -sympy.oo)
_NOT_FINITE = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)


def _expressions_equal(a: sympy.Basic, b: sympy.Basic) -> bool:
  if a == b:
    return True
  if isinstance(a, sympy.Rel) or isinstance(b, sympy.Rel):
    if type(a) is not type(b):
      return False
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    if isinstance(a, sympy.Eq):  # Same equation up to a nonzero constant factor.
      if sympy.simplify(db) == 0:
        return sympy.simplify(da) == 0
      ratio = sympy.simplify(da / db)
      return ratio != 0 and not ratio.free_symbols and ratio.is_finite is True
    return sympy.simplify(da - db) == 0
  if not a.free_symbols and not b.free_symbols:
    # Evaluate first (mpmath: fast even for power towers); simplify() of `9^{9^{9}}` never ends.
    va, vb = sympy.N(a, 30), sympy.N(b, 30)
    if va in _NOT_FINITE or vb in _NOT_FINITE:
      return va == vb and va in _INFINITIES  # oo == oo; 1/0 (zoo) and 0/0 (nan) equal nothing.
    if va.is_number and vb.is_number and va.is_finite and vb.is_finite:
      return numbers_close(va, vb)
  if sympy.simplify(a - b) == 0:
    return True
  return a.equals(b) is True


def symbolic_scalar_equal(a: str, b: str) -> bool:
  """Full scalar comparison: cheap checks first, then sympy. Never raises."""
  cheap = equivalence.cheap_scalar_equal(a, b)
  if cheap is not None:
    return cheap
  ea, eb = to_sympy(equivalence.strip_parens(a)), to_sympy(equivalence.strip_parens(b))
  if ea is None or eb is None:
    return False
  try:
    return bool(_expressions_equal(ea, eb))
  except Exception:  # sympy raises a zoo of types on odd input; any of them means "not shown equal".
    return False


def answers_equal(pred: str, gold: str) -> bool:
  """Equivalence of two *normalised* answers, structure included."""
  result = equivalence.structures_equal(
      latex.structure(pred), latex.structure(gold), symbolic_scalar_equal)
  return result is True


_FLOAT_RANGE = sympy.Integer(10) ** 300


def _beyond_float_range(answer: str) -> bool:
  """True for a constant whose value is not finite or lies outside [1e-300, 1e300] (nonzero)."""
  if latex.structure(answer)[0] != "scalar":
    return False
  expr = to_sympy(equivalence.strip_parens(answer))
  if expr is None or expr.free_symbols:
    return False
  try:
    value = sympy.Abs(sympy.N(expr, 30))
    if value.is_finite is not True:
      return value.is_number
    return bool(value > _FLOAT_RANGE or (value != 0 and value < 1 / _FLOAT_RANGE))
  except Exception:  # Cannot evaluate: leave the verdict to the comparisons.
    return False


def grade(pred: str | None, gold: str | None, pred_text: str | None = None,
          gold_text: str | None = None) -> bool:
  """Worker-side entry point: r1's comparison of the normalised answers, else math-verify's.

  Args:
    pred, gold: `latex.normalize`d answers (None where r1 extracted none).
    pred_text, gold_text: the raw answer text and gold for math-verify (None: r1's check only).
  """
  if pred and gold:
    if answers_equal(pred, gold):
      return True
    if _beyond_float_range(pred) or _beyond_float_range(gold):
      return False  # math-verify would evaluate `10^{10^{10}}` exactly (a hang) or through floats.
  if pred_text is None or gold_text is None:
    return False
  from r1.rewards import math_verify_grader  # Imported by the workers only (math-verify is slow to load).
  return math_verify_grader.answers_equal(pred_text, gold_text)

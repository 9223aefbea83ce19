"""sympy side of math grading. Runs ONLY inside worker processes under a hard timeout.

sympy can run forever (`9^{9^{9^9}}` asks for a number with 10^8 digits to the 9th power) and
cannot be interrupted from Python, so `workers.py` kills the process instead. Nothing here uses
`eval`/`sympify` on untrusted text: LaTeX goes through the antlr4 grammar (`parse_latex`, strict).
"""

import sympy
from sympy.parsing.latex import parse_latex

from r1.rewards import equivalence
from r1.rewards import latex

# parse_latex reads these as plain symbols; in answers they are the constants.
_CONSTANTS = {sympy.Symbol("pi"): sympy.pi, sympy.Symbol("e"): sympy.E, sympy.Symbol("i"): sympy.I}


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


def _numbers_close(a: sympy.Basic, b: sympy.Basic) -> bool:
  """The numeric policy on two constant expressions, evaluated by mpmath at 30 digits.

  No conversion to Python floats: `complex()` of `10^{10^{10}}` is inf, and inf <= tol * inf made a
  power tower equal to every gold. A value that is not finite equals nothing here (the caller
  compares infinities structurally); zero equals only zero (`10^{-400}` is not 0).
  """
  va, vb = sympy.N(a, 30), sympy.N(b, 30)
  if not (va.is_number and vb.is_number) or va.is_finite is not True or vb.is_finite is not True:
    return False
  if va == 0 or vb == 0:
    return bool(va == vb)
  tolerance = sympy.Rational(equivalence.REL_TOL.numerator, equivalence.REL_TOL.denominator)
  return bool(sympy.Abs(va - vb) <= tolerance * sympy.Max(sympy.Abs(va), sympy.Abs(vb)))


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
    if a.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or b.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
      sa, sb = sympy.simplify(a), sympy.simplify(b)
      return sa == sb and sa is not sympy.nan  # nan (0/0, oo - oo) is equal to nothing.
    try:
      return _numbers_close(a, b)
    except (TypeError, ValueError):
      pass
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


def grade(pred: str | None, gold: str | None, pred_text: str | None = None,
          gold_text: str | None = None) -> bool:
  """Worker-side entry point: r1's comparison of the normalised answers, else math-verify's.

  Args:
    pred, gold: `latex.normalize`d answers (None where r1 extracted none).
    pred_text, gold_text: the raw answer text and gold for math-verify (None: r1's check only).
  """
  if pred and gold and answers_equal(pred, gold):
    return True
  if pred_text is None or gold_text is None:
    return False
  from r1.rewards import math_verify_grader  # Imported by the workers only (math-verify is slow to load).
  return math_verify_grader.answers_equal(pred_text, gold_text)

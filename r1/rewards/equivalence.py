"""Cheap answer equivalence: exact strings, numbers, answer structure. No sympy here.

Every comparison is three-valued: True, False, or None for "cannot tell without sympy". The trainer
process runs these on every completion; only the None cases go to a sympy worker (`workers.py`).

Numeric policy (stated once, used everywhere):
  * integers, decimals, fractions (`a/b`, `\\frac{a}{b}`), mixed numbers (`2\\frac{1}{2}`) and
    scientific notation (`1.5e3`, `1.5\\times10^{3}`) are read as exact rationals;
  * two integer literals must be identical (no tolerance: 1000000 != 1000001);
  * otherwise values match within relative tolerance REL_TOL = 1e-6 (so 0.5 == 1/2 and
    1.4142136 == sqrt(2), but 0.33 != 1/3);
  * a percentage `p%` matches both p and p/100 (MATH golds drop the `%` inconsistently, and a
    probability may be written either way); two percentages compare as p vs q.
"""

from fractions import Fraction
import re

from r1.rewards import latex

REL_TOL = Fraction(1, 10**6)  # Exact: a float tolerance turned `10^{400}` into an OverflowError.
_MAX_EXPONENT = 400  # 10**400 is cheap; a bigger literal exponent goes to the timed sympy path.

_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIGNED = r"[+-]?" + _DEC
_NUMBER_PATTERNS = (
    ("frac", re.compile(r"([+-]?)\\frac\{(" + _SIGNED + r")\}\{(" + _SIGNED + r")\}")),
    ("mixed", re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")),
    ("slash", re.compile(r"(" + _SIGNED + r")/(" + _SIGNED + r")")),
    ("sci", re.compile(r"(" + _SIGNED + r")(?:\\times|\\cdot|\*|x)10\^\{?([+-]?\d+)\}?")),
    ("pow10", re.compile(r"([+-]?)10\^\{?([+-]?\d+)\}?")),
    ("dec", re.compile(r"(" + _SIGNED + r")(?:[eE]([+-]?\d+))?")),
)


def _exp10(k: str) -> Fraction | None:
  k = int(k)
  return Fraction(10) ** k if abs(k) <= _MAX_EXPONENT else None


def parse_number(s: str) -> tuple[Fraction, bool, bool] | None:
  """Reads a normalised answer as (value, is_percent, is_integer_literal); None if not a number."""
  percent = s.endswith("%")
  if percent:
    s = s[:-1]
  if len(s) > 200:
    return None
  for kind, pattern in _NUMBER_PATTERNS:
    m = pattern.fullmatch(s)
    if not m:
      continue
    g = m.groups()
    if kind == "frac":
      num, den = Fraction(g[1]), Fraction(g[2])
      if den == 0:
        return None
      value = -num / den if g[0] == "-" else num / den
      return value, percent, False
    if kind == "mixed":
      if int(g[3]) == 0:
        return None
      value = int(g[1]) + Fraction(int(g[2]), int(g[3]))
      return (-value if g[0] == "-" else value), percent, False
    if kind == "slash":
      den = Fraction(g[1])
      return (None if den == 0 else (Fraction(g[0]) / den, percent, False))
    if kind == "sci":
      scale = _exp10(g[1])
      return None if scale is None else (Fraction(g[0]) * scale, percent, False)
    if kind == "pow10":
      scale = _exp10(g[1])
      return None if scale is None else ((-scale if g[0] == "-" else scale), percent, False)
    if g[1] is not None:
      scale = _exp10(g[1])
      return None if scale is None else (Fraction(g[0]) * scale, percent, False)
    return Fraction(g[0]), percent, re.fullmatch(r"[+-]?\d+", g[0]) is not None
  return None


def _close(a: Fraction, b: Fraction, exact: bool) -> bool:
  if a == b:
    return True
  if exact:
    return False
  return abs(a - b) <= REL_TOL * max(abs(a), abs(b))  # Fractions throughout: no float overflow.


def numbers_equal(a: tuple[Fraction, bool, bool], b: tuple[Fraction, bool, bool]) -> bool:
  """Applies the module's numeric policy to two parse_number results."""
  (va, pa, ia), (vb, pb, ib) = a, b
  exact = ia and ib and not (pa or pb)
  if pa == pb:
    return _close(va, vb, exact)
  if pa:  # a is the percentage.
    return _close(va, vb, False) or _close(va / 100, vb, False)
  return _close(va, vb, False) or _close(va, vb / 100, False)


_WORD = re.compile(r"[A-Za-z][A-Za-z ]*")


def strip_parens(s: str) -> str:
  """`((3))` -> `3`: parentheses around a whole scalar do not change its value."""
  while len(s) > 2 and s[0] == "(" and s[-1] == ")" and latex.outer_pair(s):
    s = s[1:-1]
  return s


def cheap_scalar_equal(a: str, b: str) -> bool | None:
  """Equivalence of two normalised scalar answers without sympy; None when undecided."""
  a, b = strip_parens(a), strip_parens(b)
  if a == b:
    return True
  na, nb = parse_number(a), parse_number(b)
  if na is not None and nb is not None:
    return numbers_equal(na, nb)
  if _WORD.fullmatch(a) and _WORD.fullmatch(b) and max(len(a), len(b)) >= 4:
    # Text answers (`Evelyn`, `even`, `ellipse`): case-insensitive words, not products of symbols.
    return a.lower() == b.lower()
  if re.fullmatch(r"[A-E]", a) and re.fullmatch(r"[A-E]", b):
    return False  # Different multiple-choice letters (a == b was handled above).
  return None


def _unwrap(s):
  while s[0] == "unordered" and len(s[1]) == 1:
    s = s[1][0]
  return s


def _all(results) -> bool | None:
  results = list(results)
  if any(r is False for r in results):
    return False
  return True if all(r is True for r in results) else None


def _matching(n: int, edge) -> bool:
  """Perfect bipartite matching on an n x n relation (Kuhn's algorithm; n is tiny)."""
  match = [-1] * n

  def augment(i, seen):
    for j in range(n):
      if edge(i, j) and not seen[j]:
        seen[j] = True
        if match[j] < 0 or augment(match[j], seen):
          match[j] = i
          return True
    return False

  return all(augment(i, [False] * n) for i in range(n))


def structures_equal(a, b, scalar_equal) -> bool | None:
  """Compares two `latex.structure` trees with a three-valued scalar comparator.

  Tuples and intervals compare in order with identical brackets; sets, unions and answer lists
  compare as multisets; matrices need equal shapes.
  """
  a, b = _unwrap(a), _unwrap(b)
  if a[0] != b[0]:
    return False
  kind = a[0]
  if kind == "scalar":
    return scalar_equal(a[1], b[1])
  if kind == "matrix":
    if [len(r) for r in a[1]] != [len(r) for r in b[1]]:
      return False
    return _all(scalar_equal(x.strip(), y.strip())
                for ra, rb in zip(a[1], b[1]) for x, y in zip(ra, rb))
  if kind == "ordered":
    if a[1] != b[1] or len(a[2]) != len(b[2]):
      return False
    return _all(structures_equal(x, y, scalar_equal) for x, y in zip(a[2], b[2]))
  items_a, items_b = a[1], b[1]
  n = len(items_a)
  if n != len(items_b):
    return False
  table = [[structures_equal(x, y, scalar_equal) for y in items_b] for x in items_a]
  if _matching(n, lambda i, j: table[i][j] is True):
    return True
  if not _matching(n, lambda i, j: table[i][j] is not False):
    return False
  return None

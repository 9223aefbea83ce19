"""Multi-digit arithmetic: `a op b` with a chosen number of digits, and its column-method working.

For CPU-scale R1-Zero repros: the answer is checkable exactly and difficulty grows smoothly with
the digit count. The worked solution (column addition/subtraction with carries and borrows, long
multiplication by partial products) is the cold-start SFT response a from-scratch model needs.
"""

import dataclasses

import numpy as np

from r1.data.sources import PromptExample

_OP_NAMES = {"+": "add", "-": "subtract", "*": "multiply"}


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
  """`a op b` with each operand of `min_digits`..`max_digits` digits.

  Attributes:
    min_digits, max_digits: operand length range (difficulty knob).
    ops: the operators to draw from, a subset of "+-*". Subtraction puts the larger operand first,
      so answers are never negative.
  """
  min_digits: int = 1
  max_digits: int = 3
  ops: str = "+-*"
  name = "arithmetic"

  def __post_init__(self):
    if not 1 <= self.min_digits <= self.max_digits:
      raise ValueError(f"arithmetic digits: need 1 <= min_digits ({self.min_digits}) <= "
                       f"max_digits ({self.max_digits})")
    if not self.ops or set(self.ops) - set(_OP_NAMES):
      raise ValueError(f"arithmetic ops {self.ops!r}: expected a non-empty subset of '+-*'")

  def example(self, seed: int, index: int) -> PromptExample:
    """Example `index` of the stream for `seed`; random access, the same on every host."""
    rng = np.random.default_rng([seed, index])
    a, b = (_random_number(rng, self.min_digits, self.max_digits) for _ in range(2))
    op = self.ops[rng.integers(len(self.ops))]
    if op == "-" and b > a:
      a, b = b, a
    gold = {"+": a + b, "-": a - b, "*": a * b}[op]
    return PromptExample(id=f"arithmetic:{seed}:{index}", prompt=f"What is {a} {op} {b}?",
                         gold=str(gold), verifier=self.name, meta={"a": a, "b": b, "op": op})

  def worked_solution(self, example: PromptExample) -> tuple[str, str]:
    """(step-by-step column working, the answer it ends at)."""
    a, b, op = example.meta["a"], example.meta["b"], example.meta["op"]
    working = {"+": column_addition, "-": column_subtraction, "*": long_multiplication}[op]
    return working(a, b), example.gold

  @staticmethod
  def verify(answer: str, gold: str, meta: dict | None = None) -> bool:
    return verify_integer(answer, gold, meta)


def verify_integer(answer: str, gold: str, meta: dict | None = None) -> bool:
  """True iff `answer` is an integer (commas and spaces allowed) equal to `gold`."""
  del meta
  text = answer.strip().replace(",", "").replace(" ", "")
  if text.startswith("-"):
    digits = text[1:]
  else:
    digits = text
  if not digits.isdigit() or not digits.isascii() or len(digits) > 100:
    return False
  return int(text) == int(gold)


def _random_number(rng: np.random.Generator, min_digits: int, max_digits: int) -> int:
  digits = int(rng.integers(min_digits, max_digits + 1))
  low = 10 ** (digits - 1) if digits > 1 else 0
  return int(rng.integers(low, 10 ** digits))


_PLACES = ("ones", "tens", "hundreds", "thousands")


def _place(i: int) -> str:
  return _PLACES[i] if i < len(_PLACES) else f"10^{i}"


def _digits(n: int, width: int) -> list[int]:
  """Least significant first, zero-padded to `width`."""
  return [(n // 10 ** i) % 10 for i in range(width)]


def column_addition(a: int, b: int) -> str:
  width = max(len(str(a)), len(str(b)))
  lines, carry = [f"{a} + {b}: add the columns from the right."], 0
  for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
    total = x + y + carry
    lines.append(f"{_place(i)}: {x} + {y} + {carry} = {total}, write {total % 10}, carry {total // 10}")
    carry = total // 10
  if carry:
    lines.append(f"write the final carry {carry}")
  lines.append(f"so {a} + {b} = {a + b}")
  return "\n".join(lines)


def column_subtraction(a: int, b: int) -> str:
  """a - b for a >= b, with borrows."""
  width = len(str(a))
  lines, borrow = [f"{a} - {b}: subtract the columns from the right."], 0
  for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
    top = x - borrow
    if top < y:
      lines.append(f"{_place(i)}: {x} - {borrow} = {top} < {y}, borrow: {top + 10} - {y} = "
                   f"{top + 10 - y}, write {top + 10 - y}")
      borrow = 1
    else:
      lines.append(f"{_place(i)}: {x} - {borrow} - {y} = {top - y}, write {top - y}")
      borrow = 0
  lines.append(f"so {a} - {b} = {a - b}")
  return "\n".join(lines)


def long_multiplication(a: int, b: int) -> str:
  """a * b: one partial product per digit of b (each digit by digit), then their running sum."""
  lines = [f"{a} * {b}: multiply {a} by each digit of {b}, then add."]
  partials = []
  for i, y in enumerate(_digits(b, len(str(b)))):
    carry, out = 0, []
    for j, x in enumerate(_digits(a, len(str(a)))):
      product = x * y + carry
      out.append(f"{x} * {y} + {carry} = {product}")
      carry = product // 10
    partial = a * y * 10 ** i
    shift = f", shifted {i} places = {partial}" if i else ""
    lines.append(f"{_place(i)} digit {y}: " + "; ".join(out) + f"; so {a} * {y} = {a * y}{shift}")
    partials.append(partial)
  total = partials[0]
  for partial in partials[1:]:
    lines.append(f"{total} + {partial} = {total + partial}")
    total += partial
  lines.append(f"so {a} * {b} = {total}")
  return "\n".join(lines)

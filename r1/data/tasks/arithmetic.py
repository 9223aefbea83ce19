"""Multi-digit arithmetic: `a op b` with a chosen number of digits, and its column-method working.

For CPU-scale R1-Zero repros: the answer is checkable exactly and difficulty grows smoothly with
the digit count. The worked solution (column addition/subtraction with carries and borrows, long
multiplication by partial products) is the cold-start SFT response a from-scratch model needs.

`slip_rate` makes that cold-start data imperfect on purpose, as human-written data is: each carry
or borrow is forgotten with that probability (the classic slip of column arithmetic: the next
column adds 0 instead of 1, or does not take the borrowed 1), and the working goes on consistently
to a wrong final answer. A policy fine-tuned on it forgets carries at the same rate; imitation
cannot tell the slips from the rest, a verifiable reward can (the tiny R1-Zero repro uses this).
"""

import dataclasses
import re
import zlib

import numpy as np

from r1.data.sources import PromptExample

_OP_NAMES = {"+": "add", "-": "subtract", "*": "multiply"}
# grader -> the PromptExample.verifier that r1.rewards.accuracy and r1.eval.grading route by.
_GRADERS = {"exact": "arithmetic", "math": "math"}


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
  """`a op b` with each operand of `min_digits`..`max_digits` digits.

  Attributes:
    min_digits, max_digits: operand length range (difficulty knob).
    ops: the operators to draw from, a subset of "+-*". Subtraction puts the larger operand first,
      so answers are never negative.
    slip_rate: the probability that a worked solution (of + and -) forgets a carry or borrow, per
      carry or borrow, the working going on consistently to the answer it ends at. The prompts'
      gold answers stay right. 0 (the default) gives exact working.
    grader: how the prompts' answers are checked. "exact" (the default): the answer the completion
      commits to (`<answer>`, `\\boxed{}`, "the answer is ...") must be the integer. "math": the
      field's grader, as GSM8K is graded (r1.rewards.math, math-verify on the `<answer>` block or
      else the completion's tail), which also accepts a pretrained chat model's "3 + 5 = 8".
  """
  min_digits: int = 1
  max_digits: int = 3
  ops: str = "+-*"
  slip_rate: float = 0.0
  grader: str = "exact"
  name = "arithmetic"

  def __post_init__(self):
    if not 1 <= self.min_digits <= self.max_digits:
      raise ValueError(f"arithmetic digits: need 1 <= min_digits ({self.min_digits}) <= "
                       f"max_digits ({self.max_digits})")
    if not self.ops or set(self.ops) - set(_OP_NAMES):
      raise ValueError(f"arithmetic ops {self.ops!r}: expected a non-empty subset of '+-*'")
    if not 0.0 <= self.slip_rate <= 1.0:
      raise ValueError(f"arithmetic slip_rate={self.slip_rate}: expected a fraction in [0, 1]")
    if self.grader not in _GRADERS:
      raise ValueError(f"arithmetic grader {self.grader!r}: expected one of {sorted(_GRADERS)}")

  def example(self, seed: int, index: int) -> PromptExample:
    """Example `index` of the stream for `seed`; random access, the same on every host."""
    rng = np.random.default_rng([seed, index])
    a, b = (_random_number(rng, self.min_digits, self.max_digits) for _ in range(2))
    op = self.ops[rng.integers(len(self.ops))]
    if op == "-" and b > a:
      a, b = b, a
    gold = {"+": a + b, "-": a - b, "*": a * b}[op]
    return PromptExample(id=f"arithmetic:{seed}:{index}", prompt=f"What is {a} {op} {b}?",
                         gold=str(gold), verifier=_GRADERS[self.grader], meta={"a": a, "b": b, "op": op})

  def worked_solution(self, example: PromptExample) -> tuple[str, str]:
    """(step-by-step column working, the answer it ends at): exact, or with a slip (slip_rate)."""
    a, b, op = example.meta["a"], example.meta["b"], example.meta["op"]
    if op == "*" or not self.slip_rate:
      working = {"+": column_addition, "-": column_subtraction, "*": long_multiplication}[op]
      return working(a, b), example.gold
    # Where this example slips is a function of its id, so every epoch, host and resumed run
    # sees the same data. Column i forgets the carry/borrow coming from column i - 1.
    rng = np.random.default_rng(zlib.crc32(example.id.encode()))
    width = max(len(str(a)), len(str(b)))
    forget = {i for i, u in enumerate(rng.random(width + 1)) if u < self.slip_rate}
    working = (column_addition if op == "+" else column_subtraction)(a, b, forget=forget)
    return working, str(_worked_result(working))

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


def _worked_result(working: str) -> int:
  """The number a worked solution ends at (its last line is `so ... = N`)."""
  return int(working.rsplit("= ", 1)[1])


def column_addition(a: int, b: int, forget: set[int] = frozenset()) -> str:
  """a + b column by column; the carry into each column in `forget` is forgotten (index `width`
  is the final carry)."""
  width = max(len(str(a)), len(str(b)))
  lines, carry, digits = [f"{a} + {b}: add the columns from the right."], 0, []
  for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
    carry = 0 if i in forget else carry
    total = x + y + carry
    lines.append(f"{_place(i)}: {x} + {y} + {carry} = {total}, write {total % 10}, carry {total // 10}")
    digits.append(total % 10)
    carry = total // 10
  if carry and width not in forget:
    lines.append(f"write the final carry {carry}")
    digits.append(carry)
  result = sum(d * 10 ** i for i, d in enumerate(digits))
  lines.append(f"so {a} + {b} = {result}")
  return "\n".join(lines)


_COLUMN_SUM = re.compile(r"(\d+) \+ (\d+) \+ (\d+) = (\d+)")
_CARRY_HANDOVER = re.compile(r"carry (\d+)\n[\w^]+: \d+ \+ \d+ \+ (\d+)")


def addition_working_errors(completion: str) -> dict[str, int]:
  """What is wrong in a completion's column-addition working (the format of `column_addition`).

  Returns {"false_columns": lines `x + y + c = t` whose sum is false (e.g. `2 + 5 + 0 = 8`: a carry
  added but not written), "dropped_carries": a column's `carry k` not the carry added in the next
  column}. Both 0 for correct working, whatever the final answer; an outcome reward sees neither.
  """
  false_columns = sum(int(x) + int(y) + int(c) != int(t) for x, y, c, t in _COLUMN_SUM.findall(completion))
  dropped = sum(out != into for out, into in _CARRY_HANDOVER.findall(completion))
  return {"false_columns": false_columns, "dropped_carries": dropped}


def column_subtraction(a: int, b: int, forget: set[int] = frozenset()) -> str:
  """a - b for a >= b, with borrows; the borrow owed by each column in `forget` is forgotten."""
  width = len(str(a))
  lines, borrow, digits = [f"{a} - {b}: subtract the columns from the right."], 0, []
  for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
    borrow = 0 if i in forget else borrow
    top = x - borrow
    if top < y:
      lines.append(f"{_place(i)}: {x} - {borrow} = {top} < {y}, borrow: {top + 10} - {y} = "
                   f"{top + 10 - y}, write {top + 10 - y}")
      digits.append(top + 10 - y)
      borrow = 1
    else:
      lines.append(f"{_place(i)}: {x} - {borrow} - {y} = {top - y}, write {top - y}")
      digits.append(top - y)
      borrow = 0
  result = sum(d * 10 ** i for i, d in enumerate(digits))
  lines.append(f"so {a} - {b} = {result}")
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

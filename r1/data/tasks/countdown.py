"""The Countdown game: reach a target from given numbers with + - * / (each number at most once).

The task TinyZero used to show R1-Zero-style emergent search at small scale. Answers are verified by
evaluating the expression safely: parsed with `ast`, only integer literals, the four operators and
parentheses allowed, each literal one of the given numbers (no number used more often than given),
evaluated with exact fractions. Never `eval`.
"""

import ast
import dataclasses
import fractions

import numpy as np

from r1.data.sources import PromptExample

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
# Longer answers than this are not a plausible solution; refusing them bounds the parser's work.
_MAX_ANSWER_CHARS = 256


@dataclasses.dataclass(frozen=True)
class CountdownTask:
  """Countdown puzzles built backwards from a random expression, so each has a solution.

  Attributes:
    min_numbers, max_numbers: how many numbers are given (difficulty knob).
    max_number: numbers are drawn from 1..max_number.
    max_target: targets are in 1..max_target (and never one of the given numbers).
    max_trace_steps: the worked search trace shows at most this many tried moves; past it the
      trace is cut to the path that reached the target.
  """
  min_numbers: int = 3
  max_numbers: int = 4
  max_number: int = 20
  max_target: int = 100
  max_trace_steps: int = 48
  name = "countdown"

  def __post_init__(self):
    if not 2 <= self.min_numbers <= self.max_numbers:
      raise ValueError(f"countdown: need 2 <= min_numbers ({self.min_numbers}) <= max_numbers "
                       f"({self.max_numbers})")
    if self.max_number < 2 or self.max_target < 2:
      raise ValueError(f"countdown: max_number ({self.max_number}) and max_target "
                       f"({self.max_target}) must be >= 2")

  def example(self, seed: int, index: int) -> PromptExample:
    """Example `index` of the stream for `seed`; random access, the same on every host."""
    rng = np.random.default_rng([seed, index])
    while True:
      count = int(rng.integers(self.min_numbers, self.max_numbers + 1))
      numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=count)]
      target, expression = _random_expression(rng, numbers)
      if target is not None and 1 <= target <= self.max_target and target not in numbers:
        break
    prompt = (f"Using the numbers {numbers}, create an equation that equals {target}. You can use "
              "basic arithmetic operations (+, -, *, /) and each number can be used at most once.")
    return PromptExample(id=f"countdown:{seed}:{index}", prompt=prompt, gold=expression,
                         verifier=self.name, meta={"numbers": numbers, "target": target})

  def worked_solution(self, example: PromptExample) -> tuple[str, str]:
    """(a depth-first search trace over pairwise combinations, the solution it ends at)."""
    numbers, target = example.meta["numbers"], example.meta["target"]
    lines, steps = [], [0]
    path = _search(target, [(fractions.Fraction(n), str(n)) for n in numbers], lines, steps,
                   self.max_trace_steps, 0)
    if path is None:
      # Too long (or, with a different search order, not found): show the known solution's path.
      lines = [f"the search is long; build {example.gold} directly"]
      path = example.gold
    trace = "\n".join([f"reach {target} from {numbers}"] + lines + [f"so {path} = {target}"])
    return trace, path

  @staticmethod
  def verify(answer: str, gold: str, meta: dict) -> bool:
    del gold  # Any expression that reaches the target is right, not only the stored one.
    return verify_countdown(answer, meta["numbers"], meta["target"])


def verify_countdown(answer: str, numbers: list[int], target: int) -> bool:
  """True iff `answer` (optionally followed by `= target`) uses `numbers` at most once each and
  evaluates exactly to `target`. Never raises on bad input."""
  text = answer.strip()
  if "=" in text:
    text, rhs = text.split("=", 1)
    if rhs.strip() != str(target):
      return False
  if not text.strip() or len(text) > _MAX_ANSWER_CHARS:
    return False
  try:
    tree = ast.parse(text.strip(), mode="eval")
  except (SyntaxError, ValueError):
    return False
  used = []
  try:
    value = _evaluate(tree.body, used)
  except (ValueError, ZeroDivisionError):
    return False
  available = list(numbers)
  for n in used:
    if n not in available:
      return False
    available.remove(n)
  return value == target


def _evaluate(node: ast.AST, used: list[int]) -> fractions.Fraction:
  """Exact value of an expression of integer literals and + - * /; records literals in `used`."""
  if isinstance(node, ast.Constant) and type(node.value) is int:  # pylint: disable=unidiomatic-typecheck
    used.append(node.value)
    return fractions.Fraction(node.value)
  if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
    left, right = _evaluate(node.left, used), _evaluate(node.right, used)
    if isinstance(node.op, ast.Add):
      return left + right
    if isinstance(node.op, ast.Sub):
      return left - right
    if isinstance(node.op, ast.Mult):
      return left * right
    return left / right
  raise ValueError(f"not allowed in a Countdown answer: {ast.dump(node)}")


def _random_expression(rng: np.random.Generator, numbers: list[int]):
  """Combines a random subset (>= 2) of `numbers` pairwise with random ops, keeping every
  intermediate a positive integer. Returns (value, expression) or (None, None)."""
  k = int(rng.integers(2, len(numbers) + 1))
  items = [(n, str(n)) for n in rng.permutation(numbers)[:k].tolist()]
  while len(items) > 1:
    (a, ea), (b, eb) = items.pop(), items.pop()
    if a < b:
      (a, ea), (b, eb) = (b, eb), (a, ea)
    op = "+-*/"[int(rng.integers(4))]
    if op == "-" and a == b or op == "/" and (b == 1 or a % b):
      op = "+"  # Keep intermediates positive integers, and divisions non-trivial.
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    items.insert(0, (value, f"{_wrap(ea)} {op} {_wrap(eb)}"))
  return items[0]


def _wrap(expression: str) -> str:
  return f"({expression})" if " " in expression else expression


def _search(target, items, lines, steps, max_steps, depth):
  """Depth-first search, closest results tried first; logs each tried move into `lines`.

  items: [(Fraction value, expression str)]. steps: [moves tried so far], shared by the recursion.
  Returns the solving expression, or None if there is none within `max_steps` moves.
  """
  for value, expression in items:
    if value == target:
      return expression
  if len(items) < 2:
    return None
  moves, seen = [], set()
  for i in range(len(items)):
    for j in range(len(items)):
      if i == j:
        continue
      (a, ea), (b, eb) = items[i], items[j]
      for op in "+-*/":
        if op in "+*" and i > j or op == "-" and a < b or op == "/" and (b == 0 or a < b):
          continue  # Commutative duplicates and negative/fractional detours are not explored.
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        if value.denominator != 1:
          continue
        shown = f"{a} {op} {b} = {value}"
        if shown in seen:
          continue  # Repeated given numbers would repeat the same subtree.
        seen.add(shown)
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
        moves.append((abs(value - target), f"{_wrap(ea)} {op} {_wrap(eb)}", value, rest,
                      shown))
  moves.sort(key=lambda m: m[0])
  for _, expression, value, rest, shown in moves:
    steps[0] += 1
    if steps[0] > max_steps:
      return None
    remaining = sorted(int(v) for v, _ in rest + [(value, expression)])
    lines.append(f"{'  ' * depth}try {shown}, left {remaining}")
    found = _search(target, rest + [(value, expression)], lines, steps, max_steps, depth + 1)
    if found is not None:
      return found
  return None

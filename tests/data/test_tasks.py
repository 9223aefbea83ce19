"""Synthetic tasks: verifiers agree with golds and worked solutions; the verifier is safe."""

import ast
import re

import pytest

from r1.data import tasks, templates
from r1.data.tasks import countdown

_RESPONSE = re.compile(r"^ <think>(.*)</think> <answer>(.*)</answer>$", re.DOTALL)


@pytest.mark.parametrize("name, knobs", [
    ("arithmetic", {"min_digits": 1, "max_digits": 5}),
    ("arithmetic", {"min_digits": 3, "max_digits": 3, "ops": "*"}),
    ("countdown", {"min_numbers": 3, "max_numbers": 4}),
    ("countdown", {"min_numbers": 5, "max_numbers": 5, "max_number": 50, "max_trace_steps": 8}),
])
def test_verifier_agrees_with_gold_and_worked_solution(name, knobs):
  task = tasks.make_task(name, **knobs)
  verify = tasks.get_verifier(name)
  template = templates.get_template("r1_zero")
  for i in range(150):
    example = task.example(seed=7, index=i)
    assert example.verifier == name
    assert verify(example.gold, example.gold, example.meta), example
    match = _RESPONSE.match(tasks.sft_example(task, example, template).response)
    assert match, example
    reasoning, answer = match.groups()
    assert verify(answer, example.gold, example.meta), (example, reasoning)


def test_arithmetic_golds_are_the_arithmetic():
  task = tasks.ArithmeticTask(min_digits=2, max_digits=4)
  for i in range(200):
    e = task.example(0, i)
    a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", e.prompt).groups()
    a, b = int(a), int(b)
    assert 2 <= len(str(a)) <= 4 and 2 <= len(str(b)) <= 4
    assert int(e.gold) == {"+": a + b, "-": a - b, "*": a * b}[op] >= 0
    wrong = str(int(e.gold) + 1)
    assert not task.verify(wrong, e.gold)


def test_arithmetic_worked_steps_are_correct():
  # Every "x op y [op z] = w" the working writes must itself be true arithmetic.
  task = tasks.ArithmeticTask(min_digits=3, max_digits=4)
  checked = 0
  for i in range(60):
    text, answer = task.worked_solution(task.example(1, i))
    assert text.endswith(f"= {answer}")
    for expression, value in re.findall(r"((?:\d+ [-+*] )+\d+) = (\d+)", text):
      assert countdown._evaluate(ast.parse(expression, mode="eval").body, []) == int(value), \
          (text, expression, value)
      checked += 1
  assert checked > 60 * 4


def test_arithmetic_slips_forget_carries_and_borrows_consistently():
  # slip_rate: each carry/borrow forgotten with that probability; every column of the working stays
  # true arithmetic, the answer is off by a sum of distinct powers of ten (the forgotten carries),
  # the gold stays right, and the same example always slips the same way.
  exact = tasks.ArithmeticTask(min_digits=1, max_digits=3, ops="+-")
  noisy = tasks.ArithmeticTask(min_digits=1, max_digits=3, ops="+-", slip_rate=0.5)
  carries, forgotten = 0, 0
  for i in range(400):
    example = noisy.example(3, i)
    assert example == exact.example(3, i)
    text, answer = noisy.worked_solution(example)
    assert (text, answer) == noisy.worked_solution(example)
    exact_text, _ = exact.worked_solution(example)
    assert text.endswith(f"= {answer}") and (answer == example.gold) == (text == exact_text)
    column_lines = "\n".join(text.splitlines()[1:-1])  # The last line states the (wrong) result.
    for expression, value in re.findall(r"((?:\d+ [-+] )+\d+) = (\d+)", column_lines):
      assert countdown._evaluate(ast.parse(expression, mode="eval").body, []) == int(value), (text, expression)
    error = abs(int(answer) - int(example.gold))
    assert error == 0 or (error % 10 == 0 and set(str(error)) <= {"0", "1"}), (text, example.gold)
    lines = exact_text.splitlines()
    carries += sum("carry 1" in line or "borrow:" in line for line in lines[1:-1])
    forgotten += len(re.findall(r"\+ 1 =|- 1 ", exact_text)) - len(re.findall(r"\+ 1 =|- 1 ", text))
    forgotten += ("final carry" in exact_text) and ("final carry" not in text)
  assert 0.4 < forgotten / carries < 0.6, (forgotten, carries)
  with pytest.raises(ValueError, match="slip_rate"):
    tasks.ArithmeticTask(slip_rate=1.5)


@pytest.mark.parametrize("answer, ok", [
    ("1,234", True), (" 1234 ", True), ("1234.0", False), ("12a4", False), ("", False),
    ("-1234", False), ("１２３４", False),
])
def test_integer_verifier(answer, ok):
  assert tasks.verify_integer(answer, "1234") is ok


@pytest.mark.parametrize("answer, ok", [
    ("(3 + 5) * 7 - 34", True),   # = 22
    ("(3+5)*7-34 = 22", True),
    ("(3 + 5) * 7 - 34 = 23", False),
    ("7 * 3 + 1", False),         # 1 is not given.
    ("5 * 5 - 3", False),         # 5 used twice but given once.
    ("34 - 7 - 5", True),         # = 22; not every number must be used.
    ("3 * 7 + 5 / 5", False),     # 5 twice.
    ("7 * (5 - 3) ** 2", False),  # ** not allowed.
    ("-3 + 25", False),           # unary minus and 25 not allowed.
    ("__import__('os').system('true')", False),
    ("abs(34)", False),
    ("34 / (5 - 5)", False),      # Division by zero, and 5 twice.
    ("7.0 * 3 + 1", False),
    ("", False),
    ("(" * 300 + "3" + ")" * 300, False),
])
def test_countdown_verifier(answer, ok):
  assert tasks.verify_countdown(answer, [3, 5, 7, 34], 22) is ok


def test_countdown_division_is_exact():
  assert tasks.verify_countdown("(6 / 4) * 2", [6, 4, 2], 3)
  assert not tasks.verify_countdown("6 / 4", [6, 4], 1)  # 1.5, no rounding.
  assert tasks.verify_countdown("5 * 5 - 3", [5, 5, 3], 22)  # Duplicates given, duplicates allowed.


def test_countdown_puzzles_respect_knobs():
  task = tasks.CountdownTask(min_numbers=4, max_numbers=4, max_number=9, max_target=50)
  for i in range(100):
    e = task.example(3, i)
    numbers, target = e.meta["numbers"], e.meta["target"]
    assert len(numbers) == 4 and all(1 <= n <= 9 for n in numbers)
    assert 1 <= target <= 50 and target not in numbers
    assert f"{numbers}" in e.prompt and f"equals {target}." in e.prompt


def test_generation_is_deterministic_and_seeded():
  for name in ("arithmetic", "countdown"):
    task = tasks.make_task(name)
    assert task.example(0, 5) == task.example(0, 5)
    assert [task.example(0, i).prompt for i in range(20)] != \
        [task.example(1, i).prompt for i in range(20)]
  src = tasks.SyntheticSource(tasks.make_task("countdown"), size=10, seed=2)
  assert len(src) == 10 and src[3] == tasks.make_task("countdown").example(2, 3)
  with pytest.raises(IndexError):
    src[10]


def test_bad_knobs_and_names():
  with pytest.raises(ValueError, match="ops '/'"):
    tasks.ArithmeticTask(ops="/")
  with pytest.raises(ValueError, match="min_digits"):
    tasks.ArithmeticTask(min_digits=3, max_digits=2)
  with pytest.raises(ValueError, match="min_numbers"):
    tasks.CountdownTask(min_numbers=1)
  with pytest.raises(ValueError, match="unknown synthetic task 'sudoku'"):
    tasks.make_task("sudoku")
  with pytest.raises(ValueError, match="no synthetic verifier 'math'"):
    tasks.get_verifier("math")


def test_addition_working_errors_see_false_columns_and_dropped_carries():
  from r1.data.tasks import arithmetic  # pylint: disable=g-import-not-at-top
  right = arithmetic.column_addition(58, 67)
  assert arithmetic.addition_working_errors(right) == {"false_columns": 0, "dropped_carries": 0}
  # The cold-start slip: the carry is forgotten, every line's sum stays true.
  slip = arithmetic.column_addition(58, 67, forget={1})
  assert arithmetic.addition_working_errors(slip) == {"false_columns": 0, "dropped_carries": 1}
  # GRPO's shortcut: the carry is added to the total but written as 0.
  shortcut = right.replace("5 + 6 + 1 = 12", "5 + 6 + 0 = 12")
  assert arithmetic.addition_working_errors(shortcut) == {"false_columns": 1, "dropped_carries": 1}


def test_arithmetic_math_grader_routes_to_the_fields_grader():
  from r1.rewards import accuracy  # pylint: disable=g-import-not-at-top
  exact = tasks.ArithmeticTask(min_digits=1, max_digits=2, ops="+")
  graded = tasks.ArithmeticTask(min_digits=1, max_digits=2, ops="+", grader="math")
  e, g = exact.example(0, 3), graded.example(0, 3)
  assert (e.prompt, e.gold, e.meta) == (g.prompt, g.gold, g.meta)   # the same problems
  assert (e.verifier, g.verifier) == ("arithmetic", "math")
  a, b = g.meta["a"], g.meta["b"]
  completions = [
      f"{a} + {b} = {a + b}",                                      # what a chat model writes
      f"<think>{a} plus {b}</think> <answer>{a + b}</answer>",
      f"{a} + {b} = {a + b + 1}",
      " ".join(str(n) for n in range(200)),                        # listing numbers games nothing
      f"<answer>{a + b - 1}</answer> so maybe {a + b}",            # the committed answer counts
  ]
  got = accuracy.accuracy_reward(completions, [g] * len(completions))
  assert got.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
  # The exact grader wants the committed integer only.
  assert accuracy.accuracy_reward(completions, [e] * len(completions)).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
  with pytest.raises(ValueError, match="grader 'sympy'"):
    tasks.ArithmeticTask(grader="sympy")

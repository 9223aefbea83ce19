"""Code reward: run a candidate Python program against test cases in a sandbox.

Test cases (in `example["tests"]`), two styles:
  stdin/stdout:  {"input": "1 2\\n", "output": "3\\n"}      (whitespace-insensitive comparison)
  function call: {"fn_name": "add", "args": [1, 2], "expected": 3}   (JSON-equal result)
Reward: fraction of tests passed, or 1/0 all-or-nothing (`all_or_nothing=True`). Every
(completion, test) pair is one sandboxed run; all of a batch's runs share one pool of
`SandboxLimits.max_parallel` workers (default: the CPU count).

The sandbox (r1/rewards/sandbox.py) fails closed: namespaces and a per-run uid as root, bubblewrap
with user namespaces otherwise, a self-test on first use, and `SandboxUnavailableError` (saying
what is missing) where neither works. A candidate never runs as the trainer's uid outside a
sandbox, and never sees the gold outputs, the project checkout or the data directories.

`validate_tests` rejects rows this reward cannot score (no tests, a test without an output); the
prompt loader calls it for code prompts, so a bad row fails at load time with its file:line.
"""

import concurrent.futures
import json
import os
import re

import numpy as np

from r1.rewards.sandbox import (RunResult, SandboxLimits, SandboxUnavailableError,  # noqa: F401
                                program_python, run_program)

_CALL_HARNESS = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())  # `python -I` leaves the script dir off sys.path.
with open("call.json") as f:
  call = json.load(f)
import solution
result = getattr(solution, call["fn_name"])(*call["args"])
sys.stdout.write("\n" + json.dumps(result) + "\n")
"""


def validate_tests(tests) -> None:
  """Raises ValueError naming the first test this reward cannot score (callers add file:line)."""
  if not isinstance(tests, list) or not tests:
    raise ValueError(f"code tests: expected a non-empty list of test cases, got {tests!r:.80}")
  for i, test in enumerate(tests):
    if not isinstance(test, dict):
      raise ValueError(f"code test {i}: expected a dict with 'input'/'output' or 'fn_name'/'args'/"
                       f"'expected', got {type(test).__name__} {test!r:.80}")
    if "fn_name" in test:
      if not isinstance(test["fn_name"], str) or not test["fn_name"]:
        raise ValueError(f"code test {i}: 'fn_name' must be a non-empty string")
      if "expected" not in test:
        raise ValueError(f"code test {i}: function-call test has no 'expected' (keys "
                         f"{sorted(test)})")
      if not isinstance(test.get("args", []), list):
        raise ValueError(f"code test {i}: 'args' is {type(test['args']).__name__}, expected a list")
    else:
      if test.get("output") is None:
        raise ValueError(f"code test {i}: stdin/stdout test has no 'output' (keys {sorted(test)})")
      if not isinstance(test.get("input", ""), str):
        raise ValueError(f"code test {i}: 'input' is {type(test['input']).__name__}, expected a "
                         "string")


def _passes(source: str, test: dict, limits: SandboxLimits) -> bool:
  if "fn_name" in test:
    call = json.dumps({"fn_name": test["fn_name"], "args": test.get("args", [])})
    result = run_program({"solution.py": source, "call.json": call, "harness.py": _CALL_HARNESS},
                         "harness.py", "", limits)
    if result.timed_out or result.returncode != 0:
      return False
    try:
      got = json.loads(result.stdout.rstrip("\n").rsplit("\n", 1)[-1])
    except ValueError:
      return False
    return got == json.loads(json.dumps(test["expected"]))
  result = run_program({"main.py": source}, "main.py", test.get("input", ""), limits)
  if result.timed_out or result.returncode != 0:
    return False
  return result.stdout.split() == str(test["output"]).split()


def _scores(sources: list[str], tests: list[list[dict]], limits: SandboxLimits,
            all_or_nothing: bool) -> list[float]:
  """Scores of each program on its tests, all runs in one pool (parallel across completions)."""
  for i, t in enumerate(tests):
    try:
      validate_tests(t)
    except ValueError as e:
      raise ValueError(f"example {i}: {e}") from None
  pairs = [(i, test) for i, t in enumerate(tests) for test in t]
  workers = min(len(pairs), limits.max_parallel or os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    passed = list(pool.map(lambda p: _passes(sources[p[0]], p[1], limits), pairs))
  per_program = [[] for _ in sources]
  for (i, _), ok in zip(pairs, passed):
    per_program[i].append(ok)
  if all_or_nothing:
    return [float(all(p)) for p in per_program]
  return [sum(p) / len(p) for p in per_program]


def run_tests(source: str, tests: list[dict], limits: SandboxLimits = SandboxLimits(),
              all_or_nothing: bool = False) -> float:
  """Score of one program: fraction of tests passed (or 1/0 if all_or_nothing), in [0, 1]."""
  if not tests:
    raise ValueError("run_tests: no test cases; expected a non-empty list")
  return _scores([source], [tests], limits, all_or_nothing)[0]


_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
  """The last fenced code block, else the `<answer>` content, else the completion itself."""
  blocks = _FENCE.findall(completion)
  if blocks:
    return blocks[-1]
  m = re.search(r"<answer>(.*?)(?:</answer>|$)", completion, re.DOTALL)
  return m.group(1) if m else completion


def code_reward(completions: list[str], examples: list[dict], all_or_nothing: bool = False,
                tests_key: str = "tests", limits: SandboxLimits = SandboxLimits()) -> np.ndarray:
  """Registry entry: test pass rate of each completion's program, f32[B] in [0, 1]."""
  if len(completions) != len(examples):
    raise ValueError(f"code_reward: {len(completions)} completions != {len(examples)} examples")
  if not completions:
    return np.zeros(0, np.float32)
  scores = _scores([extract_code(c) for c in completions], [ex[tests_key] for ex in examples],
                   limits, all_or_nothing)
  return np.array(scores, np.float32)

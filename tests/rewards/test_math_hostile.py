"""Hostile answers: every one is False within 5 s, raises nothing and leaves no process behind."""

import os
import time

import pytest

from r1.rewards import math as math_reward
from r1.rewards import workers
from tests.rewards.conftest import child_pids

HOSTILE = [
    ("\\boxed{9^{9^{9^{9}}}}", "0"),
    ("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{8}}}"),
    ("10**10**10**10", "10"),
    ("\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}", "1"),  # ~200 KB of nested braces.
    ("{" * 100_000 + "1", "1"),
    ("\\boxed{{{1}", "1"),
    ("\\boxed{1}}}}}", "2"),
    ("\\boxed{" * 50_000, "1"),
    ("\\boxed{1\x00}", "1"),
    ("\x00" * 1000, "0"),
    ("\\boxed{__import__('os').system('touch /tmp/r1_pwned')}", "0"),
    ("<answer>__import__('os').system('touch /tmp/r1_pwned')</answer>", "__import__"),
    ("\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}", "2"),
    ("\\boxed{\\frac{1}{0}}", "\\infty"),
    ("x" * (2 << 20), "1"),
]


@pytest.fixture(scope="module")
def pool():
  pool = workers.SympyPool(num_workers=1, timeout_s=3.0)
  pool.map([("x+1", "1+x")])  # Start the worker outside the timed region.
  yield pool
  pool.close()


@pytest.mark.parametrize("completion,gold", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_answer_is_false_fast(completion, gold, pool):
  start = time.monotonic()
  assert math_reward.verify_batch([completion], [gold], pool=pool)[0] == 0.0
  assert time.monotonic() - start < 5.0
  assert not os.path.exists("/tmp/r1_pwned")
  assert pool.map([("2x", "x+x")]) == [True]  # The pool still works afterwards.


def test_verify_default_pool_power_tower_and_no_leftover_processes():
  before = child_pids()
  assert math_reward.verify("x+1", "1+x")  # Warm the default pool.
  workers_before = set(math_reward.default_pool().pids())
  start = time.monotonic()
  assert math_reward.verify("\\boxed{9^{9^{9^{9}}}}", "0") is False
  assert time.monotonic() - start < 5.0
  killed = workers_before - set(math_reward.default_pool().pids())
  assert killed, "the worker stuck on the power tower must have been replaced"
  assert not killed & child_pids(), "killed worker must be reaped, not a zombie"
  math_reward.shutdown()
  assert child_pids() - before == set()
  assert math_reward.verify("\\sqrt{4}", "2")  # Restarts on demand after shutdown.
  math_reward.shutdown()


def test_batch_with_hostile_items_keeps_order_and_other_results(pool):
  completions = ["\\boxed{x+1}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{2\\sqrt{2}}", "\\boxed{3}"]
  golds = ["1+x", "0", "\\sqrt{8}", "4"]
  start = time.monotonic()
  rewards = math_reward.verify_batch(completions, golds, pool=pool)
  assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
  assert time.monotonic() - start < 8.0
  assert pool.num_timeouts >= 1


def test_non_string_inputs_are_false():
  assert math_reward.verify(None, "1") is False
  assert math_reward.verify("1", None) is False
  assert math_reward.extract_answer(None) is None

"""Code reward and its sandbox: correct programs pass; hostile ones are contained and score 0."""

import os
import socket
import time

import numpy as np
import pytest

from r1.rewards import code
from tests.rewards.conftest import child_pids

FAST = code.SandboxLimits(cpu_s=1, wall_s=2.0)
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="uid drop and namespaces need root (see code.py)")

ADD_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": "10"},
             {"input": "-1 1", "output": "0"}]


def sandbox_processes(grace_s: float = 5.0) -> list[int]:
  """Live processes under any per-run sandbox uid, after up to grace_s for SIGKILLs to land."""
  deadline = time.monotonic() + grace_s
  while True:
    found = []
    for entry in os.listdir("/proc"):
      if entry.isdigit():
        try:
          with open(f"/proc/{entry}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
          if fields["State"].split()[0] != "Z" and int(fields["Uid"].split()[0]) >= code._UID_BASE:
            found.append(int(entry))
        except (OSError, ValueError, KeyError):
          continue
    if not found or time.monotonic() > deadline:
      return found
    time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leftovers():
  before = child_pids()
  yield
  assert child_pids() - before == set(), "a sandbox process was left behind"
  if ROOT:
    assert sandbox_processes() == []


def test_correct_wrong_and_partial_programs():
  good = "a, b = map(int, input().split())\nprint(a + b)\n"
  assert code.run_tests(good, ADD_TESTS, FAST) == 1.0
  assert code.run_tests("print(3)", ADD_TESTS, FAST) == pytest.approx(1 / 3)
  assert code.run_tests("print(3)", ADD_TESTS, FAST, all_or_nothing=True) == 0.0
  assert code.run_tests("raise SystemExit(1)", ADD_TESTS, FAST) == 0.0
  assert code.run_tests("syntax error(", ADD_TESTS, FAST) == 0.0


def test_function_call_style():
  tests = [{"fn_name": "pair", "args": [1, 2], "expected": [1, 2]},
           {"fn_name": "pair", "args": ["a", None], "expected": ["a", None]},
           {"fn_name": "pair", "args": [1, 2], "expected": [2, 1]}]
  source = "def pair(a, b):\n  return (a, b)\n"
  assert code.run_tests(source, tests, FAST) == pytest.approx(2 / 3)
  assert code.run_tests("def other(): pass", tests, FAST) == 0.0


def test_code_reward_extracts_fenced_block_and_returns_f32():
  completions = ["<think>sum</think><answer>```python\nprint(sum(map(int, input().split())))\n```</answer>",
                 "```python\nprint(0)\n```"]
  rewards = code.code_reward(completions, [{"tests": ADD_TESTS}] * 2, limits=FAST)
  assert rewards.dtype == np.float32
  np.testing.assert_allclose(rewards, [1.0, 1 / 3])


def _contained(source: str, expected: str, limits=FAST, tests=None) -> float:
  tests = tests or [{"input": "", "output": expected}]
  return code.run_tests(source, tests, limits)


def test_infinite_loop_is_killed():
  start = time.monotonic()
  assert _contained("while True:\n  pass\nprint('done')", "done") == 0.0
  assert time.monotonic() - start < FAST.wall_s + 3
  # Sleeping uses no CPU: only the wall-clock kill stops it.
  start = time.monotonic()
  assert _contained("import time\ntime.sleep(100)\nprint('done')", "done") == 0.0
  assert time.monotonic() - start < FAST.wall_s + 3


@needs_root
def test_fork_bomb_is_contained():
  bomb = ("import os, time\nfor _ in range(10000):\n  try:\n    os.fork()\n  except OSError:\n"
          "    time.sleep(0.01)\nprint('boom')")
  start = time.monotonic()
  assert _contained(bomb, "boom") == 0.0
  assert time.monotonic() - start < FAST.wall_s + 5
  assert sandbox_processes() == []
  # A child that leaves the process group with setsid() is still found through its uid.
  escape = "import os, time\nif os.fork() == 0:\n  os.setsid()\n  time.sleep(60)\nprint('ok')"
  assert _contained(escape, "nope") == 0.0
  assert sandbox_processes() == []


def test_huge_allocation_fails():
  assert _contained("x = bytearray(10 * 1024**3)\nprint('allocated')", "allocated") == 0.0


@needs_root
def test_cannot_write_outside_its_dir(tmp_path):
  # Root-owned dirs refuse the write; world-writable /tmp and /var/tmp are private tmpfs mounts in
  # the sandbox, so a write there succeeds but never reaches the host.
  protected = [tmp_path / "escape.txt", os.path.join(os.getcwd(), "r1_escape.txt")]
  scratch = [f"/tmp/r1_escape_{os.getpid()}.txt", f"/var/tmp/r1_escape_{os.getpid()}.txt"]
  writes = "".join(
      f"try:\n  open({str(t)!r}, 'w').write('x')\n  print('escaped')\nexcept OSError:\n  pass\n"
      for t in protected)
  own = "open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n"
  tmp_writes = "".join(f"open({t!r}, 'w').write('x')\n" for t in scratch)
  result = code.run_program({"main.py": writes + tmp_writes + own}, "main.py", "", FAST)
  assert result.returncode == 0 and result.stdout.split() == ["ok"]
  assert _contained(writes + "print('escaped')", "escaped escaped escaped") == 0.0
  for target in protected + scratch:
    assert not os.path.exists(target), target


def test_file_size_limit():
  limits = code.SandboxLimits(cpu_s=1, wall_s=2.0, max_file_bytes=1 << 16)
  source = "open('big', 'wb').write(b'x' * (1 << 20))\nprint('written')"
  assert _contained(source, "written", limits) == 0.0


def test_cannot_read_parent_environment(monkeypatch):
  monkeypatch.setenv("R1_SANDBOX_SECRET", "s3cr3t-value")
  source = ("import os\nprint(os.environ.get('R1_SANDBOX_SECRET', ''))\n"
            "try:\n  print(open(f'/proc/{os.getppid()}/environ').read())\nexcept OSError:\n  pass\n"
            f"try:\n  print(open('/proc/{os.getpid()}/environ').read())\nexcept OSError:\n  pass\n")
  result = code.run_program({"main.py": source}, "main.py", "", FAST)
  assert "s3cr3t" not in result.stdout
  assert _contained(source, "s3cr3t-value") == 0.0


def test_no_network():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  server.setblocking(False)
  port = server.getsockname()[1]
  source = ("import socket\ntry:\n"
            f"  socket.create_connection(('127.0.0.1', {port}), timeout=1)\n  print('connected')\n"
            "except OSError:\n  pass\n"
            "try:\n  socket.create_connection(('8.8.8.8', 53), timeout=1)\n  print('connected')\n"
            "except OSError:\n  pass\n")
  try:
    assert _contained(source, "connected") == 0.0
    with pytest.raises(BlockingIOError):
      server.accept()  # Nobody connected to the host's loopback.
  finally:
    server.close()


@needs_root
def test_cannot_kill_parent():
  me = os.getpid()
  source = ("import os, signal\n"
            f"for pid in (os.getppid(), {me}):\n"
            "  try:\n    os.kill(pid, signal.SIGKILL)\n    print('killed')\n  except OSError:\n    pass\n"
            f"try:\n  os.killpg(os.getpgid({me}), signal.SIGKILL)\n  print('killed')\nexcept OSError:\n  pass\n"
            "try:\n  os.kill(-1, signal.SIGKILL)\nexcept OSError:\n  pass\nprint('killed')")
  assert _contained(source, "killed killed killed killed") == 0.0
  os.kill(me, 0)  # Still here.


def test_run_tests_rejects_empty_tests():
  with pytest.raises(ValueError, match="no test cases"):
    code.run_tests("print(1)", [], FAST)

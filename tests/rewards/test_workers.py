"""The sympy worker pool: order, timeouts, dead workers, and no orphans when the parent dies."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from r1.rewards import workers


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.fixture
def pool():
  pool = workers.SympyPool(num_workers=2, timeout_s=2.0)
  yield pool
  pool.close()


def test_results_in_order(pool):
  pairs = [("x+1", "1+x"), ("2", "3"), ("\\sqrt{8}", "2\\sqrt{2}"), ("x", "y")] * 5
  assert pool.map(pairs) == [True, False, True, False] * 5


def test_worker_killed_from_outside_is_replaced(pool):
  assert pool.map([("x", "x"), ("y", "y")]) == [True, True]
  victim = pool.pids()[0]
  os.kill(victim, signal.SIGKILL)
  time.sleep(0.1)
  assert pool.map([("2x", "x+x"), ("a", "b"), ("\\pi", "\\pi")]) == [True, False, True]
  assert victim not in pool.pids()


def test_timeout_kills_and_reaps_worker(pool):
  pool.map([("x", "x"), ("y", "y")])
  old = set(pool.pids())
  start = time.monotonic()
  assert pool.map([("9^{9^{9^{9}}}", "0"), ("x+x", "2x")]) == [False, True]
  assert time.monotonic() - start < pool.timeout_s + 3
  assert pool.num_timeouts == 1
  gone = old - set(pool.pids())
  assert gone and not any(_alive(pid) for pid in gone)


def test_workers_survive_a_signal_to_the_trainers_process_group(tmp_path):
  # Ctrl-C or a group SIGTERM reaches every process of the trainer's group; workers in it died with
  # their in-flight items scored False, and that step was then trained on. They have their own
  # session now; the trainer's handler decides when to stop.
  script = tmp_path / "trainer.py"
  script.write_text(textwrap.dedent(f"""
      import os, signal, sys, time
      sys.path[:0] = {sys.path!r}
      from r1.rewards import workers
      signal.signal(signal.SIGTERM, lambda *_: print("handled", flush=True))
      pool = workers.SympyPool(num_workers=2, timeout_s=5.0)
      pool.map([("x", "x"), ("y", "y")])
      pids = pool.pids()
      print(" ".join(map(str, pids)), flush=True)
      assert all(os.getsid(pid) != os.getsid(0) for pid in pids)
      os.killpg(os.getpgid(0), signal.SIGTERM)
      time.sleep(0.5)
      print(pool.map([("2x", "x+x"), ("a", "b")]), pool.pids() == pids, flush=True)
      pool.close()
  """))
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       start_new_session=True)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert lines[-2:] == ["handled", "[True, False] True"], out.stdout


def test_close_kills_everything(pool):
  pool.map([("x", "x"), ("y", "y")])
  pids = pool.pids()
  assert len(pids) == 2
  pool.close()
  assert pool.pids() == [] and not any(_alive(pid) for pid in pids)


def test_workers_die_with_a_killed_parent(tmp_path):
  # A parent SIGKILLed mid-item (no atexit, no close) must not leave its workers running.
  script = textwrap.dedent(f"""
      import sys
      sys.path[:0] = {sys.path!r}
      from r1.rewards import workers
      pool = workers.SympyPool(num_workers=1, timeout_s=100.0)
      pool.map([("x", "x")])
      print(pool.pids()[0], flush=True)
      pool.map([("9^{{9^{{9^{{9}}}}}}", "0")])
  """)
  parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
  worker = int(parent.stdout.readline())
  time.sleep(0.5)
  assert _alive(worker)
  parent.kill()
  parent.wait()
  deadline = time.monotonic() + 10
  while _alive(worker) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not _alive(worker)


def test_bad_pool_size():
  with pytest.raises(ValueError, match="num_workers=0"):
    workers.SympyPool(num_workers=0)

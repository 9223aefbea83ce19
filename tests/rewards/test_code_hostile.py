"""Hostile programs against the code sandbox, run by a separate "trainer" process.

Each suite forks a trainer (as root, or dropped to a fresh unprivileged uid) that scores the hostile
programs with `code_reward`, all in parallel. It passes when the trainer survives and reports, every
program scores 0, nothing it tried to write exists on the host, nobody connected to the host's
loopback, and no process of the run's uids is left, zombies included. Where the sandbox cannot run
(unprivileged, without bwrap or user namespaces) the trainer must get `SandboxUnavailableError`
saying what is missing, and no candidate may have run.

No program here kills -1: run as root by a broken sandbox that would take down every process on
the machine, not just fail the test. That the program sees only its own PID namespace (so -1 would
reach nothing else) is asserted in test_code.py and by the sandbox's own self-test.
"""

import concurrent.futures.thread  # noqa: F401  (imported before fork: a dropped uid cannot read it)
import contextlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import time
import traceback

import pytest

from r1.rewards import code, sandbox
from tests.rewards.conftest import child_pids, recording_run_uids

ROOT = os.geteuid() == 0
PROJECT = str(pathlib.Path(code.__file__).resolve().parents[2])
LIMITS = code.SandboxLimits(cpu_s=1, wall_s=2.0, max_parallel=4)


def processes_of(uids, grace_s: float = 5.0, exclude=()) -> list[str]:
  """'pid uid state' of processes (zombies too) of uids, after up to grace_s for kills to land."""
  deadline = time.monotonic() + grace_s
  while True:
    found = []
    for entry in os.listdir("/proc"):
      if entry.isdigit() and int(entry) not in exclude:
        with contextlib.suppress(OSError, ValueError, KeyError):
          with open(f"/proc/{entry}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
          uid = int(fields["Uid"].split()[0])
          if uid in uids:
            found.append(f"{entry} uid={uid} {fields['State'].strip()} {fields['Name'].strip()}")
    if not found or time.monotonic() > deadline:
      return found
    time.sleep(0.05)


def bwrap_usable_by(uid: int | None) -> bool:
  """Independent probe: can `uid` (None: this process) start bwrap with a user namespace?"""
  bwrap = shutil.which("bwrap")
  if bwrap is None:
    return False
  def drop():
    if uid is not None:
      os.setgroups([])
      os.setgid(uid)
      os.setuid(uid)
  probe = subprocess.run([bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"],
                         preexec_fn=drop, capture_output=True, check=False)
  return probe.returncode == 0


def in_trainer(fn, uid: int | None = None, timeout_s: float = 120.0) -> dict:
  """Runs fn() in a forked trainer (dropped to uid if given); returns its JSON result.

  The child records every per-run uid the sandbox hands out (root only) and reports its own
  leftover children; the parent fails the test if the trainer did not exit by itself."""
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:  # The trainer.
    os.close(read_fd)
    status = 1
    try:
      if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
      used = []
      sandbox._run_uid = recording_run_uids(sandbox._run_uid, used)
      result = {"result": fn(), "run_uids": used}
      deadline = time.monotonic() + 5
      while child_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
      result["children"] = sorted(child_pids())
      status = 0
    except BaseException as e:  # pylint: disable=broad-except
      result = {"error": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
      status = 0
    finally:
      with os.fdopen(write_fd, "w") as f:
        f.write(json.dumps(result))
      os._exit(status)
  os.close(write_fd)
  deadline = time.monotonic() + timeout_s
  while True:
    done, wait_status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      pytest.fail(f"trainer {pid} hung for {timeout_s}s")
    time.sleep(0.05)
  with os.fdopen(read_fd) as f:
    report = f.read()
  assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0, (
      f"the trainer died: wait status {wait_status}"
      f"{f' (signal {os.WTERMSIG(wait_status)})' if os.WIFSIGNALED(wait_status) else ''}")
  return json.loads(report)


def hostile_programs(tag: str, port: int, scratch: str) -> dict[str, tuple[str, str]]:
  """name -> (source, the output that would mean the attack worked). Each prints that output only
  if it succeeds, so a score of 1 is an escape."""
  protected = [f"{PROJECT}/r1_escape_{tag}", f"{scratch}/escape_{tag}",
               f"/var/tmp/r1_escape_{tag}", f"/dev/shm/r1_escape_{tag}", f"/root/r1_escape_{tag}",
               f"/r1_escape_{tag}"]
  connect = (f"import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
             "  print('connected')\nexcept OSError:\n  print('refused')\n")
  # Directly and from a child process (a Python-level socket block would stop only the first).
  reach = (f"import subprocess, sys\nexec({connect!r})\n"
           f"child = subprocess.run([sys.executable, '-c', {connect!r}], capture_output=True)\n"
           "print('connected' if b'connected' in child.stdout else 'refused')\n")
  return {
      "infinite_loop": ("while True:\n  pass\nprint('done')", "done"),
      "sleep": ("import time\ntime.sleep(100)\nprint('done')", "done"),
      "fork_bomb": ("import os, time\nfor _ in range(10000):\n  try:\n    os.fork()\n"
                    "  except OSError:\n    time.sleep(0.01)\nprint('boom')", "boom"),
      "allocate_10GiB": ("x = bytearray(10 * 1024**3)\nprint('allocated')", "allocated"),
      "write_outside": ("escaped = False\n" + "".join(
          f"try:\n  open({p!r}, 'w').write('x')\n  escaped = True\nexcept OSError:\n  pass\n"
          for p in protected) + f"open('/tmp/r1_escape_{tag}', 'w').write('x')\n"
          "print('escaped' if escaped else 'contained')", "escaped"),
      "read_env": ("import glob, os, re\nfound = os.environ.get('R1_SANDBOX_SECRET', '')\n"
                   "for path in ['/proc/self/environ', f'/proc/{os.getppid()}/environ'] + "
                   "glob.glob('/proc/*/environ'):\n  try:\n    text = open(path, 'rb').read()\n"
                   "  except OSError:\n    continue\n"
                   "  m = re.search(rb'R1_SANDBOX_SECRET=([^\\x00]*)', text)\n"
                   "  found = found or (m.group(1).decode() if m else '')\nprint(found or 'none')",
                   "SECRET"),
      "socket_to_localhost": (reach, "connected connected"),
      "kill_parent": ("import os, signal\n"
                      "for pid in (os.getppid(), TRAINER, 1):\n  try:\n"
                      "    os.kill(pid, signal.SIGKILL)\n  except OSError:\n    pass\n"
                      "try:\n  os.killpg(os.getpgid(TRAINER), signal.SIGKILL)\nexcept OSError:\n"
                      "  pass\nprint('still here')", "never"),
      "orphaned_sleeper": ("import os, time\nif os.fork() == 0:\n  os.setsid()\n"
                           "  if os.fork() == 0:\n    time.sleep(60)\n  os._exit(0)\n"
                           "print('detached')", "never"),
      "stdout_200MiB": ("import sys\nfor _ in range(200):\n  sys.stdout.write('x' * (1 << 20))\n"
                        "print('done')", "done"),
      "file_2GiB": ("with open('big', 'wb') as f:\n  for _ in range(2048):\n"
                    "    f.write(b'x' * (1 << 20))\nprint('written')", "written"),
      "fill_tmpfs": ("for i in range(40):\n  with open(f'f{i}', 'wb') as f:\n"
                     "    for _ in range(4):\n      f.write(b'x' * (1 << 20))\nprint('written')",
                     "written"),
      "os_system": (f"import os\nos.system('kill -9 TRAINER; kill -9 $PPID; "
                    f"echo x > {PROJECT}/r1_pwned_{tag}; echo x > {scratch}/pwned_{tag}')\n"
                    f"print('escaped' if os.path.exists('{PROJECT}/r1_pwned_{tag}') else 'no')",
                    "escaped"),
  }


def hostile_suite(limits: code.SandboxLimits, scratch: str) -> dict:
  """Runs in the trainer: every hostile program through one parallel code_reward call."""
  tag = secrets.token_hex(4)
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  server.setblocking(False)
  secret = "s3cr3t-" + secrets.token_hex(8)
  os.environ["R1_SANDBOX_SECRET"] = secret
  programs = hostile_programs(tag, server.getsockname()[1], scratch)
  completions, examples = [], []
  for source, success in programs.values():
    source = source.replace("TRAINER", str(os.getpid()))
    completions.append(f"```python\n{source}\n```")
    examples.append({"tests": [{"input": "", "output": success.replace("SECRET", secret)}]})
  # A control that must pass: a broken sandbox scores everything 0, hostile or not.
  completions.append("```python\nprint(sum(map(int, input().split())))\n```")
  examples.append({"tests": [{"input": "2 3", "output": "5"}]})
  start = time.monotonic()
  rewards = code.code_reward(completions, examples, limits=limits)
  control = float(rewards[-1])
  rewards = rewards[:-1]
  elapsed = time.monotonic() - start
  try:
    server.accept()
    connected = True
  except BlockingIOError:
    connected = False
  server.close()
  return {"rewards": dict(zip(programs, rewards.tolist())), "control": control, "elapsed": elapsed,
          "tag": tag, "connected": connected}


def check_contained(report: dict, scratch: str, exclude=()) -> None:
  assert "error" not in report, report.get("traceback")
  result = report["result"]
  assert result["control"] == 1.0, "a known-good program failed: the sandbox is broken"
  assert result["rewards"] == {name: 0.0 for name in result["rewards"]}
  assert len(result["rewards"]) == 13
  assert not result["connected"], "a sandboxed program reached the host's loopback"
  # 13 programs, several running into the 2 s wall clock, 4 at a time.
  assert result["elapsed"] < 20
  tag = result["tag"]
  for path in [f"{PROJECT}/r1_escape_{tag}", f"{PROJECT}/r1_pwned_{tag}", f"{scratch}/escape_{tag}",
               f"{scratch}/pwned_{tag}", f"/tmp/r1_escape_{tag}", f"/var/tmp/r1_escape_{tag}",
               f"/dev/shm/r1_escape_{tag}", f"/root/r1_escape_{tag}", f"/r1_escape_{tag}"]:
    assert not os.path.exists(path), f"{path} was written from inside the sandbox"
  assert report["children"] == [], "the trainer has children left"
  assert processes_of(set(report["run_uids"]), exclude=exclude) == []


@pytest.fixture
def scratch():
  """A world-writable host dir: any uid could write there unsandboxed, so a write is an escape."""
  path = f"/tmp/r1_hostile_{secrets.token_hex(4)}"
  os.mkdir(path)
  os.chmod(path, 0o1777)
  yield path
  shutil.rmtree(path)


@pytest.mark.skipif(not ROOT, reason="root suites need root")
@pytest.mark.parametrize("backend", ["namespaces", "bwrap"])
def test_hostile_programs_as_root(backend, scratch):
  if backend == "bwrap" and not bwrap_usable_by(sandbox._UID_BASE):
    pytest.skip("bwrap with unprivileged user namespaces is unavailable here (refusal: below)")
  report = in_trainer(lambda: hostile_suite(
      code.SandboxLimits(**{**LIMITS.__dict__, "backend": backend}), scratch))
  check_contained(report, scratch)
  assert report["run_uids"], "root runs get per-run uids"
  assert len(set(report["run_uids"])) == len(report["run_uids"])


def _unprivileged_uid() -> int | None:
  """A fresh unprivileged uid for the trainer (no other suite shares it), or None if not root."""
  return 3_000_000 + secrets.randbelow(1_000_000) if ROOT else None


def test_hostile_programs_unprivileged(scratch):
  uid = _unprivileged_uid()

  def suite():
    try:
      return hostile_suite(LIMITS, scratch)
    except code.SandboxUnavailableError as e:
      return {"refused": str(e)}

  report = in_trainer(suite, uid)
  if bwrap_usable_by(uid):
    check_contained(report, scratch)
    if uid is not None:  # The trainer has exited: nothing of its uid may be left.
      assert processes_of({uid}) == []
  else:
    assert "refused" in report["result"], report
    assert "bwrap" in report["result"]["refused"] and "refusing" in report["result"]["refused"]


def _refusal(uid: int | None, env_path: str, limits=LIMITS) -> dict:
  canary = f"/tmp/r1_canary_{secrets.token_hex(4)}"

  def attempt():
    os.environ["PATH"] = env_path
    try:
      code.code_reward([f"open({canary!r}, 'w').write('ran')\nprint(1)"],
                       [{"tests": [{"input": "", "output": "1"}]}], limits=limits)
    except code.SandboxUnavailableError as e:
      return {"refused": str(e)}
    return {"refused": None}

  report = in_trainer(attempt, uid)
  assert "error" not in report, report.get("traceback")
  assert not os.path.exists(canary), "a candidate ran unsandboxed"
  return report["result"]


def test_refuses_without_bwrap_when_unprivileged():
  result = _refusal(_unprivileged_uid(), "/nonexistent")
  assert result["refused"] is not None
  assert "bubblewrap is not installed" in result["refused"]
  assert "refusing" in result["refused"]


def test_refuses_when_user_namespaces_are_disabled(scratch):
  # A stand-in for bwrap on a kernel without unprivileged user namespaces: the same flags, the same
  # failure message as bubblewrap 0.8.0 prints there.
  fake = pathlib.Path(scratch) / "bin"
  fake.mkdir(mode=0o755)
  (fake / "bwrap").write_text(
      "#!/bin/sh\nif [ \"$1\" = --help ]; then\n"
      "  echo '--size --disable-userns --info-fd'; exit 0\nfi\n"
      "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
  (fake / "bwrap").chmod(0o755)
  result = _refusal(_unprivileged_uid(), str(fake))
  assert result["refused"] is not None
  assert "user namespaces look disabled" in result["refused"]
  assert "known-good program" in result["refused"]


def test_namespaces_backend_refuses_without_root():
  limits = code.SandboxLimits(**{**LIMITS.__dict__, "backend": "namespaces"})
  result = _refusal(_unprivileged_uid() if ROOT else None, os.environ.get("PATH", ""), limits)
  assert result["refused"] is not None and "needs root" in result["refused"]

"""Code reward: run a candidate Python program against test cases in a sandboxed subprocess.

Test cases (in `example["tests"]`), two styles:
  stdin/stdout:  {"input": "1 2\\n", "output": "3\\n"}      (whitespace-insensitive comparison)
  function call: {"fn_name": "add", "args": [1, 2], "expected": 3}   (JSON-equal result)
Reward: fraction of tests passed, or 1/0 all-or-nothing (`all_or_nothing=True`).

Each test runs in a fresh process under `_LAUNCHER`, which, before exec'ing the program:
  * gets its own session / process group (killed as a group on timeout), an empty environment,
    `python -I`, and its own temp dir as cwd;
  * unshares the network namespace (no interfaces but a down loopback: no network) and the mount
    namespace, mounting empty tmpfs over the world-writable /tmp, /var/tmp, /run/lock, /dev/shm
    so nothing written there outlives the test;
  * sets rlimits: CPU seconds, address space, process count, file size, open files, no core;
  * drops root to a fresh unprivileged uid (one per run), so it cannot write anywhere else, read
    other processes' environment, or signal the trainer; every process of that uid is killed
    afterwards, which also catches children that escaped the process group with setsid().
Gap: without root (no CAP_SYS_ADMIN/CAP_SETUID) the namespaces and the uid drop are unavailable.
The launcher then blocks sockets at the Python level only (socket.socket raises), and the program
runs as the caller's uid: process group kill, rlimits, the empty env and the temp dir still apply,
but a hostile program could signal the parent or write to world-writable paths. Use root (as in
our containers) or an external sandbox (gVisor, nsjail) in that setting.
"""

import concurrent.futures
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  cpu_s: int = 2                  # RLIMIT_CPU, per process.
  wall_s: float = 5.0             # Wall clock per test, then the process group is SIGKILLed.
  memory_bytes: int = 512 << 20   # RLIMIT_AS.
  max_processes: int = 16         # RLIMIT_NPROC of the per-run uid (stops fork bombs).
  max_file_bytes: int = 8 << 20   # RLIMIT_FSIZE: files written and captured stdout.
  max_open_files: int = 64        # RLIMIT_NOFILE.
  python: str | None = None       # Interpreter for the program; default: `program_python()`.


@dataclasses.dataclass(frozen=True)
class RunResult:
  stdout: str
  returncode: int | None
  timed_out: bool


# Runs as root (in our containers) in the new session, then execs the program. Kept stdlib-only and
# started with -I -S so it imports nothing from the caller's environment.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
isolated = False
if os.geteuid() == 0 and libc.unshare(0x40000000 | 0x00020000) == 0:  # CLONE_NEWNET | CLONE_NEWNS
  isolated = True
  libc.mount(b"none", b"/", None, 16384 | 262144, None)  # MS_REC | MS_PRIVATE: no propagation out.
  cwd, cwd_fd = os.getcwd(), os.open(".", os.O_RDONLY)
  for path in ("/tmp", "/var/tmp", "/run/lock", "/dev/shm"):
    if os.path.isdir(path):
      libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"size=16m,mode=1777")
      if cwd.startswith(path + "/"):  # Our own dir lives there: bind it back at the same path.
        os.makedirs(cwd)
        libc.mount(f"/proc/self/fd/{cwd_fd}".encode(), cwd.encode(), None, 4096, None)  # MS_BIND
  os.chdir(cwd)
limits = [(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
          (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
          (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
          (resource.RLIMIT_FSIZE, cfg["max_file_bytes"], cfg["max_file_bytes"]),
          (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
          (resource.RLIMIT_CORE, 0, 0)]
for which, soft, hard in limits:
  resource.setrlimit(which, (soft, hard))
if os.geteuid() == 0:
  os.setgroups([])
  os.setgid(cfg["uid"])
  os.setuid(cfg["uid"])
if isolated:
  os.execve(cfg["python"], [cfg["python"], "-I", cfg["program"]], {})
# Fallback without namespaces: Python-level socket block, then run the program in this process.
import socket, _socket
def _blocked(*args, **kwargs):
  raise PermissionError("network access is disabled in the sandbox")
socket.socket = _socket.socket = socket.create_connection = _blocked
os.environ.clear()
sys.argv = [cfg["program"]]
sys.path.insert(0, os.getcwd())
import runpy
runpy.run_path(cfg["program"], run_name="__main__")
"""

_CALL_HARNESS = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())  # `python -I` leaves the script dir off sys.path.
with open("call.json") as f:
  call = json.load(f)
import solution
result = getattr(solution, call["fn_name"])(*call["args"])
sys.stdout.write("\n" + json.dumps(result) + "\n")
"""

_UID_BASE = 2_000_000  # Far above any real account; each run draws a fresh uid from here.


def _world_executable(path: str) -> bool:
  """True when any uid can reach and run path (every parent dir o+x, the file o+rx)."""
  path = os.path.realpath(path)
  if not os.path.isfile(path) or (os.stat(path).st_mode & 0o005) != 0o005:
    return False
  parent = os.path.dirname(path)
  while True:
    if not os.stat(parent).st_mode & 0o001:
      return False
    if parent == "/":
      return True
    parent = os.path.dirname(parent)


def program_python() -> str:
  """The interpreter the dropped uid can run: this one if world-accessible (a pyenv under a 0700
  /root is not), else the system python3."""
  for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
    if _world_executable(candidate):
      return candidate
  raise RuntimeError(f"no python interpreter readable by an unprivileged uid: {sys.executable} "
                     "is not; set SandboxLimits.python to one that is")


def _processes_of_uid(uid: int) -> list[int]:
  """Live (non-zombie) processes whose real uid is uid. Zombies are dead; init reaps them."""
  pids = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/status") as f:
          fields = dict(line.split(":", 1) for line in f if ":" in line)
        if fields["State"].split()[0] != "Z" and int(fields["Uid"].split()[0]) == uid:
          pids.append(int(entry))
      except (OSError, ValueError, KeyError):
        continue
  return pids


def _kill_uid(uid: int) -> None:
  """SIGKILLs every process of uid until none is left (forks racing the sweep are caught next)."""
  for _ in range(100):
    pids = _processes_of_uid(uid)
    if not pids:
      return
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    time.sleep(0.01)


def run_program(files: dict[str, str], program: str, stdin: str = "",
                limits: SandboxLimits = SandboxLimits()) -> RunResult:
  """Runs `python program` in a fresh sandbox dir holding `files`; returns its stdout."""
  workdir = tempfile.mkdtemp(prefix="r1_sandbox_")
  privileged = os.geteuid() == 0
  uid = _UID_BASE + secrets.randbelow(1_000_000)
  try:
    for name, text in files.items():
      with open(os.path.join(workdir, name), "w") as f:
        f.write(text)
    if privileged:
      for name in [""] + list(files):
        os.chown(os.path.join(workdir, name), uid, uid)
    os.chmod(workdir, 0o700)
    cfg = dict(dataclasses.asdict(limits), uid=uid, program=program)
    cfg["python"] = limits.python or (program_python() if privileged else sys.executable)
    cfg.pop("wall_s")
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout:
      fin.write(stdin.encode("utf-8", "replace"))
      fin.seek(0)
      proc = subprocess.Popen(
          [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
          cwd=workdir, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, env={},
          start_new_session=True, close_fds=True)
      timed_out = False
      try:
        proc.wait(timeout=limits.wall_s)
      except subprocess.TimeoutExpired:
        timed_out = True
      try:
        os.killpg(proc.pid, signal.SIGKILL)  # Whatever is left of the group, on success too.
      except (ProcessLookupError, PermissionError):
        pass
      proc.wait()
      if privileged:
        _kill_uid(uid)
      fout.seek(0)
      stdout = fout.read(limits.max_file_bytes).decode("utf-8", "replace")
    return RunResult(stdout=stdout, returncode=None if timed_out else proc.returncode,
                     timed_out=timed_out)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


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


def run_tests(source: str, tests: list[dict], limits: SandboxLimits = SandboxLimits(),
              all_or_nothing: bool = False, max_workers: int | None = None) -> float:
  """Score of one program: fraction of tests passed (or 1/0 if all_or_nothing), in [0, 1]."""
  if not tests:
    raise ValueError("run_tests: no test cases; expected a non-empty list")
  workers = max_workers or min(len(tests), os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    passed = list(pool.map(lambda t: _passes(source, t, limits), tests))
  if all_or_nothing:
    return float(all(passed))
  return sum(passed) / len(passed)


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
  return np.array([run_tests(extract_code(c), ex[tests_key], limits, all_or_nothing)
                   for c, ex in zip(completions, examples)], np.float32)

"""Sandbox for candidate programs that fails closed: a program runs isolated, or not at all.

Two backends, picked on first use (`SandboxLimits.backend="auto"`) or by name:

  "namespaces" (root): r1/rewards/sandbox_init.py unshares the mount, network, PID, IPC, UTS and
      cgroup namespaces, builds a fresh root, and runs the program as pid 2 under a uid of its own.
  "bwrap" (no root needed): bubblewrap (`apt-get install bubblewrap`) with a new user namespace and
      all the others (`--unshare-all --disable-userns --die-with-parent --new-session --cap-drop
      ALL`), the program mapped to uid 65534. Run by root it first drops to the run's own uid.

Both give the program the same view: a read-only root holding only /usr, /bin, /lib*, /sbin, the
interpreter's prefixes, /etc/ld.so.cache and /etc/alternatives, a minimal /dev and the namespace's
own /proc; one writable tmpfs at /tmp, capped at `tmpfs_bytes`, which is its cwd and holds its
files; no network (a loopback of its own); no parent to signal (it only sees its own PID
namespace, whose pid 1 is not it); no environment; PR_SET_NO_NEW_PRIVS; rlimits on CPU, memory,
processes, file size and open files. The project checkout, the installed r1 package (where gold
tests live) and `hidden_paths` are not visible, even under a bound directory. The kernel kills the
whole namespace when its pid 1 exits, so orphans and `setsid()` escapees die with the run; the
trainer SIGKILLs pid 1 on timeout, and as root also every process of the run's uid.

Uids: as root every run gets a uid no concurrent run on the machine holds (`_run_uid`), so no
candidate runs as root or shares a uid with another run. Unprivileged, without root no process can
switch uids: bwrap's processes keep the trainer's kernel uid, mapped to 65534 in their own user
namespace, where they hold no capability, see none of the trainer's processes or files, and count
RLIMIT_NPROC on their own.

Fail closed: each backend first runs a known-good program (it must print the sum of its input and
see no network, no hidden path, no_new_privs set, its namespace's pid 1 as parent); if that fails,
or neither backend is available (not root, and bwrap missing or user namespaces disabled),
`SandboxUnavailableError` says what is missing. Every run is guarded again in sandbox_init, which
execs a candidate only as pid 2 of a fresh PID namespace and never as root. Nothing falls back to
running code unsandboxed.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BACKENDS = ("namespaces", "bwrap")
INSIDE_UID = 65534           # What the program sees as its uid under bwrap (nobody).
_UID_BASE = 2_000_000        # Per-run uids (as root) come from [_UID_BASE, _UID_BASE + _UID_COUNT).
_UID_COUNT = 1_000_000
_INIT_SOURCE = (pathlib.Path(__file__).with_name("sandbox_init.py")).read_text()
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                 "/etc/alternatives")


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  cpu_s: int = 2                  # RLIMIT_CPU, per process.
  wall_s: float = 5.0             # Wall clock per run, then the whole sandbox is SIGKILLed.
  memory_bytes: int = 512 << 20   # RLIMIT_AS, per process.
  max_processes: int = 16         # RLIMIT_NPROC of the run's uid (stops fork bombs).
  max_file_bytes: int = 8 << 20   # RLIMIT_FSIZE: files written and captured stdout.
  max_open_files: int = 64        # RLIMIT_NOFILE.
  tmpfs_bytes: int = 64 << 20     # Size of /tmp, the one writable place (also bounds its memory).
  python: str | None = None       # Interpreter for the program; default `program_python(backend)`.
  backend: str = "auto"           # "auto" (namespaces as root, else bwrap), "namespaces", "bwrap".
  hidden_paths: tuple[str, ...] = ()  # Hidden too, beyond the project and the r1 package.
  max_parallel: int | None = None     # Concurrent runs per code_reward call; default CPU count.


@dataclasses.dataclass(frozen=True)
class RunResult:
  stdout: str
  returncode: int | None
  timed_out: bool
  stderr: str = ""                # Only with keep_stderr (the self-test); else empty.


class SandboxUnavailableError(RuntimeError):
  """No sandbox can run candidate programs here; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class _Sandbox:
  backend: str
  python: str
  layout: tuple                   # Mount ops for sandbox_init.build_root / bwrap arguments.
  bwrap: str | None = None


def _project_paths() -> list[str]:
  """The r1 package, and the checkout around it when it is one (gold data lives in both)."""
  paths = [str(_PACKAGE_DIR)]
  markers = ("setup.py", "pyproject.toml", ".git")
  if any((_PACKAGE_DIR.parent / marker).exists() for marker in markers):
    paths.append(str(_PACKAGE_DIR.parent))
  return paths


def _runnable_by(path: str, as_other: bool) -> bool:
  """True when this process (as_other: any uid, e.g. a run's own) can reach and run path."""
  real = os.path.realpath(path)
  if not os.path.isfile(real):
    return False
  if not as_other:
    return os.access(real, os.X_OK | os.R_OK) and os.access(path, os.X_OK)
  for p in [real] + [str(d) for d in pathlib.Path(real).parents]:
    if not os.stat(p).st_mode & (0o005 if p == real else 0o001):
      return False
  return True


def program_python(backend: str) -> str:
  """This interpreter if the backend can start it, else the system python3.

  The namespaces backend binds any interpreter in as root; bwrap binds as its caller, which for a
  root trainer is the run's uid, so there the whole path must be world-accessible (a pyenv under a
  0700 /root is not)."""
  as_other = os.geteuid() == 0
  candidates = (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
  for candidate in candidates:
    if candidate and (backend == "namespaces" or _runnable_by(candidate, as_other)):
      return candidate
  raise SandboxUnavailableError(f"{backend} sandbox: none of {candidates} can be run by "
                                f"{'a per-run uid' if as_other else f'uid {os.geteuid()}'}; "
                                "set SandboxLimits.python to an interpreter that can")


def _layout(python: str, hidden: list[str], tmpfs_bytes: int) -> tuple:
  """What the program sees: read-only system dirs and interpreter prefixes, /dev, /proc, a capped
  /tmp, and empty mounts over hidden paths inside any of those. Paths keep their host names."""
  probe = subprocess.run(
      [python, "-I", "-c", "import json, sys; print(json.dumps([sys.prefix, sys.exec_prefix, "
       "sys.base_prefix, sys.base_exec_prefix]))"],
      capture_output=True, text=True, env={}, cwd="/", timeout=30, check=False)
  if probe.returncode != 0:
    raise SandboxUnavailableError(f"interpreter {python} does not start: {probe.stderr[-500:]}")
  interpreter_dirs = {os.path.realpath(p) for p in json.loads(probe.stdout)}
  interpreter_dirs.add(os.path.dirname(os.path.realpath(python)))
  interpreter_dirs.add(os.path.realpath(os.path.dirname(python)))
  ops, binds = [], []
  for path in _SYSTEM_PATHS:
    if os.path.islink(path):
      ops.append(("symlink", os.readlink(path), path))
    elif os.path.exists(path):
      ops.append(("ro-bind", path, path))
      binds.append(path)
  ops += [("dev", "/dev"), ("proc", "/proc"), ("tmpfs", "/tmp", tmpfs_bytes)]
  # After /tmp, so an interpreter under /tmp (a venv) is bound on top of the fresh tmpfs.
  for path in sorted(interpreter_dirs):
    if not any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds):
      ops.append(("ro-bind", path, path))
      binds.append(path)
  for path in sorted({os.path.realpath(p) for p in hidden}):
    if os.path.exists(path) and any(path.startswith(b.rstrip("/") + "/") for b in binds):
      ops.append(("hide", path))
  return tuple(ops)


def _bwrap_args(bwrap: str, layout: tuple, files: list[tuple[int, str]], info_fd: int) -> list[str]:
  args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
          "--new-session", "--cap-drop", "ALL", "--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID),
          "--hostname", "sandbox", "--info-fd", str(info_fd)]
  for op in layout:
    kind = op[0]
    if kind == "ro-bind":
      args += ["--ro-bind", op[1], op[2]]
    elif kind == "symlink":
      args += ["--symlink", op[1], op[2]]
    elif kind == "dev":
      args += ["--dev", op[1], "--remount-ro", op[1]]  # bwrap's /dev is an uncapped tmpfs.
    elif kind == "proc":
      args += ["--proc", op[1]]
    elif kind == "tmpfs":
      args += ["--size", str(op[2]), "--perms", "1777", "--tmpfs", op[1]]
    elif kind == "hide":
      args += (["--tmpfs", op[1], "--remount-ro", op[1]] if os.path.isdir(op[1])
               else ["--ro-bind", "/dev/null", op[1]])
  for fd, dst in files:
    args += ["--file", str(fd), dst]
  return args + ["--remount-ro", "/", "--chdir", "/tmp"]


@contextlib.contextmanager
def _run_uid():
  """A uid no other run on this machine holds, for the duration of the run.

  Random draws, each claimed by binding an abstract unix socket named after it: no shared counter,
  no file to leave behind, and the kernel releases the name when a trainer dies, even by SIGKILL.
  The names are per network namespace, so a uid that still owns processes (a crashed run, or a
  trainer in another container sharing the kernel's uids) is skipped too. Sandboxed programs have
  their own network namespace and cannot take names here."""
  for _ in range(1000):
    uid = _UID_BASE + secrets.randbelow(_UID_COUNT)
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
      claim.bind(f"\0r1-code-sandbox-uid-{uid}")
    except OSError:  # EADDRINUSE: another run holds it.
      claim.close()
      continue
    with claim:
      if _processes_of_uid(uid):
        continue
      yield uid
      return
  raise SandboxUnavailableError("no free sandbox uid after 1000 draws")


def _processes_of_uid(uid: int) -> list[int]:
  """Live (non-zombie) processes whose real uid is uid."""
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
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.01)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
  """Waits up to timeout for proc to exit without reaping it, so its pid (and process group id)
  cannot be reused before we have killed what is left of the group."""
  fd = os.pidfd_open(proc.pid)
  try:
    return bool(select.select([fd], [], [], max(timeout, 0))[0])
  finally:
    os.close(fd)


def _read_available(fd: int) -> bytes:
  os.set_blocking(fd, False)
  chunks = []
  with contextlib.suppress(BlockingIOError):
    while chunk := os.read(fd, 65536):
      chunks.append(chunk)
  return b"".join(chunks)


def _ns_init_pid(status: bytes, info: bytes) -> int | None:
  """pid 1 of the run's PID namespace, as seen from here (from sandbox_init or bwrap --info-fd)."""
  for line in status.decode(errors="replace").splitlines():
    if line.startswith("init "):
      return int(line.split()[1])
  with contextlib.suppress(ValueError, KeyError, TypeError):
    return int(json.loads(info)["child-pid"])
  return None


def _memfd(name: str, data: bytes) -> int:
  fd = os.memfd_create(name)
  os.write(fd, data)
  os.lseek(fd, 0, os.SEEK_SET)
  return fd


def _run(sandbox: _Sandbox, files: dict[str, str], program: str, stdin: str,
         limits: SandboxLimits, keep_stderr: bool = False) -> tuple[RunResult, bool]:
  """One run in `sandbox`; returns (result, whether the program was started)."""
  root = os.geteuid() == 0
  with contextlib.ExitStack() as stack:
    uid = stack.enter_context(_run_uid()) if root else None
    fds = []
    stack.callback(lambda: [os.close(fd) for fd in fds])
    file_fds = [(_memfd(name, text.encode()), f"/tmp/{name}") for name, text in files.items()]
    status_r, status_w = os.pipe()
    info_r, info_w = os.pipe()
    fds += [fd for fd, _ in file_fds] + [status_r, status_w, info_r, info_w]
    rlimits = [("RLIMIT_CPU", limits.cpu_s, limits.cpu_s + 1),
               ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
               ("RLIMIT_NPROC", limits.max_processes, limits.max_processes),
               ("RLIMIT_FSIZE", limits.max_file_bytes, limits.max_file_bytes),
               ("RLIMIT_NOFILE", limits.max_open_files, limits.max_open_files),
               ("RLIMIT_CORE", 0, 0)]
    cfg = dict(python=sandbox.python, program=f"/tmp/{program}", cwd="/tmp", rlimits=rlimits,
               status_fd=status_w, keep_stderr=keep_stderr, uid=uid, parent_pid=os.getpid())
    if sandbox.backend == "namespaces":
      cfg.update(stage="namespaces", layout=[list(op) for op in sandbox.layout]
                 + [["file", fd, dst] for fd, dst in file_fds])
    else:
      stage = [sandbox.python, "-I", "-S", "-c", _INIT_SOURCE, json.dumps(dict(cfg, stage="exec"))]
      cfg.update(stage="bwrap", bwrap_args=_bwrap_args(sandbox.bwrap, sandbox.layout, file_fds,
                                                       info_w) + ["--"] + stage)
    fin = stack.enter_context(tempfile.TemporaryFile())
    fout = stack.enter_context(tempfile.TemporaryFile())
    ferr = stack.enter_context(tempfile.TemporaryFile())
    fin.write(stdin.encode("utf-8", "replace"))
    fin.seek(0)
    proc = subprocess.Popen(
        [sandbox.python, "-I", "-S", "-c", _INIT_SOURCE, json.dumps(cfg)], cwd="/", stdin=fin,
        stdout=fout, stderr=ferr, env={}, start_new_session=True, close_fds=True,
        pass_fds=[status_w, info_w] + [fd for fd, _ in file_fds])
    try:
      os.close(status_w)
      os.close(info_w)
      fds.remove(status_w)
      fds.remove(info_w)
      timed_out = not _wait_exit(proc, limits.wall_s)
      status = _read_available(status_r)
      if timed_out:
        # Killing pid 1 of the PID namespace takes every process in it; its parent then reaps it.
        init = _ns_init_pid(status, _read_available(info_r))
        if init is not None:
          with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(init, signal.SIGKILL)
          _wait_exit(proc, 1.0)
    finally:
      with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      if uid is not None:
        _kill_uid(uid)
    started = b"ready" in status + _read_available(status_r)
    fout.seek(0)
    stdout = fout.read(limits.max_file_bytes).decode("utf-8", "replace")
    stderr = ""
    if keep_stderr or not started:
      ferr.seek(0)
      stderr = ferr.read(1 << 16).decode("utf-8", "replace")
    return RunResult(stdout, None if timed_out else proc.returncode, timed_out, stderr), started


# The known-good program of the self-test: the sum of its input, and what it can see.
_SELF_TEST = r"""
import json, os, sys
def visible(path):
  try:
    if os.path.isdir(path):
      return bool(os.listdir(path))
    with open(path, "rb") as f:
      return bool(f.read(1))
  except OSError:
    return False
with open("/proc/self/status") as f:
  status = dict(line.split(":", 1) for line in f)
with open("/proc/net/dev") as f:
  interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
print(sum(map(int, sys.stdin.read().split())))
print(json.dumps(dict(nnp=status["NoNewPrivs"].strip(), ppid=os.getppid(), uid=os.getuid(),
                      interfaces=interfaces, env=dict(os.environ),
                      visible=[p for p in json.load(open("hidden.json")) if visible(p)])))
"""


def _self_test(sandbox: _Sandbox, limits: SandboxLimits, hidden: list[str]) -> None:
  """Runs the known-good program; raises SandboxUnavailableError naming what went wrong."""
  files = {"main.py": _SELF_TEST, "hidden.json": json.dumps(hidden)}
  # The production path first (stderr to /dev/null); only a failure is rerun to show stderr.
  result, started = _run(sandbox, files, "main.py", "1 2 3\n", limits)
  lines = result.stdout.splitlines()
  if not started or result.returncode != 0 or not lines or lines[0].strip() != "6":
    result, started = _run(sandbox, files, "main.py", "1 2 3\n", limits, keep_stderr=True)
  where = (f"{sandbox.backend} sandbox self-test (python {sandbox.python}, run as uid "
           f"{os.geteuid()})")
  lines = result.stdout.splitlines()
  if not started or result.returncode != 0 or not lines or lines[0].strip() != "6":
    raise SandboxUnavailableError(
        f"{where}: a known-good program (print the sum of '1 2 3') did not print 6: "
        f"{'it never started' if not started else f'exit code {result.returncode}'}"
        f"{', timed out' if result.timed_out else ''}, stdout {result.stdout[:300]!r}, "
        f"stderr {result.stderr[-1500:]!r}")
  seen = json.loads(lines[1])
  problems = []
  if seen["nnp"] != "1":
    problems.append("PR_SET_NO_NEW_PRIVS is not set")
  if seen["ppid"] != 1:
    problems.append(f"its parent is pid {seen['ppid']}, not its PID namespace's pid 1")
  if seen["uid"] in (0, os.geteuid()) and not (sandbox.backend == "bwrap" and os.geteuid() != 0):
    problems.append(f"it runs as uid {seen['uid']}, the trainer's")
  if seen["interfaces"] != ["lo"]:
    problems.append(f"it sees network interfaces {seen['interfaces']}, expected only its own lo")
  env = sorted(set(seen["env"]) - {"LC_CTYPE"})  # PEP 538: the interpreter sets it itself.
  if env:
    problems.append(f"it sees environment variables {env}")
  if seen["visible"]:
    problems.append(f"it can read hidden paths {seen['visible']}")
  if problems:
    raise SandboxUnavailableError(f"{where}: isolation check failed: {'; '.join(problems)}")


def _bwrap_path() -> str:
  bwrap = shutil.which("bwrap")
  if bwrap is None:
    raise SandboxUnavailableError("bwrap sandbox: bubblewrap is not installed (apt-get install "
                                  "bubblewrap)")
  help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, check=False).stdout
  missing = [flag for flag in ("--size", "--disable-userns", "--info-fd") if flag not in help_text]
  if missing:
    raise SandboxUnavailableError(f"bwrap sandbox: {bwrap} lacks {missing} (needs bubblewrap >= "
                                  "0.8.0)")
  return bwrap


def _prepare(backend: str, limits: SandboxLimits) -> _Sandbox:
  if backend == "namespaces" and os.geteuid() != 0:
    raise SandboxUnavailableError(f"namespaces sandbox: needs root (euid is {os.geteuid()})")
  bwrap = _bwrap_path() if backend == "bwrap" else None
  python = limits.python or program_python(backend)
  hidden = _project_paths() + list(limits.hidden_paths)
  sandbox = _Sandbox(backend, python, _layout(python, hidden, limits.tmpfs_bytes), bwrap)
  try:
    _self_test(sandbox, limits, hidden)
  except SandboxUnavailableError as e:
    if backend == "bwrap" and "bwrap:" in str(e) and ("uid map" in str(e) or "namespace" in str(e)):
      raise SandboxUnavailableError(f"{e}; unprivileged user namespaces look disabled (sysctl "
                                    "kernel.unprivileged_userns_clone=1, user.max_user_namespaces"
                                    " > 0, or an AppArmor userns restriction); or run as root")
    raise
  return sandbox


_SANDBOXES: dict = {}
_SANDBOXES_LOCK = threading.Lock()


def sandbox_for(limits: SandboxLimits) -> _Sandbox:
  """The self-tested sandbox for these limits (cached per limits and euid); raises
  SandboxUnavailableError listing why each backend is unusable."""
  key = (limits, os.geteuid())
  with _SANDBOXES_LOCK:
    if key not in _SANDBOXES:
      if limits.backend not in ("auto",) + BACKENDS:
        raise ValueError(f"SandboxLimits.backend={limits.backend!r}; expected auto or {BACKENDS}")
      order = ([limits.backend] if limits.backend != "auto"
               else ["namespaces", "bwrap"] if os.geteuid() == 0 else ["bwrap"])
      reasons = []
      for backend in order:
        try:
          _SANDBOXES[key] = _prepare(backend, limits)
          break
        except SandboxUnavailableError as e:
          reasons.append(str(e))
      else:
        _SANDBOXES[key] = SandboxUnavailableError(
            "no sandbox for candidate programs, refusing to run them: " + " | ".join(reasons))
    found = _SANDBOXES[key]
  if isinstance(found, SandboxUnavailableError):
    raise found
  return found


def run_program(files: dict[str, str], program: str, stdin: str = "",
                limits: SandboxLimits = SandboxLimits()) -> RunResult:
  """Runs `python program` in a fresh sandbox whose /tmp (its cwd) holds `files`."""
  sandbox = sandbox_for(limits)
  result, started = _run(sandbox, files, program, stdin, limits)
  if not started and not result.timed_out:
    # The sandbox broke after its self-test (or the program interfered with its own start): test
    # again, and stop here rather than score every later completion 0.
    _self_test(sandbox, limits, _project_paths() + list(limits.hidden_paths))
  return result

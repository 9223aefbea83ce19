"""The sandbox's own processes, run as `python -I -S -c <this file's source> <cfg json>`.

Stdlib only and never imported: r1/rewards/sandbox.py hands this source to a fresh interpreter so
nothing from the trainer's environment runs next to candidate code. cfg["stage"] picks the role:

  "namespaces"  root, in the trainer's namespaces: unshares mount/net/pid/ipc/uts/cgroup and
                forks pid 1 of the new pid namespace, which builds a fresh root from
                cfg["layout"] (read-only binds, one size-capped tmpfs at /tmp), pivots into it,
                and forks the program as pid 2 under the run's own uid. pid 1 stays root so the
                program can neither signal nor ptrace it; when pid 1 exits the kernel kills
                everything left in the namespace.
  "bwrap"       the trainer's child: dies with the trainer, drops a root caller to the run's uid (so
                bwrap's user namespace maps to that uid, not to root), then runs bwrap as a child
                subreaper, so no process of the run outlives it unreaped.
  "exec"        inside the sandbox (bwrap's command; the namespaces backend's pid 2): rlimits,
                PR_SET_NO_NEW_PRIVS, writes "ready" to the status fd, execs `python -I program`.

A setup failure exits 126 with "r1 sandbox: ..." on stderr; without "ready" on the status fd the
trainer knows the program never started.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom")

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def fail(what: str) -> None:
  sys.stderr.write(f"r1 sandbox: {what}: {os.strerror(ctypes.get_errno())}\n")
  sys.stderr.flush()
  os._exit(126)


def check(ret: int, what: str) -> None:
  if ret != 0:
    fail(what)


def die_with_parent(parent: int) -> None:
  # The setting is cleared by fork and by uid changes, so every stage re-arms it; the getppid check
  # closes the race where the parent died before it took effect.
  check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
  if os.getppid() != parent:
    sys.stderr.write(f"r1 sandbox: parent {parent} exited before the sandbox started\n")
    os._exit(126)


def mount(src, target: str, fstype, flags: int, data=None) -> None:
  enc = lambda s: None if s is None else s.encode()
  check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)),
        f"mount {src or fstype} on {target}")


def exit_code(status: int) -> int:
  code = os.waitstatus_to_exitcode(status)
  return 128 - code if code < 0 else code


def drop_to(uid: int) -> None:
  os.setgroups([])
  os.setresgid(uid, uid, uid)
  os.setresuid(uid, uid, uid)


def exec_program(cfg: dict) -> None:
  for name, soft, hard in cfg["rlimits"]:
    resource.setrlimit(getattr(resource, name), (soft, hard))
  check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
  # A guard on every run, independent of the self-test: a candidate is only ever exec'd as pid 2
  # of a fresh PID namespace (so kill(-1) reaches nothing outside) and never as root.
  if os.getpid() != 2 or os.getppid() != 1 or 0 in os.getresuid():
    sys.stderr.write(f"r1 sandbox: refusing to exec: pid {os.getpid()}, parent {os.getppid()}, "
                     f"uids {os.getresuid()} (expected pid 2 under pid 1, not root)\n")
    os._exit(126)
  os.write(cfg["status_fd"], b"ready\n")
  if not cfg["keep_stderr"]:
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 2)
  os.closerange(3, 1 << 16)  # Status pipe, file fds, anything inherited: none reach the program.
  os.chdir(cfg["cwd"])
  os.execve(cfg["python"], [cfg["python"], "-I", cfg["program"]], {})


def build_root(cfg: dict, root: str = "/tmp") -> None:
  """Mounts cfg["layout"] on a fresh tmpfs at `root` and pivots into it (pid 1, as root)."""
  os.umask(0o022)
  mount(None, "/", None, MS_REC | MS_PRIVATE)  # Nothing below propagates back to the host.
  # Sources are opened before the new root covers /tmp, which may hold one (a venv under /tmp).
  paths = {op[1] for op in cfg["layout"] if op[0] == "ro-bind"}
  paths |= {f"/dev/{d}" for d in DEVICES}
  sources = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in paths}
  mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")

  def bind(src: str, dst: str, nodev: int = MS_NODEV) -> None:
    target = root + dst
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(f"/proc/self/fd/{sources[src]}"):
      os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
      open(target, "w").close()
    mount(f"/proc/self/fd/{sources[src]}", target, None, MS_BIND)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | nodev)

  for op in cfg["layout"]:
    kind, args = op[0], op[1:]
    if kind == "ro-bind":
      bind(*args)
    elif kind == "symlink":
      os.makedirs(os.path.dirname(root + args[1]), exist_ok=True)
      os.symlink(args[0], root + args[1])
    elif kind == "tmpfs":
      os.makedirs(root + args[0], exist_ok=True)
      mount("tmpfs", root + args[0], "tmpfs", MS_NOSUID | MS_NODEV,
            f"size={args[1]},nr_inodes=4096,mode=1777")
    elif kind == "dev":
      dev = root + args[0]
      os.makedirs(dev)
      mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
      for name in DEVICES:
        bind(f"/dev/{name}", f"{args[0]}/{name}", nodev=0)  # Device nodes; writable though ro.
      for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                           ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
      mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    elif kind == "proc":
      os.makedirs(root + args[0], exist_ok=True)
      mount("proc", root + args[0], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    elif kind == "hide":
      if os.path.isdir(root + args[0]):
        mount("tmpfs", root + args[0], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,mode=0000")
      else:
        bind("/dev/null", args[0], nodev=0)
    elif kind == "file":
      fd, dst = args
      with os.fdopen(fd, "rb") as src, open(root + dst, "wb") as out:
        out.write(src.read())
      os.chown(root + dst, cfg["uid"], cfg["uid"])
    else:
      raise ValueError(f"unknown layout op {op!r}")
  for fd in sources.values():
    os.close(fd)
  machine = platform.machine()
  if machine not in SYS_PIVOT_ROOT:
    sys.stderr.write(f"r1 sandbox: no pivot_root syscall number for {machine}\n")
    os._exit(126)
  os.chdir(root)
  # pivot_root(".", "."): the old root ends up stacked on the new one; detaching it leaves only the
  # new tree in this mount namespace (pivot_root(2), "NOTES").
  check(libc.syscall(SYS_PIVOT_ROOT[machine], b".", b"."), "pivot_root")
  check(libc.umount2(b".", MNT_DETACH), "umount old root")
  os.chdir("/")
  mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def namespaces(cfg: dict) -> None:
  die_with_parent(cfg["parent_pid"])
  check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
                     | CLONE_NEWCGROUP), "unshare (needs root with CAP_SYS_ADMIN)")
  init = os.fork()  # The first child after unshare(CLONE_NEWPID) is pid 1 of the new namespace.
  if init:
    os.write(cfg["status_fd"], f"init {init}\n".encode())
    os.close(cfg["status_fd"])
    os._exit(exit_code(os.waitpid(init, 0)[1]))
  die_with_parent(0)  # Our parent is outside the new PID namespace, so getppid() is 0.
  build_root(cfg)
  program = os.fork()
  if program == 0:
    drop_to(cfg["uid"])
    die_with_parent(1)
    exec_program(cfg)
  os.close(cfg["status_fd"])
  os._exit(exit_code(os.waitpid(program, 0)[1]))


def bwrap(cfg: dict) -> None:
  die_with_parent(cfg["parent_pid"])
  if cfg["uid"] is not None:
    drop_to(cfg["uid"])
    die_with_parent(cfg["parent_pid"])
  # bwrap can exit before its pid 1 is reaped; as subreaper that process comes back to us and is
  # reaped here rather than left as a zombie of the machine's init.
  check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
  stub = os.getpid()
  child = os.fork()
  if child == 0:
    die_with_parent(stub)
    os.execv(cfg["bwrap_args"][0], cfg["bwrap_args"])
  os.close(cfg["status_fd"])
  code = 126
  while True:
    try:
      pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
      os._exit(code)
    if pid == child:
      code = exit_code(status)


if __name__ == "__main__":
  config = json.loads(sys.argv[1])
  {"namespaces": namespaces, "bwrap": bwrap, "exec": exec_program}[config["stage"]](config)

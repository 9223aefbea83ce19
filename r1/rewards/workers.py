"""A persistent pool of sympy worker processes with a hard per-item timeout.

Design (why not multiprocessing.Pool): a Pool cannot cancel one stuck task, and sympy stuck in a
C-level big-integer power ignores signals and exceptions. Here every worker is a plain
`python -c` subprocess (no fork of a trainer that holds JAX threads, no re-import of `__main__`)
talking JSON lines over its stdin/stdout, so no pickle of untrusted data. An item that runs past
its deadline gets its worker SIGKILLed and reaped, the item scores "not equal", and a replacement
is spawned at once (its imports overlap the caller's work; the slot waits for it on its next use). Belt and braces against orphans: each worker dies when its stdin
closes (parent gone), has PR_SET_PDEATHSIG=SIGKILL, arms SIGALRM (default action: terminate) for
every item, and runs under an address-space limit. Workers run in their own session: a Ctrl-C or a
SIGTERM sent to the trainer's process group must not kill them mid-item (their in-flight items
would score "not equal" and be trained on); the trainer's preemption handler decides when to stop.
"""

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MEMORY_BYTES = 4 << 30
_STARTUP_TIMEOUT_S = 60.0  # Importing sympy + antlr on a busy 2-core machine.

_BOOT = """
import sys, json
sys.path[:0] = json.loads(sys.argv[1])
from r1.rewards import workers
workers.worker_main(float(sys.argv[2]), int(sys.argv[3]))
"""


def worker_main(timeout_s: float, memory_bytes: int) -> None:
  """Worker loop: reads {"pred", "gold", "pred_text", "gold_text"} lines (see `symbolic.grade`),
  writes {"eq": bool} lines, until stdin closes."""
  import ctypes
  import resource
  import signal
  try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent.
  except (OSError, AttributeError):
    pass
  resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
  signal.signal(signal.SIGALRM, signal.SIG_DFL)
  from r1.rewards import symbolic  # The slow imports (sympy, antlr, math-verify) happen before "ready".
  from r1.rewards import math_verify_grader
  symbolic.to_sympy("1")
  math_verify_grader.answers_equal("1", "1")
  out = sys.stdout
  out.write("ready\n")
  out.flush()
  alarm_s = int(timeout_s) + 2  # Self-destruct a little after the parent's deadline.
  for line in sys.stdin:
    request = json.loads(line)
    signal.alarm(alarm_s)
    try:
      equal = symbolic.grade(request["pred"], request["gold"], request.get("pred_text"),
                             request.get("gold_text"))
    except (RecursionError, MemoryError):
      equal = False
    signal.alarm(0)
    out.write(json.dumps({"eq": bool(equal)}) + "\n")
    out.flush()


class _Worker:
  """One subprocess and its read buffer."""

  def __init__(self, timeout_s: float, memory_bytes: int):
    self.proc = subprocess.Popen(
        [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(timeout_s), str(memory_bytes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True)
    self.buffer = b""
    self.ready = False

  @property
  def fd(self) -> int:
    return self.proc.stdout.fileno()

  def read_lines(self) -> list[bytes] | None:
    """Reads what is available; complete lines, or None on EOF (the worker died)."""
    chunk = os.read(self.fd, 65536)
    if not chunk:
      return None
    self.buffer += chunk
    *lines, self.buffer = self.buffer.split(b"\n")
    return lines

  def send(self, pred: str | None, gold: str | None, pred_text: str | None = None,
           gold_text: str | None = None) -> None:
    request = {"pred": pred, "gold": gold, "pred_text": pred_text, "gold_text": gold_text}
    self.proc.stdin.write(json.dumps(request).encode() + b"\n")
    self.proc.stdin.flush()

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()
    for stream in (self.proc.stdin, self.proc.stdout):
      try:
        stream.close()
      except OSError:
        pass


class SympyPool:
  """Grades (pred, gold) pairs of normalised answers in parallel with a hard per-item timeout.

  Args:
    num_workers: processes; each is started on first need and kept.
    timeout_s: wall-clock budget per item; past it the item is False and its worker is killed.
    memory_bytes: RLIMIT_AS of each worker.
  """

  def __init__(self, num_workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_bytes: int = DEFAULT_MEMORY_BYTES):
    if num_workers < 1:
      raise ValueError(f"SympyPool num_workers={num_workers}, expected >= 1")
    self.num_workers = num_workers
    self.timeout_s = timeout_s
    self.memory_bytes = memory_bytes
    self._workers: list[_Worker | None] = [None] * num_workers
    self._lock = threading.Lock()
    self.num_timeouts = 0
    atexit.register(self.close)

  def pids(self) -> list[int]:
    """Process ids of live workers (for tests and leak checks)."""
    return [w.proc.pid for w in self._workers if w is not None]

  def _start(self, slots: list[int]) -> None:
    """Ensures the given slots hold ready workers (started concurrently, then awaited)."""
    for i in slots:
      if self._workers[i] is not None and self._workers[i].proc.poll() is not None:
        self._workers[i].kill()
        self._workers[i] = None
      if self._workers[i] is None:
        self._workers[i] = _Worker(self.timeout_s, self.memory_bytes)
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    for i in slots:
      w = self._workers[i]
      while not w.ready:
        left = deadline - time.monotonic()
        readable, _, _ = select.select([w.fd], [], [], max(left, 0))
        lines = w.read_lines() if readable else None
        if lines is None:
          w.kill()
          self._workers[i] = None
          raise RuntimeError(f"sympy worker {w.proc.pid} failed to start (rc={w.proc.returncode})")
        w.ready = any(line == b"ready" for line in lines)

  def map(self, pairs: list[tuple]) -> list[bool]:
    """Equivalence of each item, in order. Timeouts and crashes give False.

    An item is (pred, gold) of normalised answers (r1's comparison only), or
    (pred, gold, pred_text, gold_text) with the raw texts for math-verify too (`symbolic.grade`).
    """
    results = [False] * len(pairs)
    if not pairs:
      return results
    with self._lock:
      idle = list(range(min(self.num_workers, len(pairs))))
      self._start(idle)
      pending = list(range(len(pairs)))[::-1]
      busy: dict[int, tuple[int, float]] = {}  # slot -> (item index, deadline)
      while pending or busy:
        while pending and idle:
          slot, item = idle.pop(), pending.pop()
          if not self._workers[slot].ready:  # A replacement still importing sympy.
            self._start([slot])
          try:
            self._workers[slot].send(*pairs[item])
            busy[slot] = (item, time.monotonic() + self.timeout_s)
          except OSError:  # Died between items: restart and retry this item.
            self._kill(slot)
            self._start([slot])
            pending.append(item)
            idle.append(slot)
        if not busy:
          continue
        now = time.monotonic()
        wait = max(0.0, min(deadline for _, deadline in busy.values()) - now)
        fds = {self._workers[slot].fd: slot for slot in busy}
        readable, _, _ = select.select(list(fds), [], [], wait)
        for fd in readable:
          slot = fds[fd]
          lines = self._workers[slot].read_lines()
          if lines is None:  # Died (memory limit, self-destruct alarm): not equal.
            busy.pop(slot)
            self._kill(slot)
            idle.append(slot)
          elif lines:
            item, _ = busy.pop(slot)
            results[item] = json.loads(lines[-1])["eq"] is True
            idle.append(slot)
        now = time.monotonic()
        for slot, (item, deadline) in list(busy.items()):
          if now >= deadline:
            self.num_timeouts += 1
            busy.pop(slot)
            self._kill(slot)
            idle.append(slot)
    return results

  def _kill(self, slot: int) -> None:
    """Kills a slot's worker and spawns its replacement now, without waiting for it: the ~1 s of
    imports then overlaps the caller's work instead of delaying the next item."""
    self._workers[slot].kill()
    self._workers[slot] = _Worker(self.timeout_s, self.memory_bytes)

  def close(self) -> None:
    """Kills and reaps every worker. The pool can be used again afterwards."""
    for i, w in enumerate(self._workers):
      if w is not None:
        w.kill()
        self._workers[i] = None

"""Shared helpers for reward tests: the shipped datasets and a child-process census."""

import contextlib
import json
import os
import pathlib

import pytest

from r1.rewards import workers

DATASETS = pathlib.Path(__file__).resolve().parents[2] / "r1" / "data" / "datasets"


def read_jsonl(name: str) -> list[dict]:
  with open(DATASETS / name) as f:
    return [json.loads(line) for line in f]


def child_pids(parent: int | None = None) -> set[int]:
  """Pids whose parent is `parent` (default: this process), zombies included."""
  parent = os.getpid() if parent is None else parent
  pids = set()
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        stat = f.read()
    except OSError:
      continue
    if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
      pids.add(int(entry))
  return pids


@pytest.fixture(scope="session")
def math500():
  return read_jsonl("math500.jsonl")


@pytest.fixture(scope="module")
def grading_pool():
  """A started two-worker sympy / math-verify pool (start-up outside the timed regions)."""
  pool = workers.SympyPool(num_workers=2, timeout_s=3.0)
  pool.map([("1", "1")])
  yield pool
  pool.close()


def recording_run_uids(original, used: list):
  """Wraps sandbox._run_uid so that every per-run uid it hands out is appended to `used`."""

  @contextlib.contextmanager
  def recording():
    with original() as uid:
      used.append(uid)
      yield uid

  return recording

"""Compile settings for the whole test session, set before anything imports JAX.

Most of the suite's time is XLA compiling small programs on 2 cores, not running them. So:
- the CPU backend's LLVM optimisations are skipped (tiny shapes: the programs' run time is
  negligible; verdicts were checked unchanged against the default level);
- one persistent compilation cache serves the session's xdist workers and every child process a
  test starts (tests/child_env.py keeps the variable), so a program compiled by one test (the same
  tiny config, one mesh) is read back by the next. The cache is made for this session and deleted
  at its end, so no run sees another's.
Set R1_TEST_XLA_DEFAULTS=1 to run with XLA's defaults instead.
"""

import os
import shutil
import tempfile

import pytest

from tests import smollm2 as smollm2_files

_FAST_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
_OWNER = "R1_TEST_CACHE_OWNER"

if os.environ.get("R1_TEST_XLA_DEFAULTS") != "1":
  if _FAST_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_FLAGS}".strip()
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:   # xdist workers inherit the controller's
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="r1-test-xla-cache-")
    os.environ[_OWNER] = str(os.getpid())
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  # No size limit: with one, JAX locks the whole cache and scans it on every write. Without, two
  # workers writing the same entry at once is harmless (JAX keeps the first), and an entry read
  # while half-written fails to decompress, which JAX reports as a warning and recompiles.


def xla_flags_without_fast_compile() -> str:
  """XLA_FLAGS less the session's skipped optimisations, for a child that runs big programs."""
  return os.environ.get("XLA_FLAGS", "").replace(_FAST_FLAGS, "").strip()


def pytest_configure(config):
  # README's test command (what CI runs) deselects these: together about 30 min of CPU time, more than
  # the 30-minute budget on 2 cores has left. Each has a cheaper sibling that CI runs (README).
  config.addinivalue_line("markers", "slow: over CI's time budget; run with `pytest -m slow tests` (README)")


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if os.environ.get(_OWNER) == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def smollm2_dir():
  """SmolLM2-135M-Instruct as an HF checkpoint directory converted from its GGUF (tests/smollm2.py)."""
  return smollm2_files.converted_dir()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
  """(Policy, Tokenizer) of the converted SmolLM2-135M-Instruct."""
  import r1  # pylint: disable=import-outside-toplevel  (JAX only after the flags above are set)
  from r1.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  return r1.load_hf_checkpoint(smollm2_dir), load_tokenizer(smollm2_dir)

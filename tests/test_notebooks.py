"""Notebooks execute top to bottom in a real Jupyter kernel (nbclient), so they never rot.

The tiny R1-Zero notebook runs in its quick mode (R1_QUICK=1), the CI smoke run of the repro.
"""

import json
import os
import sys

import nbformat
from nbclient import NotebookClient
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(n for n in os.listdir(os.path.join(ROOT, "notebooks")) if n.endswith(".ipynb"))


def run_notebook(name: str, env: dict, kernel_dir: str, monkeypatch) -> nbformat.NotebookNode:
  """Executes notebooks/<name> in a kernel of this interpreter, started in notebooks/ with `env`
  added to its environment. `kernel_dir` is a scratch directory for the kernelspec."""
  # A kernelspec of our own: the installed "python3" one runs whatever `python` is on PATH.
  spec_dir = os.path.join(kernel_dir, "kernels", "r1-test")
  os.makedirs(spec_dir, exist_ok=True)
  with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "r1 tests", "language": "python"}, f)
  nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
  # The kernel inherits this process's environment.
  for key, value in dict(env, JUPYTER_PATH=kernel_dir,
                         PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")).items():
    monkeypatch.setenv(key, value)
  NotebookClient(nb, timeout=600, kernel_name="r1-test",
                 resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
  return nb


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
  nb = run_notebook(name, {"R1_QUICK": "1", "R1_WORKDIR": str(tmp_path / "workdir"), "JAX_PLATFORMS": "cpu"},
                    str(tmp_path / "jupyter"), monkeypatch)
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors, errors
  assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
  if name == "tiny_r1_zero.ipynb":
    assert (tmp_path / "workdir" / "report.json").exists()
    assert (tmp_path / "workdir" / "curves.png").read_bytes()[:4] == b"\x89PNG"

"""Notebooks execute top to bottom in a real Jupyter kernel (nbclient), so they never rot.

The R1-Zero notebooks run in their quick mode (R1_QUICK=1): the tiny one is the CI smoke run of
the repro, the SmolLM2 one that of configs/r1_zero_smollm2.py:quick on the real model (converted
once by the session fixture and handed to the notebook in R1_HF_DIR).
"""

import json
import os
import sys

import nbformat
from nbclient import NotebookClient
import pytest

from tests import conftest

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
def test_notebook_runs(name, tmp_path, monkeypatch, request):
  env = {"R1_QUICK": "1", "R1_WORKDIR": str(tmp_path / "workdir"), "JAX_PLATFORMS": "cpu"}
  if name == "r1_zero_smollm2.ipynb":
    env["R1_HF_DIR"] = request.getfixturevalue("smollm2_dir")   # skips (with the reason) if it cannot be fetched
    # A 30-layer model's programs run long enough that LLVM's optimisations, which the session
    # skips (tests/conftest.py), pay for themselves: 156 s vs 185 s for this run alone.
    env["XLA_FLAGS"] = conftest.xla_flags_without_fast_compile()
  nb = run_notebook(name, env, str(tmp_path / "jupyter"), monkeypatch)
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors, errors
  assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
  if name == "tiny_r1_zero.ipynb":
    assert (tmp_path / "workdir" / "report.json").exists()
    assert (tmp_path / "workdir" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  if name == "r1_zero_smollm2.ipynb":
    _check_quick_smollm2_run(tmp_path / "workdir")


def _check_quick_smollm2_run(workdir):
  """configs/r1_zero_smollm2.py:quick, GRPO straight from the real SmolLM2-135M-Instruct: its steps,
  before/after evaluation and reports."""
  with open(workdir / "0_grpo" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  steps = [r for r in rows if "reward" in r]
  assert [r["step"] for r in steps] == [1, 2]
  for r in steps:
    assert 0.0 <= r["reward"] <= 1.5 and r["kl"] >= 0.0 and r["grad_norm"] > 0.0, r
  with open(workdir / "report.json") as f:
    summary = json.load(f)
  for key in ("pass@1_before", "pass@1_after", "format_reward_before", "format_reward_after"):
    assert 0.0 <= summary[key] <= 1.0, (key, summary)
  assert "after GRPO" in (workdir / "samples.md").read_text()
  assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
  with open(workdir / "0_grpo" / "eval_report.json") as f:
    report = json.load(f)
  # The prompts are SmolLM2's own ChatML with R1-Zero's instructions as the system turn.
  assert report["after"]["config"]["template"] == "hf_chat_r1_zero"

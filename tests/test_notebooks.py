"""Notebooks run top to bottom (their code cells, shell lines skipped), so they never rot."""

import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(n for n in os.listdir(os.path.join(ROOT, "notebooks")) if n.endswith(".ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, monkeypatch):
  with open(os.path.join(ROOT, "notebooks", name)) as f:
    cells = json.load(f)["cells"]
  code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
  assert code, f"{name} has no code cells"
  monkeypatch.chdir(os.path.join(ROOT, "notebooks"))
  scope = {"__name__": "__main__"}
  for i, source in enumerate(code):
    lines = [line for line in source.splitlines() if not line.lstrip().startswith("!")]
    exec(compile("\n".join(lines), f"{name}[cell {i}]", "exec"), scope)  # pylint: disable=exec-used

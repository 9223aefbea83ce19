"""The README's main command runs and writes a report whose numbers are the library's."""

import json
import os
import subprocess
import sys

from r1.model import get_model_config, param_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "r1.main", f"--workdir={tmp_path}", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "model_report.json") as f:
    return proc.stdout, json.load(f)


def test_model_report_of_the_default_config(tmp_path):
  stdout, report = _run(tmp_path, "--config=configs/model_report.py", "--config.model.overrides.moe_impl=ragged")
  assert report["params"] == param_count(get_model_config("tiny_v3"))
  assert 5.0 < report["nll"] < 8.0 and report["forward_tokens_per_s"] > 0
  assert sum(map(sum, report["expert_load"])) == 2 * 64 * 2 * 2  # batch x length x top-k x MoE layers
  assert "forward [2, 64]" in stdout


def test_model_report_of_deepseek_v3_counts_without_allocating(tmp_path):
  stdout, report = _run(tmp_path, "--config=configs/model_report.py:deepseek_v3")
  assert report["params"]["total"] == 671_026_404_352 and "forward pass skipped" in stdout

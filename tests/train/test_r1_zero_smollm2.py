"""configs/r1_zero_smollm2.py:quick end to end: GRPO straight from the real SmolLM2-135M-Instruct
(converted from its GGUF by the session fixture), with before/after evaluation and the reports."""

import json
import subprocess
import sys

import pytest

from configs import r1_zero_smollm2
from r1.train import common
from tests.child_env import ROOT, child_env


def test_quick_r1_zero_on_smollm2_writes_its_reports(smollm2_dir, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "r1.main", "--config=configs/r1_zero_smollm2.py:quick",
                         f"--config.init.hf_dir={smollm2_dir}", f"--workdir={tmp_path}"],
                        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(tmp_path / "0_grpo" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  steps = [r for r in rows if "reward" in r]
  assert [r["step"] for r in steps] == [1, 2]
  for r in steps:
    assert 0.0 <= r["reward"] <= 1.5 and r["kl"] >= 0.0 and r["grad_norm"] > 0.0, r
  with open(tmp_path / "report.json") as f:
    summary = json.load(f)
  for key in ("pass@1_before", "pass@1_after", "format_reward_before", "format_reward_after"):
    assert 0.0 <= summary[key] <= 1.0, (key, summary)
  # The prompts are SmolLM2's own ChatML with R1-Zero's instructions as the system turn.
  samples = (tmp_path / "samples.md").read_text()
  assert "after GRPO" in samples
  with open(tmp_path / "0_grpo" / "eval_report.json") as f:
    report = json.load(f)
  assert report["after"]["config"]["template"] == "hf_chat_r1_zero"


def test_stop_at_answer_needs_a_single_token(smollm2):
  # '</answer>' is 3 tokens in SmolLM2's vocabulary: stopping on it cannot work, so it is refused.
  _, tok = smollm2
  config = r1_zero_smollm2.get_config()
  assert common.stop_tokens(config, tok) == [tok.eos_id]
  config.rollout.stop_at_answer = True
  with pytest.raises(ValueError, match=r"'</answer>' is 3 tokens .*stop_at_answer=false"):
    common.stop_tokens(config, tok)

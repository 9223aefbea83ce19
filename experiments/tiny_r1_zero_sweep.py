"""Tiny R1-Zero GRPO sweep on CPU: learning rate x group size G from one cold-start SFT policy.

The GRPO stage of configs/tiny_r1_zero.py (80 steps, constant lr, held-out pass@1 every 20 steps)
run on its own from the SFT stage's exported policy and tokenizer, for lr in {3e-5, 1e-4, 3e-4}
and G (rollout.num_samples) in {4, 8}: six work units, each the cost of the tiny run's GRPO stage.
Each unit runs `stage=grpo` directly (as the README's "one stage on its own" command does), so
all six share one SFT policy; a --config.optimizer flag on the pipeline would set the SFT
stage's learning rate too (flags win over pipeline.stage_overrides in every stage). First make
the SFT policy:

  python -m r1.main --config=configs/tiny_r1_zero.py --workdir=/tmp/tiny_r1_zero
  python experiments/launch.py experiments/tiny_r1_zero_sweep.py --run
  python experiments/launch.py experiments/tiny_r1_zero_sweep.py:/other/tiny_run --run  # another SFT run

Compare the units' <workdir>/eval_report.json (pass@1 before and after) and metrics.jsonl.
"""

import os

from experiments import launcher


def get_experiment(arg=None):
  """arg: the tiny pipeline's workdir, whose 0_sft/ holds the policy (default /tmp/tiny_r1_zero)."""
  sft = os.path.join(arg or "/tmp/tiny_r1_zero", "0_sft")
  return launcher.Experiment(
      name="tiny_r1_zero_grpo_sweep",
      config="configs/tiny_r1_zero.py",
      # The pipeline's GRPO stage (configs/tiny_r1_zero.py, pipeline.stage_overrides[1]) as flags.
      overrides={
          "stage": "grpo",
          "total_steps": 80,
          "init.hf_dir": os.path.join(sft, "policy"),
          "tokenizer.path": os.path.join(sft, "tokenizer"),  # the tokenizer directory the SFT stage exported
          "optimizer.schedule": "constant",
          "optimizer.warmup_steps": 0,
          "eval.every_steps": 20,
      },
      sweep=launcher.product(**{"optimizer.learning_rate": [3e-5, 1e-4, 3e-4], "rollout.num_samples": [4, 8]}),
      topology="cpu",
  )

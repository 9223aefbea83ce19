"""The model report over every named model config (an experiment file, runnable on its own).

Big models report counts only (the forward pass is skipped above config.forward.max_forward_params);
the CPU-sized ones also time a jitted forward. Runs on any machine in a minute or two.

  python experiments/model_report_sweep.py            # print the commands
  python experiments/model_report_sweep.py --run      # run them here, one workdir each
  python experiments/launch.py experiments/model_report_sweep.py --run   # the same
"""

import os
import sys

if __name__ == "__main__":  # Run as a script: the repository root holds the `experiments` package.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import launcher  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_experiment(arg=None):
  """One work unit per model config, plus the tiny model's MoE kernel and dtype variants."""
  del arg
  return launcher.Experiment(
      name="model_report_sweep",
      config="configs/model_report.py",
      sweep=[
          {"model.name": "deepseek_v3"},
          {"model.name": "deepseek_v2_lite"},
          {"model.name": "small_v3", "forward.seq_len": 128},
          {"model.name": "tiny_v3"},
          {"model.name": "tiny_v3", "model.overrides.moe_impl": "ragged"},
          {"model.name": "tiny_v3", "model.overrides.dtype": "bfloat16"},
      ],
  )


if __name__ == "__main__":
  from experiments import launch as cli  # the command line  # pylint: disable=g-import-not-at-top
  sys.exit(cli.main([__file__, *sys.argv[1:]]))

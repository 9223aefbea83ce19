"""XManager-style launch description: the model report over every named model config.

Each experiment here is data: a base config file plus a list of override dicts (a sweep). Print
the command lines, or run them one after another on this machine:

  python experiments/model_report_sweep.py            # print the commands
  python experiments/model_report_sweep.py --run      # run them locally, one workdir each
"""

import argparse
import shlex
import subprocess
import sys

CONFIG = "configs/model_report.py"

# One entry per run. Big models report counts only (the forward pass is skipped above
# config.forward.max_forward_params); the CPU-sized ones also time a jitted forward.
SWEEP = [
    {"config": f"{CONFIG}:deepseek_v3"},
    {"config": f"{CONFIG}:deepseek_v2_lite"},
    {"config": f"{CONFIG}:small_v3", "config.forward.seq_len": 128},
    {"config": f"{CONFIG}:tiny_v3"},
    {"config": f"{CONFIG}:tiny_v3", "config.model.overrides.moe_impl": "ragged"},
    {"config": f"{CONFIG}:tiny_v3", "config.model.overrides.dtype": "bfloat16"},
]


def command(run: dict, workdir: str) -> list[str]:
  args = [sys.executable, "-m", "r1.main", f"--config={run['config']}", f"--workdir={workdir}"]
  args += [f"--{k}={v}" for k, v in run.items() if k != "config"]
  return args


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", action="store_true", help="run the sweep locally")
  parser.add_argument("--workdir", default="/tmp/r1_model_report_sweep")
  args = parser.parse_args()
  for i, run in enumerate(SWEEP):
    cmd = command(run, f"{args.workdir}/{i}")
    print(shlex.join(cmd))
    if args.run:
      subprocess.run(cmd, check=True)


if __name__ == "__main__":
  main()

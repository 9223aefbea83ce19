"""Launch an experiment file: print its commands, run them here, or print the TPU VM gcloud lines.

  python experiments/launch.py experiments/tiny_r1_zero_sweep.py             # print the commands
  python experiments/launch.py experiments/tiny_r1_zero_sweep.py --run       # run them, one after another
  python experiments/launch.py experiments/r1_zero_v3.py --tpu=r1-zero --zone=us-east5-a   # gcloud lines

An experiment file defines `get_experiment(arg=None)` returning an `experiments.launcher.Experiment` (or an
`EXPERIMENT` constant); `experiments/<file>.py:ARG` passes ARG. Every work unit's overrides are
parsed against its config (as r1.main would) before anything is printed or run. --run runs the
work units one after another from the repository root, goes on after a failure, and ends with a
summary (exit status 1 if any failed). gcloud is never run, only printed. See experiments/launcher.py.
"""

import argparse
import dataclasses
import os
import sys
from typing import Sequence

# Run as a script (python experiments/launch.py): the repository root holds the `experiments` package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import launcher  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv: Sequence[str]) -> int:
  """`python experiments/launch.py EXPERIMENT.py[:arg] [--run] [--tpu=NAME --zone=Z]`; returns the exit status."""
  parser = argparse.ArgumentParser(
      prog="experiments/launch.py", description="Print (default), run (--run) or print the TPU VM gcloud lines "
      "(--tpu) of an experiment file's work units. gcloud is never run.")
  parser.add_argument("experiment", help="experiments/<name>.py[:arg]")
  parser.add_argument("--run", action="store_true", help="run the work units here, one after another")
  parser.add_argument("--dry_run", action="store_true", help="with --run: print what would run, run nothing")
  parser.add_argument("--tpu", metavar="NAME", help="print the gcloud lines for a TPU VM slice of this name")
  parser.add_argument("--zone", help="TPU zone (default: the experiment's)")
  parser.add_argument("--project", help="GCP project (default: the experiment's, else gcloud's)")
  parser.add_argument("--code", default=".", help="with --tpu: a git URL to clone, or a local checkout to copy")
  parser.add_argument("--workdir_root", help="replaces the experiment's workdir_root")
  args = parser.parse_args(argv)

  experiment = launcher.load_experiment(args.experiment)
  if args.workdir_root:
    experiment = dataclasses.replace(experiment, workdir_root=args.workdir_root)
  try:
    for warning in launcher.check(experiment):
      print(f"# warning: {warning}", file=sys.stderr)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  units = launcher.work_units(experiment)
  where = experiment.topology if experiment.topology == "cpu" else launcher.tpu_topology(experiment.topology)
  print(f"# {experiment.name}: {len(units)} work unit(s), {experiment.config}, {where}")

  if args.tpu:
    if args.run:
      print("error: --run and --tpu: the gcloud lines are printed, never run", file=sys.stderr)
      return 2
    try:
      commands = launcher.tpu_vm_commands(experiment, args.tpu, zone=args.zone, project=args.project, code=args.code)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    for command in commands:
      print(f"# {command.description}\n{command.shell}")
    return 0
  if not args.run or args.dry_run:
    for command in launcher.local_commands(experiment):
      print(f"# {command.description}\n{command.shell}")
    return 0
  if experiment.topology != "cpu":
    print(f"warning: {experiment.name} is meant for {experiment.topology}; running it here anyway",
          file=sys.stderr)
  results = launcher.run_local(experiment)
  print(f"# summary: {sum(s == 0 for _, s, _ in results)}/{len(results)} work units succeeded")
  for name, status, seconds in results:
    print(f"#   {'ok    ' if status == 0 else 'FAILED'} {name} (exit {status}, {seconds:.1f} s)")
  return 0 if all(s == 0 for _, s, _ in results) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

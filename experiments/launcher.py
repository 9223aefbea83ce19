"""Experiments as data, and the commands that launch them (XManager's shape, plain Python).

An experiment file in `experiments/` defines `get_experiment(arg=None) -> Experiment` (or a module
constant `EXPERIMENT`): a config file, overrides shared by every run, a hyperparameter sweep (one
dict of overrides per work unit, built with `sweep` / `product` / `zip_sweep` like xm's `hyper`
helpers) and where it runs (`topology`: "cpu" or a TPU accelerator type such as "v5p-1024").
`work_units` expands it into `r1.main` argument lists, each with its own readable workdir;
`local_commands` and `tpu_vm_commands` turn those into command lines.

    python experiments/launch.py experiments/tiny_r1_zero_sweep.py            # print
    python experiments/launch.py experiments/tiny_r1_zero_sweep.py --run      # run here, in turn
    python experiments/launch.py experiments/r1_zero_v3.py --tpu=r1 --zone=us-east5-a  # gcloud lines

The `xmanager` package itself is not used: `pip install xmanager` did not resolve here (pip was
still backtracking through google-api-core and google-cloud-bigquery versions after two minutes),
it brings Vertex AI, Kubernetes and Cloud SQL clients, and its executors (local Docker, Vertex AI,
Kubernetes) do not include plain TPU VMs. Nothing here imports JAX; gcloud is only printed.
"""

import dataclasses
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Iterable, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from r1.tools.tpu_topology import tpu_topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# Sweeps: lists of override dicts, combined like xm's hyper.sweep / hyper.product / hyper.zipit.

def sweep(key: str, values: Iterable[Any]) -> list[dict]:
  """One work unit per value of one config key: sweep("grpo.kl_coef", [0, 1e-3]) -> [{...}, {...}]."""
  return [{key: v} for v in values]


def _sweeps(sweeps: Sequence[list[dict]], axes: dict) -> list[list[dict]]:
  return list(sweeps) + [sweep(key, values) for key, values in axes.items()]


def product(*sweeps: list[dict], **axes: Iterable[Any]) -> list[dict]:
  """The Cartesian product of sweeps, the first one outermost (like itertools.product).

  Arguments are lists of override dicts (from `sweep`, or written out) or `key=values` axes;
  dotted keys go through a dict: `product(**{"grpo.kl_coef": [0, 1e-3], "rollout.num_samples": [4, 8]})`.
  """
  out = []
  for combination in itertools.product(*_sweeps(sweeps, axes)):
    merged = {}
    for overrides in combination:
      merged.update(overrides)
    out.append(merged)
  return out


def zip_sweep(*sweeps: list[dict], **axes: Iterable[Any]) -> list[dict]:
  """Sweeps of equal length zipped element by element (xm's hyper.zipit): values that move together."""
  lists = _sweeps(sweeps, axes)
  lengths = [len(s) for s in lists]
  if len(set(lengths)) > 1:
    raise ValueError(f"zip_sweep needs sweeps of equal length, got lengths {lengths}")
  out = []
  for combination in zip(*lists):
    merged = {}
    for overrides in combination:
      merged.update(overrides)
    out.append(merged)
  return out


# ---------------------------------------------------------------------------------------------
# Experiments and work units.

@dataclasses.dataclass(frozen=True)
class Experiment:
  """What to run: `r1.main` with `config` (a path from the repository root, `file.py[:arg]`).

  overrides: config keys (dotted, without the `config.` prefix) set in every work unit.
  sweep: one dict of overrides per work unit, applied after `overrides`.
  topology: "cpu" (this machine) or a TPU accelerator type ("v5p-8", "v5p-1024", "v6e-8", ...).
  zone, project: defaults for the gcloud lines (the command line can set them).
  workdir_root: each work unit writes to `<workdir_root>/<name>/<work unit name>` (gs:// on TPU).
  env: environment variables set for every run.
  """
  name: str
  config: str
  overrides: dict = dataclasses.field(default_factory=dict)
  sweep: list = dataclasses.field(default_factory=lambda: [{}])
  topology: str = "cpu"
  zone: str | None = None
  project: str | None = None
  workdir_root: str = "/tmp/r1_experiments"
  env: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
      raise ValueError(f"experiment name {self.name!r}: expected letters, digits, '_', '.', '-'")
    if not self.sweep:
      raise ValueError(f"experiment {self.name}: empty sweep (use [{{}}] for a single run)")
    if self.topology != "cpu":
      tpu_topology(self.topology)


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  """One run of an experiment: its name, merged overrides, workdir and `r1.main` arguments."""
  name: str
  overrides: dict
  workdir: str
  args: list


def _key(key: str) -> str:
  return key[len("config."):] if key.startswith("config.") else key


def flag_value(value: Any) -> str:
  """A config value as `config_flags` parses it back: 1e-06, true, (128, 256), a string as is."""
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def _short_names(keys: Sequence[str]) -> dict:
  """Each key's shortest dotted suffix that no other key ends with: grpo.kl_coef -> kl_coef."""
  out = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
        break
    out[key] = suffix
  return out


def _name_value(value: Any) -> str:
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", flag_value(value)).strip("_") or "_"


def work_units(experiment: Experiment, workdir_root: str | None = None) -> list[WorkUnit]:
  """The experiment's runs in sweep order; each workdir is named after the values its sweep sets.

  The name of a unit is `key=value` for every key it sweeps (shortest unambiguous key suffix,
  in the order the keys are written), joined by ","; a sweep of one empty dict is named "run".
  Names do not depend on a unit's position: reordering a sweep, or adding values, keeps them.
  """
  root = (workdir_root or experiment.workdir_root).rstrip("/")
  base = {_key(k): v for k, v in experiment.overrides.items()}
  swept_keys = list(dict.fromkeys(_key(k) for overrides in experiment.sweep for k in overrides))
  short = _short_names(swept_keys)
  units, seen = [], {}
  for overrides in experiment.sweep:
    overrides = {_key(k): v for k, v in overrides.items()}
    name = ",".join(f"{short[k]}={_name_value(v)}" for k, v in overrides.items()) or "run"
    if name in seen:
      raise ValueError(f"experiment {experiment.name}: sweep entries {seen[name]} and {overrides} both "
                       f"name the workdir {name!r}; give each work unit distinct values")
    seen[name] = overrides
    merged = {**base, **overrides}
    workdir = f"{root}/{experiment.name}/{name}"
    args = [f"--config={experiment.config}", f"--workdir={workdir}"]
    args += [f"--config.{k}={flag_value(v)}" for k, v in merged.items()]
    units.append(WorkUnit(name, merged, workdir, args))
  return units


# ---------------------------------------------------------------------------------------------
# Checks: every override names a config field and parses, exactly as r1.main would parse it.

def parse_config(unit: WorkUnit, root: str = ROOT):
  """The ConfigDict `r1.main` would see for this work unit (its flags parsed by config_flags).

  Raises ValueError naming the work unit when an override names no config field or does not parse.
  """
  args = [a if not a.startswith("--config=") or os.path.isabs(a[len("--config="):])
          else "--config=" + os.path.join(root, a[len("--config="):]) for a in unit.args]
  argv = ["r1.main", *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "Output directory.", flag_values=flag_values)
  try:
    flag_values(argv)
  except Exception as e:  # config_flags raises KeyError / AttributeError / flags.Error.
    raise ValueError(f"work unit {unit.name}: {shlex.join(args)} does not parse: {type(e).__name__}: {e}") from e
  return flag_values["config"].value


def _flatten(d: dict, prefix: str = "") -> list[str]:
  out = []
  for k, v in d.items():
    if isinstance(v, dict) and k != "rewards":  # rewards is replaced whole, as r1.stages.pipeline does
      out += _flatten(v, f"{prefix}{k}.")
    else:
      out.append(prefix + k)
  return out


def check(experiment: Experiment, root: str = ROOT) -> list[str]:
  """Parses every work unit's config; returns warnings, raises ValueError for what cannot work.

  Errors: an override that names no field or does not parse; a TPU mesh whose fixed axes do not
  divide the slice's chips. Warning: an override of a value some pipeline stages set in
  `pipeline.stage_overrides` (the flag wins, in every stage).
  """
  warnings = []
  topology = tpu_topology(experiment.topology) if experiment.topology != "cpu" else None
  for unit in work_units(experiment):
    config = parse_config(unit, root)
    if config.get("stage") == "pipeline":
      stages = config.pipeline.stages
      stage_keys = [set(_flatten(ml_collections.ConfigDict(o).to_dict())) if o else set()
                    for o in config.pipeline.stage_overrides]
      stage_keys += [set()] * (len(stages) - len(stage_keys))
      for key in unit.overrides:
        shadowed = [i for i, keys in enumerate(stage_keys)
                    if any(key == s or key.startswith(s + ".") or s.startswith(key + ".") for s in keys)]
        where = ", ".join(f"{i} ({stages[i]})" for i in shadowed)
        if shadowed:
          # r1.main lets command-line flags win over stage_overrides, in every stage.
          warnings.append(f"work unit {unit.name}: --config.{key} replaces the per-stage value(s) of pipeline "
                          f"stage(s) {where} set in pipeline.stage_overrides, in every stage")
    if topology is not None and "mesh" in config:
      shape = dict(config.mesh.shape)
      fixed = 1
      for size in shape.values():
        fixed *= size if size > 0 else 1
      if topology.chips % fixed or (-1 not in shape.values() and fixed != topology.chips):
        raise ValueError(f"work unit {unit.name}: mesh {shape} does not fit {topology.accelerator_type} "
                         f"({topology.chips} chips)")
  return warnings


# ---------------------------------------------------------------------------------------------
# Commands.

@dataclasses.dataclass(frozen=True)
class Command:
  """One command line: what it is for, its argv, and environment variables to add."""
  description: str
  argv: list
  env: dict = dataclasses.field(default_factory=dict)

  @property
  def shell(self) -> str:
    """The command as one shell line (env assignments first), quoted so the shell reads back argv."""
    return shell_join([f"{k}={v}" for k, v in self.env.items()] + list(self.argv), env_prefix=len(self.env))


def shell_join(argv: Sequence[str], env_prefix: int = 0) -> str:
  """shlex.join, but `--flag=value` keeps the flag bare: --command='cd r1 && ...', not '--command=...'."""
  parts = []
  for i, arg in enumerate(argv):
    match = re.fullmatch(r"(--[A-Za-z0-9_.-]+=|[A-Za-z_][A-Za-z0-9_]*=)(.*)", arg, re.S)
    if match and (arg.startswith("--") or i < env_prefix):
      parts.append(match[1] + shlex.quote(match[2]) if match[2] else match[1])
    else:
      parts.append(shlex.quote(arg))
  return " ".join(parts)


def local_commands(experiment: Experiment, python: str = "python",
                   workdir_root: str | None = None) -> list[Command]:
  """One `python -m r1.main ...` per work unit, to run from the repository root."""
  return [Command(unit.name, [python, "-m", "r1.main", *unit.args], dict(experiment.env))
          for unit in work_units(experiment, workdir_root)]


def _gcloud(verb: str, positional: Sequence[str], zone: str, project: str | None, *extra: str) -> list[str]:
  argv = ["gcloud", "compute", "tpus", "tpu-vm", verb, *positional, f"--zone={zone}"]
  if project:
    argv.append(f"--project={project}")
  return argv + list(extra)


def _is_url(code: str) -> bool:
  return "://" in code or code.startswith("git@") or code.endswith(".git")


def tpu_vm_commands(experiment: Experiment, tpu_name: str, *, zone: str | None = None, project: str | None = None,
                    code: str = ".", python: str = "python3", workdir_root: str | None = None) -> list[Command]:
  """The gcloud lines that create a TPU VM slice, install r1 on every worker and run each work unit.

  code: a git URL (each worker clones it) or a local directory (copied to every worker with scp).
  Every line after `create` runs on all workers (`--worker=all`): on a multi-host slice each host
  runs the same command, and its JAX process sees that host's chips; r1.main's
  jax.distributed.initialize() (which finds the coordinator from the TPU metadata) joins them into
  one job, so a multi-host slice needs a workdir every host shares (gs://). Work units run one after
  another on the same slice. The last line deletes the slice.
  """
  if experiment.topology == "cpu":
    raise ValueError(f"experiment {experiment.name} runs on topology 'cpu'; set a TPU accelerator type")
  zone = zone or experiment.zone
  if not zone:
    raise ValueError(f"experiment {experiment.name}: no zone; pass --zone (e.g. us-east5-a for v5p)")
  project = project or experiment.project
  topology = tpu_topology(experiment.topology)
  root = workdir_root or experiment.workdir_root
  if topology.hosts > 1 and not root.startswith("gs://"):
    raise ValueError(f"experiment {experiment.name}: workdir_root {root!r} on {topology.hosts} hosts; "
                     "expected a gs:// path that every host shares (--workdir_root=gs://BUCKET/r1)")
  commands = [Command(f"create the slice ({topology})",
                      _gcloud("create", [tpu_name], zone, project, f"--accelerator-type={topology.accelerator_type}",
                              f"--version={topology.runtime_version}"))]
  if _is_url(code):
    commands.append(Command("clone r1 on every worker", _gcloud(
        "ssh", [tpu_name], zone, project, "--worker=all", f"--command=git clone {shlex.quote(code)} r1")))
  else:
    commands.append(Command("copy this checkout to every worker", _gcloud(
        "scp", [code, f"{tpu_name}:r1"], zone, project, "--worker=all", "--recurse")))
  commands.append(Command("install r1 and JAX for TPU on every worker", _gcloud(
      "ssh", [tpu_name], zone, project, "--worker=all",
      f'--command=cd r1 && {python} -m pip install -e ".[hf]" "jax[tpu]"')))
  for unit in work_units(experiment, workdir_root):
    run = shell_join([f"{k}={v}" for k, v in experiment.env.items()] + [python, "-m", "r1.main", *unit.args],
                     env_prefix=len(experiment.env))
    commands.append(Command(f"work unit {unit.name} (every worker runs the same line)", _gcloud(
        "ssh", [tpu_name], zone, project, "--worker=all", f"--command=cd r1 && {run}")))
  commands.append(Command("delete the slice when done", _gcloud("delete", [tpu_name], zone, project, "--quiet")))
  return commands


# ---------------------------------------------------------------------------------------------
# Experiment files, and running them here (the command line is experiments/launch.py).

def load_experiment(spec: str) -> Experiment:
  """Loads `path/to/file.py[:arg]`: its `get_experiment(arg)`, or its `EXPERIMENT` constant."""
  path, _, arg = spec.partition(".py:")
  path = path if path.endswith(".py") else path + ".py"
  module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  if module_spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"experiment file {path} not found")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if hasattr(module, "get_experiment"):
    return module.get_experiment(arg or None)
  if hasattr(module, "EXPERIMENT"):
    return module.EXPERIMENT
  raise ValueError(f"{path} defines neither get_experiment() nor EXPERIMENT")


def run_local(experiment: Experiment, workdir_root: str | None = None, python: str = sys.executable,
              out=None) -> list[tuple[str, int, float]]:
  """Runs the work units one after another from the repository root; returns (name, exit status, s).

  A failed unit does not stop the others.
  """
  out = out or sys.stdout
  results = []
  for command in local_commands(experiment, python, workdir_root):
    print(f"[{command.description}] {command.shell}", file=out, flush=True)
    start = time.monotonic()
    status = subprocess.run(command.argv, cwd=ROOT, env={**os.environ, **command.env}, check=False).returncode
    results.append((command.description, status, time.monotonic() - start))
    print(f"[{command.description}] exit status {status} after {results[-1][2]:.1f} s", file=out, flush=True)
  return results

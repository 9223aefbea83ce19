"""r1's entry point: `python -m r1.main --config=configs/<name>.py[:arg] --workdir=DIR`.

The config's `stage` says what runs: `model_report` (parameter counts and a timed forward pass),
`sft`, `grpo`, `sample` (rejection sampling into an SFT dataset), `eval`, or `pipeline` (stages
chained in one workdir, each resuming or skipping itself).

Multi-host (a TPU VM slice with several workers): every worker runs the same command. `--multihost`
(default `auto`: on a Cloud TPU VM or when JAX_COORDINATOR_ADDRESS is set) calls
jax.distributed.initialize() before anything touches the devices, which joins the hosts into one
JAX job (on TPU VMs the coordinator, process count and id come from the TPU metadata; elsewhere
from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Only process 0 writes to stdout;
every process keeps stderr (warnings, tracebacks). The sft, grpo, sample and eval stages (and
pipelines of them) run multi-host on a config.mesh over every process's devices: each process
reads its own rows of every batch, the global batch being the one a single process would read
(r1.data.pipeline), and process 0 writes the files; the workdir must be shared (orbax's multi-host
checkpoints need that too).
"""

import glob
import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where outputs (reports, checkpoints, metrics) go.")
_MULTIHOST = flags.DEFINE_enum(
    "multihost", "auto", ["auto", "true", "false"],
    "Call jax.distributed.initialize() first. auto: on a Cloud TPU VM or when JAX_COORDINATOR_ADDRESS is set.")


def _on_cloud_tpu_vm() -> bool:
  # TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e, v5p, v6e) and have
  # libtpu installed; checked without touching JAX's backend.
  chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(chips) and importlib.util.find_spec("libtpu") is not None


def should_initialize_distributed(mode: str, environ=os.environ) -> bool:
  """Whether `--multihost=mode` joins a multi-process JAX job (see the module docstring)."""
  if mode not in ("auto", "true", "false"):
    raise ValueError(f"--multihost={mode!r}: expected auto, true or false")
  if mode != "auto":
    return mode == "true"
  return bool(environ.get("JAX_COORDINATOR_ADDRESS")) or _on_cloud_tpu_vm()


def initialize_distributed(mode: str, environ=os.environ) -> None:
  """jax.distributed.initialize() when `mode` says so; then silences stdout on processes > 0.

  Off TPU VMs, JAX reads only the coordinator from the environment; the process count and id come
  from JAX_NUM_PROCESSES and JAX_PROCESS_ID (r1's convention, e.g. for CPU processes on one host).
  """
  if should_initialize_distributed(mode, environ):
    kwargs = {name: int(environ[var]) for name, var in (("num_processes", "JAX_NUM_PROCESSES"),
                                                        ("process_id", "JAX_PROCESS_ID")) if var in environ}
    jax.distributed.initialize(**kwargs)
    logging.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
  if jax.process_index() != 0:
    # Progress lines, eval tables and reports print once, from process 0; the metrics writer and
    # orbax already coordinate their files.
    sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with


def _training_stages():
  # Imported when a stage runs: `--help` and the multi-host setup need no model code.
  from r1.stages import eval as eval_stage, grpo as grpo_stage, model_report, sample, sft  # pylint: disable=g-import-not-at-top
  return {"sft": sft.run, "grpo": grpo_stage.run, "sample": sample.run, "eval": eval_stage.run,
          "model_report": model_report.run}


def pipeline(config, workdir: str, pinned=None):
  """The config's stages chained in `workdir`. `pinned`: config paths whose values win over
  pipeline.stage_overrides; by default those given as --config.* flags on the command line."""
  from r1.stages import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  if pinned is None:
    pinned = command_line_overrides()
  return pipeline_lib.run(config, workdir, _training_stages(), pinned=pinned)


def command_line_overrides() -> list[str]:
  """Config paths set by --config.<path>=value on the command line (none outside an absl program)."""
  if not flags.FLAGS.is_parsed():
    return []
  return sorted(name[len("config."):] for name in flags.FLAGS
                if name.startswith("config.") and flags.FLAGS[name].present)


STAGES = {
    "model_report": lambda config, workdir: _training_stages()["model_report"](config, workdir),
    "sft": lambda config, workdir: _training_stages()["sft"](config, workdir),
    "grpo": lambda config, workdir: _training_stages()["grpo"](config, workdir),
    "sample": lambda config, workdir: _training_stages()["sample"](config, workdir),
    "eval": lambda config, workdir: _training_stages()["eval"](config, workdir),
    "pipeline": pipeline,
}


def quiet_library_logs() -> None:
  """Warnings and errors only, unless --verbosity (-v) was given: the terminal shows progress lines
  and results, not the INFO logs of orbax (a thousand lines a run), JAX and r1's own bookkeeping."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  if config is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  if config.stage not in STAGES:
    raise app.UsageError(f"config.stage={config.stage!r}: implemented stages are {sorted(STAGES)}")
  quiet_library_logs()
  initialize_distributed(_MULTIHOST.value)
  logging.info("running stage %s in %s", config.stage, _WORKDIR.value)
  STAGES[config.stage](config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)

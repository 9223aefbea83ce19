"""The launcher: sweep expansion, workdir names, exact local and gcloud command lines, the
experiment files' overrides against their configs, and one real `--run` in a subprocess."""

import dataclasses
import glob
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from experiments import launcher as launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                          if os.path.basename(f) not in ("launch.py", "launcher.py", "__init__.py"))


def test_product_is_outer_first_and_zip_pairs_values():
  grid = launch.product(launch.sweep("a", [1, 2]), **{"b.c": ["x", "y"]})
  assert grid == [{"a": 1, "b.c": "x"}, {"a": 1, "b.c": "y"}, {"a": 2, "b.c": "x"}, {"a": 2, "b.c": "y"}]
  assert launch.zip_sweep(launch.sweep("a", [1, 2]), **{"b.c": ["x", "y"]}) == [{"a": 1, "b.c": "x"},
                                                                                 {"a": 2, "b.c": "y"}]
  # A product of a zip: (lr, warmup) pairs for each seed.
  pairs = launch.zip_sweep(**{"optimizer.learning_rate": [1e-4, 3e-4], "optimizer.warmup_steps": [0, 10]})
  assert len(launch.product(pairs, seed=[0, 1, 2])) == 6
  with pytest.raises(ValueError, match="equal length"):
    launch.zip_sweep(a=[1, 2], b=[1])


def test_work_units_have_readable_unique_workdirs_independent_of_order():
  sweep = launch.product(**{"grpo.kl_coef": [0.0, 1e-3], "rollout.num_samples": [4, 8]})
  experiment = launch.Experiment("exp", "configs/tiny_r1_zero.py", overrides={"config.total_steps": 5},
                                 sweep=sweep, workdir_root="/runs/")
  units = launch.work_units(experiment)
  assert [u.name for u in units] == ["kl_coef=0.0,num_samples=4", "kl_coef=0.0,num_samples=8",
                                     "kl_coef=0.001,num_samples=4", "kl_coef=0.001,num_samples=8"]
  assert units[2].workdir == "/runs/exp/kl_coef=0.001,num_samples=4"
  assert units[2].overrides == {"total_steps": 5, "grpo.kl_coef": 0.001, "rollout.num_samples": 4}
  assert units[2].args == ["--config=configs/tiny_r1_zero.py", "--workdir=/runs/exp/kl_coef=0.001,num_samples=4",
                           "--config.total_steps=5", "--config.grpo.kl_coef=0.001", "--config.rollout.num_samples=4"]
  reordered = launch.work_units(launch.Experiment("exp", "c.py", sweep=sweep[::-1], workdir_root="/runs"))
  assert [u.workdir for u in reordered] == [u.workdir for u in units][::-1]
  # Keys that share a last component keep enough of their path to stay apart; odd characters go.
  clash = launch.Experiment("e", "c.py", sweep=[{"optimizer.learning_rate": 1, "sft.learning_rate": "a b/c"}])
  assert launch.work_units(clash)[0].name == "optimizer.learning_rate=1,sft.learning_rate=a_b_c"
  assert launch.work_units(launch.Experiment("e", "c.py"))[0].name == "run"
  with pytest.raises(ValueError, match="both name the workdir"):
    launch.work_units(launch.Experiment("e", "c.py", sweep=[{"a": "x y"}, {"a": "x/y"}]))


def test_local_command_quotes_values_so_the_shell_reads_them_back():
  experiment = launch.Experiment(
      "quoting", "configs/tiny_r1_zero.py:quick", workdir_root="/tmp/r",
      overrides={"data.path": "/data/my file's.jsonl", "rollout.stop_at_answer": False,
                 "data.length_buckets": (64, 128)},
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d"})
  (command,) = launch.local_commands(experiment)
  assert command.shell == (
      "XLA_FLAGS='--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d' python -m r1.main "
      "--config=configs/tiny_r1_zero.py:quick --workdir=/tmp/r/quoting/run "
      "--config.data.path='/data/my file'\"'\"'s.jsonl' --config.rollout.stop_at_answer=false "
      "--config.data.length_buckets='(64, 128)'")
  assert shlex.split(command.shell) == [f"XLA_FLAGS={experiment.env['XLA_FLAGS']}", *command.argv]
  assert command.argv[-3:] == ["--config.data.path=/data/my file's.jsonl", "--config.rollout.stop_at_answer=false",
                               "--config.data.length_buckets=(64, 128)"]


def test_tpu_vm_commands_are_the_exact_gcloud_lines():
  experiment = launch.Experiment("r1z", "configs/r1_zero_deepseek_v3.py", topology="v5p-1024", project="proj",
                                 workdir_root="gs://bucket/r1", sweep=launch.sweep("grpo.kl_coef", [0.001]),
                                 overrides={"data.path": "/mnt/data/it's here.jsonl"})
  lines = [c.shell for c in launch.tpu_vm_commands(experiment, "r1-pod", zone="us-east5-a")]
  inner = ("cd r1 && python3 -m r1.main --config=configs/r1_zero_deepseek_v3.py "
           "--workdir=gs://bucket/r1/r1z/kl_coef=0.001 --config.data.path='/mnt/data/it'\"'\"'s here.jsonl' "
           "--config.grpo.kl_coef=0.001")
  assert lines == [
      "gcloud compute tpus tpu-vm create r1-pod --zone=us-east5-a --project=proj --accelerator-type=v5p-1024 "
      "--version=v2-alpha-tpuv5",
      "gcloud compute tpus tpu-vm scp . r1-pod:r1 --zone=us-east5-a --project=proj --worker=all --recurse",
      "gcloud compute tpus tpu-vm ssh r1-pod --zone=us-east5-a --project=proj --worker=all "
      "--command='cd r1 && python3 -m pip install -e \".[hf]\" \"jax[tpu]\"'",
      "gcloud compute tpus tpu-vm ssh r1-pod --zone=us-east5-a --project=proj --worker=all "
      f"--command={shlex.quote(inner)}",
      "gcloud compute tpus tpu-vm delete r1-pod --zone=us-east5-a --project=proj --quiet",
  ]
  # Two levels of quoting: the local shell hands gcloud the inner line, the worker's shell the value.
  command = shlex.split(lines[3])[-1]
  assert command == "--command=" + inner
  assert "--config.data.path=/mnt/data/it's here.jsonl" in shlex.split(command[len("--command="):])
  clone = launch.tpu_vm_commands(experiment, "r1-pod", zone="z", code="https://example.com/r1.git")[1]
  assert clone.shell == ("gcloud compute tpus tpu-vm ssh r1-pod --zone=z --project=proj --worker=all "
                         "--command='git clone https://example.com/r1.git r1'")
  with pytest.raises(ValueError, match="no zone"):
    launch.tpu_vm_commands(experiment, "r1-pod")
  with pytest.raises(ValueError, match="every host shares"):
    launch.tpu_vm_commands(experiment, "r1-pod", zone="z", workdir_root="/tmp/r1")
  single_host = dataclasses.replace(experiment, topology="v5p-8", workdir_root="/tmp/r1")
  assert launch.tpu_vm_commands(single_host, "v5p", zone="z")[0].shell.endswith("--accelerator-type=v5p-8 "
                                                                                  "--version=v2-alpha-tpuv5")
  with pytest.raises(ValueError, match="topology 'cpu'"):
    launch.tpu_vm_commands(launch.Experiment("e", "c.py"), "t", zone="z")


@pytest.mark.parametrize("accelerator_type,chips,hosts,runtime", [
    ("v4-8", 4, 1, "tpu-ubuntu2204-base"), ("v4-32", 16, 4, "tpu-ubuntu2204-base"),
    ("v5p-8", 4, 1, "v2-alpha-tpuv5"), ("v5p-1024", 512, 128, "v2-alpha-tpuv5"),
    ("v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite"), ("v5litepod-16", 16, 4, "v2-alpha-tpuv5-lite"),
    ("v6e-1", 1, 1, "v2-alpha-tpuv6e"), ("v6e-256", 256, 64, "v2-alpha-tpuv6e")])
def test_topology_table(accelerator_type, chips, hosts, runtime):
  topology = launch.tpu_topology(accelerator_type)
  assert (topology.chips, topology.hosts, topology.runtime_version) == (chips, hosts, runtime)


@pytest.mark.parametrize("accelerator_type", ["v5p-7", "v6e-10", "v7-8", "v5e-8", "cpu"])
def test_unknown_topologies_are_refused(accelerator_type):
  with pytest.raises(ValueError, match="accelerator type"):
    launch.tpu_topology(accelerator_type)


def _get(config, dotted):
  for part in dotted.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=os.path.basename)
def test_every_experiment_file_loads_and_its_overrides_reach_the_config(path):
  experiment = launch.load_experiment(path)
  with open(path) as f:
    assert f.read().lstrip().startswith('"""'), f"{path} needs a docstring (what, hardware, command)"
  launch.check(experiment)
  units = launch.work_units(experiment)
  assert len({u.workdir for u in units}) == len(units)
  for unit in units:
    config = launch.parse_config(unit)  # exactly as r1.main parses the flags
    for key, value in unit.overrides.items():
      assert _get(config, key) == value, (unit.name, key)


def test_check_refuses_overrides_that_cannot_work():
  def unit_check(config, topology="cpu", **overrides):
    return launch.check(launch.Experiment("e", config, overrides=overrides, topology=topology))

  with pytest.raises(ValueError, match="grpo.kl_coeff"):
    unit_check("configs/tiny_r1_zero.py", **{"grpo.kl_coeff": 0.1})
  with pytest.raises(ValueError, match="total_steps"):
    unit_check("configs/model_report.py", total_steps=3)
  # Both pipeline stages set the learning rate in pipeline.stage_overrides: the flag replaces both.
  warnings = unit_check("configs/tiny_r1_zero.py", **{"optimizer.learning_rate": 3e-4})
  assert len(warnings) == 1 and "0 (sft), 1 (grpo)" in warnings[0] and "in every stage" in warnings[0]
  warnings = unit_check("configs/r1_deepseek_v3.py", topology="v5p-1024", **{"grpo.clip_eps": 1.0})
  assert len(warnings) == 1 and "4 (grpo)" in warnings[0]
  # fsdp 32 x expert 8 needs 256 chips; a v5p-8 has 4.
  with pytest.raises(ValueError, match="does not fit v5p-8"):
    unit_check("configs/r1_zero_deepseek_v3.py", topology="v5p-8")
  assert unit_check("configs/r1_zero_deepseek_v3.py", topology="v5p-1024") == []


def _cli():
  spec = importlib.util.spec_from_file_location("experiments_launch", os.path.join(ROOT, "experiments", "launch.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main


def test_cli_prints_local_and_gcloud_lines(capsys):
  cli = _cli()
  path = os.path.join(ROOT, "experiments", "grpo_v2_lite_gsm8k.py")
  assert cli([path, "--tpu=v2lite", "--zone=us-east5-a", "--workdir_root=gs://b/r"]) == 0
  experiment = launch.load_experiment(path)
  expected = launch.tpu_vm_commands(dataclasses.replace(experiment, workdir_root="gs://b/r"), "v2lite",
                                    zone="us-east5-a")
  printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
  assert printed == [c.shell for c in expected] and len(printed) == 3 + 3 + 1
  assert cli([path, "--tpu=v2lite"]) == 2 and "no zone" in capsys.readouterr().err
  assert cli([path, "--run", "--dry_run"]) == 0
  printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
  assert printed == [c.shell for c in launch.local_commands(experiment)]


def test_model_report_sweep_still_prints_its_commands():
  proc = subprocess.run([sys.executable, "experiments/model_report_sweep.py", "--workdir_root=/tmp/mr"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, check=True)
  commands = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
  assert len(commands) == 6
  assert commands[2] == ("python -m r1.main --config=configs/model_report.py "
                         "--workdir=/tmp/mr/model_report_sweep/name=small_v3,seq_len=128 "
                         "--config.model.name=small_v3 --config.forward.seq_len=128")


def test_run_executes_each_work_unit_and_reports_failures(tmp_path):
  """Two cheap model reports: one runs and writes its workdir, one names no model and fails."""
  experiment_file = tmp_path / "two_reports.py"
  experiment_file.write_text(f'''"""Two model reports."""
from experiments import launcher as launch
EXPERIMENT = launch.Experiment(
    "two_reports", "configs/model_report.py:tiny_v3", workdir_root={str(tmp_path)!r},
    overrides={{"forward.batch_size": 1, "forward.seq_len": 8}},
    sweep=launch.sweep("model.name", ["tiny_v2", "no_such_model"]), env={{"JAX_PLATFORMS": "cpu"}})
''')
  proc = subprocess.run([sys.executable, "experiments/launch.py", str(experiment_file), "--run"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
  assert "1/2 work units succeeded" in proc.stdout
  assert "FAILED no_such_model=" not in proc.stdout and "FAILED name=no_such_model" in proc.stdout
  with open(tmp_path / "two_reports" / "name=tiny_v2" / "model_report.json") as f:
    report = json.load(f)
  assert report["model"] == "tiny_v2"
  assert "forward [1, 8]" in proc.stdout  # the shared overrides reached the run
  assert not (tmp_path / "two_reports" / "name=no_such_model" / "model_report.json").exists()

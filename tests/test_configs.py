"""Every experiment config loads, names a real stage and model, and has every field its stage
reads (the tiny config, which the integration tests run, is the reference schema)."""

import importlib.util
import os

import pytest

from r1 import main
from r1.model import configs as model_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
TRAINING_SECTIONS = ("data", "rollout", "grpo", "optimizer", "eval", "checkpoint", "log", "mesh", "model", "init",
                     "tokenizer")


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _keys(d, prefix=""):
  out = set()
  for k, v in d.items():
    out.add(prefix + k)
    if isinstance(v, dict) and k not in ("overrides", "task_knobs", "shape", "rewards"):
      out |= _keys(v, prefix + k + ".")
  return out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_with_a_known_stage_and_model(name):
  config = load(name)
  assert config.stage in main.STAGES, config.stage
  assert config.model.name in model_configs.names()
  with open(os.path.join(ROOT, "configs", name)) as f:
    assert f.read().lstrip().startswith('"""'), f"{name} needs a docstring (what, hardware, command)"


@pytest.mark.parametrize("name", [c for c in CONFIGS if c not in ("model_report.py", "tiny_r1_zero.py")])
def test_training_configs_have_the_fields_their_stage_reads(name):
  reference = _keys(load("tiny_r1_zero.py").to_dict())
  config = _keys(load(name).to_dict())
  for section in TRAINING_SECTIONS:
    expected = {k for k in reference if k.startswith(section + ".") and not k.startswith("data.task")
                and k not in ("data.train_size", "data.eval_size")}
    missing = sorted(expected - config)
    assert not missing, f"{name} lacks {missing}"


def test_build_mesh_reads_the_mesh_shape_and_slices():
  from r1.train import common  # pylint: disable=g-import-not-at-top
  config = load("tiny_r1_zero.py", "quick")
  assert common.build_mesh(config) is None            # every axis 1, one slice: no mesh
  config.mesh.dcn_data = 2                             # two slices need devices in pairs
  with pytest.raises(ValueError, match="dcn_data=2"):
    common.build_mesh(config)


def test_command_line_flags_win_over_stage_overrides():
  from r1.train import pipeline  # pylint: disable=g-import-not-at-top
  config = load("tiny_r1_zero.py")
  config.optimizer.learning_rate = 0.5                  # as --config.optimizer.learning_rate=0.5 would
  sft, grpo = (pipeline.stage_config(config, i, None) for i in (0, 1))
  assert (sft.optimizer.learning_rate, grpo.optimizer.learning_rate) == (3e-3, 1e-4)   # the stage values
  sft, grpo = (pipeline.stage_config(config, i, None, pinned=["optimizer.learning_rate"]) for i in (0, 1))
  assert sft.optimizer.learning_rate == grpo.optimizer.learning_rate == 0.5
  assert (sft.total_steps, grpo.optimizer.schedule) == (3000, "constant")   # other overrides still apply
  grpo = pipeline.stage_config(config, 1, None, pinned=["optimizer"])       # a whole section pinned
  assert grpo.optimizer.schedule == config.optimizer.schedule


def test_main_passes_the_flags_given_on_the_command_line(tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  script = tmp_path / "show_overrides.py"
  script.write_text("from absl import app\nfrom r1 import main\n"
                    "app.run(lambda argv: print(main.command_line_overrides()))\n")
  out = subprocess.run([sys.executable, str(script), "--config=configs/tiny_r1_zero.py:quick", "--workdir=/tmp/x",
                        "--config.optimizer.learning_rate=0.5", "--config.rollout.num_samples=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.stdout.strip() == "['optimizer.learning_rate', 'rollout.num_samples']", out.stderr[-2000:]

"""Every experiment config loads, names a real stage and model, and has every field of each section
(configs/common.py's builders are the schema the stages read)."""

import importlib.util
import os

import pytest

from configs import common as config_sections
from r1 import main
from r1.model import presets as model_presets
from r1.stages import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and f not in ("common.py", "__init__.py"))


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
  assert config.model.name in model_presets.names()
  with open(os.path.join(ROOT, "configs", name)) as f:
    assert f.read().lstrip().startswith('"""'), f"{name} needs a docstring (what, hardware, command)"


SECTIONS = {name: getattr(config_sections, name) for name in ("init", "tokenizer", "rollout", "grpo", "reward_model",
                                                             "optimizer", "eval", "checkpoint", "log", "sft", "sample")}


@pytest.mark.parametrize("name", [c for c in CONFIGS if c != "model_report.py"])
def test_training_configs_have_every_field_of_each_section(name):
  # The stages read config.<section>.<field> with no default of their own: a field missing from a
  # config (or not overridable on the command line) would be an AttributeError mid-run.
  config = load(name)
  for section, build in SECTIONS.items():
    if section not in config:
      assert section in ("sft", "sample"), f"{name} lacks config.{section}"   # only where those stages run
      continue
    missing = sorted(_keys(build().to_dict()) - _keys(config[section].to_dict()))
    assert not missing, f"{name}: config.{section} lacks {missing}"
  assert set(config_sections.mesh().shape) == set(config.mesh.shape)
  stages = set(config.pipeline.stages) if config.stage == "pipeline" else {config.stage}
  for section in {"sft", "sample"} & stages:
    assert section in config, f"{name} runs the {section} stage without config.{section}"


def test_a_section_refuses_a_field_it_does_not_define():
  assert config_sections.rollout(num_samples=16).num_samples == 16
  with pytest.raises(ValueError, match=r"config.rollout has no field\(s\) \['num_sample'\]"):
    config_sections.rollout(num_sample=16)
  with pytest.raises(ValueError, match=r"config.mesh.shape has no field\(s\) \['experts'\]"):
    config_sections.mesh(experts=8)
  # Optional fields are typed placeholders, so the command line can set them.
  section = config_sections.eval()
  assert section.max_new_tokens is None
  section.max_new_tokens = 64
  with pytest.raises(TypeError):
    section.max_new_tokens = "long"


def test_build_mesh_reads_the_mesh_shape_and_slices():
  from r1.stages import common  # pylint: disable=g-import-not-at-top
  config = load("tiny_r1_zero.py", "quick")
  assert common.build_mesh(config) is None            # every axis 1, one slice: no mesh
  config.mesh.dcn_data = 2                             # two slices need devices in pairs
  with pytest.raises(ValueError, match="dcn_data=2"):
    common.build_mesh(config)


def test_command_line_flags_win_over_stage_overrides():
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


def test_distill_pipeline_hands_each_stage_its_policy_teacher_and_data():
  config = load("distill_tiny.py", "quick,logits")
  dirs = [f"/w/{i}_{s}" for i, s in enumerate(config.pipeline.stages)]
  stages = [pipeline.stage_config(config, i, dirs[i - 1] if i else None, stage_dirs=dirs)
            for i in range(len(dirs))]
  teacher_sft, teacher_grpo, student_sft, sample_stage, distill, student_grpo = stages
  assert teacher_sft.init.hf_dir == "" and teacher_sft.model.name == "tiny_v3"
  assert teacher_grpo.init.hf_dir == "/w/0_sft/policy"
  # The student starts from random init of its own model, with the pipeline's one tokenizer.
  assert student_sft.init.hf_dir == "" and student_sft.model.name == "tiny_qwen2"
  assert student_sft.tokenizer.path == "/w/1_grpo/tokenizer"
  assert sample_stage.init.hf_dir == "/w/1_grpo/policy"                 # the teacher samples
  assert distill.init.hf_dir == "/w/2_sft/policy"                       # the student's base
  assert (distill.sft.source, distill.sft.path) == ("jsonl", "/w/3_sample/sft_data.jsonl")
  assert distill.sft.distill.teacher_dir == "/w/1_grpo/policy" and distill.sft.distill.weight == 1.0
  assert student_grpo.init.hf_dir == "/w/2_sft/policy" and student_grpo.sft.distill.teacher_dir == ""
  # Without ":logits" there is no teacher in the SFT loss.
  plain = load("distill_tiny.py", "quick")
  assert pipeline.stage_config(plain, 4, dirs[3], stage_dirs=dirs).sft.distill.weight == 0.0
  with pytest.raises(ValueError, match="earlier stage"):
    bad = load("distill_tiny.py", "quick")
    bad.pipeline.policy_from = ("previous", 1)
    pipeline.stage_config(bad, 1, dirs[0], stage_dirs=dirs)
  with pytest.raises(ValueError, match="unknown arguments"):
    load("distill_tiny.py", "fast")


def test_policy_from_a_path_takes_its_sibling_tokenizer(tmp_path):
  (tmp_path / "teacher" / "policy").mkdir(parents=True)
  (tmp_path / "teacher" / "tokenizer").mkdir()
  config = load("distill_tiny.py", "quick")
  config.pipeline.policy_from = ("previous", "previous", "init", str(tmp_path / "teacher" / "policy"), 2, 2)
  c = pipeline.stage_config(config, 3, "/w/2_sft", stage_dirs=[f"/w/{i}" for i in range(6)])
  assert c.init.hf_dir == str(tmp_path / "teacher" / "policy")
  assert c.tokenizer.path == str(tmp_path / "teacher" / "tokenizer")

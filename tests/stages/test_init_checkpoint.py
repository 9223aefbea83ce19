"""A stage starts from an r1 train-state checkpoint (config.init.checkpoint_dir): only the weights
are read, they equal what the saving stage exported, a GRPO stage trains from them, and a wrong
directory, step or model is refused by name."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

import r1
from configs import tiny_r1_zero
from r1 import optim, train_state
from r1.checkpoints.hf import CheckpointError
from r1.checkpoints.manager import TrainCheckpointer, restore_variables
from r1.stages import common, pipeline, grpo as grpo_stage, sft
from tests.child_env import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SFT_STEPS = 3


def stage_config(index: int, **init):
  """Stage `index` of the quick tiny pipeline (0: SFT, 1: GRPO), cut down for a test."""
  c = tiny_r1_zero.get_config("quick")
  c.tokenizer.corpus_size = 300
  c = pipeline.stage_config(c, index, None)
  c.eval.at_start = c.eval.at_end = False
  c.checkpoint.save_every = 1
  c.init.update(init)
  return c


@pytest.fixture(scope="module")
def sft_workdir(tmp_path_factory):
  """An SFT stage of SFT_STEPS steps: checkpoints of steps 2 and 3, and the exported policy."""
  workdir = str(tmp_path_factory.mktemp("sft"))
  config = stage_config(0)
  config.total_steps = SFT_STEPS
  sft.run(config, workdir)
  return workdir


def build(config_or_sft_workdir, **init):
  """The policy build_policy makes for a config, or for a GRPO stage starting from the SFT
  stage's checkpoints (with `init` fields on top)."""
  config = config_or_sft_workdir
  if isinstance(config, str):
    config = stage_config(1, checkpoint_dir=os.path.join(config_or_sft_workdir, "checkpoints"), **init)
  tokenizer, _ = common.build_tokenizer(config, "/nonexistent-unused")  # never trains one here
  return common.build_policy(config, tokenizer)


def assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_init_equals_the_exported_policy(sft_workdir):
  policy = build(sft_workdir)
  exported = r1.load_hf_checkpoint(os.path.join(sft_workdir, "policy"))
  assert policy.config.vocab_size == exported.config.vocab_size
  assert_same_tree(policy.variables, exported.variables)
  assert set(policy.variables) == {"params", "moe_bias"}
  # The balancing bias moved during SFT, so it really was read (random init has zeros).
  assert np.abs(np.asarray(jax.tree.leaves(policy.variables["moe_bias"])[0])).max() > 0
  tokens = np.random.default_rng(0).integers(1, policy.config.vocab_size, (2, 12))
  np.testing.assert_array_equal(np.asarray(policy.logits(tokens)), np.asarray(exported.logits(tokens)))


def test_checkpoint_step_selects_an_earlier_state(sft_workdir):
  checkpoints = os.path.join(sft_workdir, "checkpoints")
  earlier = build(sft_workdir, checkpoint_step=SFT_STEPS - 1)
  latest = build(sft_workdir)
  assert not np.array_equal(np.asarray(earlier.params["embed_tokens"]), np.asarray(latest.params["embed_tokens"]))
  # Provenance (sample stage) names the step restored.
  describe = lambda **init: common.init_description(stage_config(1, checkpoint_dir=checkpoints, **init))
  assert describe() == f"{checkpoints}@step{SFT_STEPS}" and describe(checkpoint_step=2) == f"{checkpoints}@step2"
  # The whole state restored the usual way (with the SFT stage's optimizer as target) has the same weights.
  o = stage_config(0).optimizer
  optimizer, _ = optim.make_optimizer(o.learning_rate, warmup_steps=o.warmup_steps, decay_steps=SFT_STEPS,
                                      schedule=o.schedule, weight_decay=o.weight_decay,
                                      max_grad_norm=o.max_grad_norm, b2=o.b2)
  target = jax.eval_shape(lambda v: train_state.init_train_state(v, optimizer, with_reference=False),
                          latest.variables)
  with TrainCheckpointer(checkpoints, save_every=1) as ckpt:
    state = ckpt.restore(SFT_STEPS - 1, target_state=target)
  assert_same_tree(earlier.variables, {"params": state.params, "moe_bias": state.moe_bias})


def test_any_optimizer_and_reference_in_the_checkpoint(sft_workdir, tmp_path):
  # A state of another optimizer (SGD with momentum) with a reference copy: only the weights matter.
  policy = build(sft_workdir)
  variables = jax.tree.map(lambda x: x * 2, policy.variables)
  state = train_state.init_train_state(variables, optax.sgd(0.1, momentum=0.9), with_reference=True)
  with TrainCheckpointer(tmp_path / "checkpoints", save_every=1) as ckpt:
    ckpt.save(7, state)
  config = stage_config(1, checkpoint_dir=str(tmp_path / "checkpoints"))
  config.tokenizer.path = os.path.join(sft_workdir, "tokenizer")
  assert_same_tree(build(config).variables, jax.tree.map(lambda x: x * 2, policy.variables))


def test_grpo_stage_starts_from_the_checkpoint(sft_workdir, tmp_path):
  config = stage_config(1, checkpoint_dir=os.path.join(sft_workdir, "checkpoints"))
  config.total_steps = 1
  config.rollout.max_new_tokens = 32  # Fast: what is checked is where the stage started.
  config.eval.num_examples = 4
  grpo_stage.run(config, str(tmp_path))
  # The GRPO reference is the frozen starting policy: the SFT stage's final weights.
  sft_final = r1.load_hf_checkpoint(os.path.join(sft_workdir, "policy"))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), sft_final.params)
  reference = restore_variables(tmp_path / "checkpoints", {"ref_params": abstract})["ref_params"]
  assert_same_tree(reference, sft_final.params)
  # It ran its step from there, with the SFT stage's tokenizer.
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    assert [row["step"] for row in map(json.loads, f) if "reward" in row] == [1]
  with open(os.path.join(sft_workdir, "tokenizer", "tokenizer.model"), "rb") as a, \
       open(os.path.join(tmp_path, "tokenizer", "tokenizer.model"), "rb") as b:
    assert a.read() == b.read()


def test_a_pipeline_stage_after_the_first_starts_from_hf_dir(tmp_path):
  c = tiny_r1_zero.get_config("quick")
  c.init.checkpoint_dir = str(tmp_path / "elsewhere" / "checkpoints")
  assert pipeline.stage_config(c, 0, None).init.checkpoint_dir == c.init.checkpoint_dir
  second = pipeline.stage_config(c, 1, str(tmp_path / "0_sft"))
  assert second.init.checkpoint_dir == "" and second.init.hf_dir == str(tmp_path / "0_sft" / "policy")


def test_errors_name_the_path(sft_workdir, tmp_path):
  checkpoints = os.path.join(sft_workdir, "checkpoints")
  tokenizer_path = os.path.join(sft_workdir, "tokenizer")
  config = stage_config(1, hf_dir=os.path.join(sft_workdir, "policy"), checkpoint_dir=checkpoints)
  config.tokenizer.path = tokenizer_path
  with pytest.raises(ValueError, match="hf_dir=.*checkpoint_dir=.*set one"):
    build(config)
  missing = str(tmp_path / "nope" / "checkpoints")
  config = stage_config(1, checkpoint_dir=missing)
  config.tokenizer.path = tokenizer_path
  with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
    build(config)
  (tmp_path / "empty").mkdir()
  config = stage_config(1, checkpoint_dir=str(tmp_path / "empty"))
  config.tokenizer.path = tokenizer_path
  with pytest.raises(FileNotFoundError, match=f"no checkpoint in {tmp_path / 'empty'}"):
    build(config)
  with pytest.raises(FileNotFoundError, match=rf"no checkpoint for step 1 in {checkpoints}; saved steps: \[2, 3\]"):
    build(sft_workdir, checkpoint_step=1)
  config = stage_config(1, checkpoint_dir=checkpoints)
  config.model.overrides.hidden_size = 32
  with pytest.raises(CheckpointError, match=rf"{checkpoints}/3/state does not match the model: .*"
                                            r"params.embed_tokens: shape \(\d+, 64\) != expected \(\d+, 32\)"):
    build(config)


def test_sharded_restore_on_8_devices(sft_workdir):
  """With a mesh (data=2, fsdp=2, expert=2) the weights land sharded, with the one-device values."""
  script = textwrap.dedent(f"""
      import jax, numpy as np
      import r1
      from r1 import sharding
      from r1.model import abstract_variables
      from r1.stages import common
      from tests.stages.test_init_checkpoint import stage_config
      config = stage_config(1, checkpoint_dir={os.path.join(sft_workdir, "checkpoints")!r})
      config.mesh.shape.update(data=2, fsdp=2, expert=2)
      mesh = common.build_mesh(config)
      tokenizer, _ = common.build_tokenizer(config, "/nonexistent-unused")
      policy = common.build_policy(config, tokenizer, mesh)
      expected = sharding.variable_shardings(abstract_variables(policy.config), mesh)
      exported = r1.load_hf_checkpoint({os.path.join(sft_workdir, "policy")!r})
      for x, s, y in zip(jax.tree.leaves(policy.variables), jax.tree.leaves(expected),
                         jax.tree.leaves(exported.variables)):
        assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
      experts = policy.params["layers_1"]["mlp"]["experts_gate_proj"]
      print("SHARD", experts.shape, experts.addressable_shards[0].data.shape)
  """)
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env(8), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  shard_line = [line for line in proc.stdout.splitlines() if line.startswith("SHARD")][-1]
  global_shape, shard_shape = shard_line[len("SHARD "):].split(") (")
  e = int(global_shape.strip("(").split(",")[0])
  assert int(shard_shape.split(",")[0]) == e // 2, shard_line  # experts split over `expert`

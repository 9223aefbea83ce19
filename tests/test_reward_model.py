"""The model-based reward: value head at the last real token, checkpoints, the Bradley-Terry loss,
and its hook in the GRPO stage."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import r1
from configs import tiny_r1_zero
from r1 import sampling
from r1.checkpoints import safetensors_io
from r1.checkpoints.hf import CheckpointError
from r1.model import Transformer, get_model_config
from r1 import reward_model as rm_lib
from r1.stages import rollout

SEQUENCES = [[5, 6, 7], [9, 10, 11, 12, 13, 14], [3, 4, 5, 6, 7, 8, 9, 100]]


@pytest.fixture(scope="module")
def rm():
  # tiny_v3 with one dense and one MoE layer: every block kind, half the compile time.
  return rm_lib.init_reward_model(get_model_config("tiny_v3", num_hidden_layers=2), jax.random.key(0))


@pytest.fixture(scope="module")
def saved(rm, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("rm"))
  rm_lib.save_reward_model(dataclasses.replace(rm, mean=0.5, std=2.0), directory)
  return directory


def test_score_is_the_head_at_the_last_real_token(rm):
  batch = rm_lib.sequence_batch(SEQUENCES)
  forward = jax.jit(lambda v, b: Transformer(rm.config).apply(v, b["tokens"], b["positions"], b["segment_ids"],
                                                              return_logits=False).hidden)
  hidden = np.asarray(forward(rm.backbone.variables, batch), np.float64)
  head = rm.variables["params"]["value_head"]
  kernel, bias = np.asarray(head["kernel"], np.float64), np.asarray(head["bias"], np.float64)
  expected = np.array([hidden[b, len(s) - 1] @ kernel[:, 0] + bias[0] for b, s in enumerate(SEQUENCES)])
  got = rm.score_batch(batch)
  assert got.dtype == np.float32 and got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.std(got) > 1e-3  # different sequences, different rewards


def test_padding_does_not_change_the_score(rm):
  right = rm.score_batch(rm_lib.sequence_batch(SEQUENCES))
  # Left padding with junk pad tokens, positions counted from the first real token.
  t = max(map(len, SEQUENCES))
  tokens = np.full((3, t), 77, np.int32)
  segments = np.zeros((3, t), np.int32)
  for b, s in enumerate(SEQUENCES):
    tokens[b, t - len(s):], segments[b, t - len(s):] = s, 1
  positions = np.maximum(np.cumsum(segments, axis=1) - 1, 0)
  np.testing.assert_allclose(rm.score(tokens, positions, segments), right, atol=1e-5)
  # Chunked forward passes (the last chunk padded by repetition) give the same rewards.
  np.testing.assert_allclose(rm.score(tokens, positions, segments, batch_size=2), right, atol=1e-5)
  # And a sequence on its own, no padding at all.
  np.testing.assert_allclose(rm.score(np.array([SEQUENCES[0]], np.int32)), right[:1], atol=1e-5)


def test_rollout_scores_prompt_plus_completion_in_the_sampler_layout(rm):
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
  completions = np.array([[20, 21, 0, 0], [22, 23, 24, 25], [26, 0, 0, 0], [27, 28, 29, 0]], np.int32)
  mask = completions != 0
  prompt_tokens, prompt_mask = sampling.pad_prompts(prompts)  # left-padded to a bucket
  got = rollout.reward_model_scores(rm, prompt_tokens, prompt_mask, completions, mask, num_samples=2)
  full = [prompts[i // 2] + [int(x) for x in completions[i][mask[i]]] for i in range(4)]
  expected = rm.score_batch(rm_lib.sequence_batch(full, length=prompt_tokens.shape[1] + 4))
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_save_load_round_trip_gives_identical_scores(rm, saved):
  loaded = rm_lib.load_reward_model(saved)
  assert (loaded.mean, loaded.std) == (0.5, 2.0)
  batch = rm_lib.sequence_batch(SEQUENCES)
  np.testing.assert_array_equal(loaded.score_batch(batch), (rm.score_batch(batch) - 0.5) / 2.0)
  # The directory is also a plain Hugging Face checkpoint of the backbone (the head kept apart).
  policy = r1.load_hf_checkpoint(saved)
  assert "value_head" not in policy.variables["params"]
  assert policy.config == rm.config


@pytest.mark.parametrize("damage, message", [
    ("delete_head", "reward_head.safetensors: reward head file is missing"),
    ("wrong_shape", "value_head.kernel: shape (65, 1) != expected (64, 1)"),
    ("missing_bias", "missing tensor value_head.bias"),
    ("truncated", "reward_head.safetensors"),
    ("delete_metadata", "reward_model.json: missing"),
])
def test_a_damaged_head_raises_checkpoint_error(saved, tmp_path, damage, message):
  directory = str(tmp_path / "rm")
  shutil.copytree(saved, directory)
  head = os.path.join(directory, rm_lib.HEAD_FILE)
  good = {k: np.array(v) for k, v in ((k, safetensors_io.SafetensorsFile(head).get(k))
                                      for k in ("value_head.kernel", "value_head.bias"))}
  if damage == "delete_head":
    os.remove(head)
  elif damage == "wrong_shape":
    safetensors_io.save_file({**good, "value_head.kernel": np.zeros((65, 1), np.float32)}, head)
  elif damage == "missing_bias":
    safetensors_io.save_file({"value_head.kernel": good["value_head.kernel"]}, head)
  elif damage == "truncated":
    with open(head, "r+b") as f:
      f.truncate(6)
  else:
    os.remove(os.path.join(directory, rm_lib.METADATA_FILE))
  with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
    rm_lib.load_reward_model(directory)


def test_pairwise_loss_is_float64_bradley_terry(rm):
  chosen = rm_lib.sequence_batch(SEQUENCES, length=9)
  rejected = rm_lib.sequence_batch([s[::-1] + [1] for s in SEQUENCES], length=9)
  margin = rm.score_batch(chosen).astype(np.float64) - rm.score_batch(rejected).astype(np.float64)
  expected = np.mean(np.log1p(np.exp(-margin)))  # -log sigmoid(r_c - r_r)
  got = jax.jit(rm_lib.pairwise_loss, static_argnums=0)(rm.config, rm.variables, chosen, rejected)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def _preference_pairs(rng, n):
  """Random sequences that differ in one position: token 7 there (chosen) or token 8 (rejected)."""
  base = rng.integers(10, 60, size=(n, 6))
  where = rng.integers(0, 6, size=n)
  chosen, rejected = base.copy(), base.copy()
  chosen[np.arange(n), where], rejected[np.arange(n), where] = 7, 8
  return rm_lib.sequence_batch(chosen.tolist()), rm_lib.sequence_batch(rejected.tolist())


def test_a_few_pairwise_steps_learn_a_toy_preference(rm):
  rng = np.random.default_rng(0)
  held_out = _preference_pairs(rng, 64)

  def accuracy(model):
    return float(np.mean(model.score_batch(held_out[0]) > model.score_batch(held_out[1])))

  before = accuracy(rm)
  optimizer = optax.adam(3e-3)
  step = rm_lib.make_pairwise_step(rm.config, optimizer)
  variables = jax.tree.map(jnp.copy, rm.variables)  # the step donates its inputs
  opt_state = optimizer.init(variables["params"])
  for _ in range(12):
    variables, opt_state, metrics = step(variables, opt_state, *_preference_pairs(rng, 32))
  after = accuracy(dataclasses.replace(rm, variables=variables))
  assert after >= 0.9 and after > before + 0.2, (before, after)
  assert float(metrics["loss"]) < np.log(2)


# ----------------------------------------------------------------------------------------------
# The GRPO stage with and without a reward model.


def _stage_config():
  c = tiny_r1_zero.get_config("quick")
  c.stage, c.total_steps = "grpo", 1
  c.data.batch_size, c.rollout.num_samples, c.rollout.max_new_tokens = 2, 2, 8
  # The final evaluation samples the same shapes as a rollout (2 prompts x 2): no new compile.
  c.eval.at_start, c.eval.num_examples, c.eval.k, c.eval.batch_size = False, 2, 2, 2
  c.tokenizer.vocab_size, c.tokenizer.corpus_size = 400, 400
  return c


def _last_rollout_row(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "reward" in r][-1]


def test_without_a_reward_model_the_stage_says_it_runs_on_rules(capsys):
  policy_config = get_model_config("tiny_v3")
  assert rm_lib.from_stage_config(_stage_config(), policy_config) is None
  lines = capsys.readouterr().out.splitlines()
  assert lines == ["RL stage: no reward model configured (config.reward_model.path is empty); running with "
                   "rule-based rewards only: accuracy, format"]


def test_grpo_stage_adds_the_weighted_reward_model_score(saved, rm, tmp_path, capsys):
  from r1.stages import grpo as grpo_stage  # pylint: disable=g-import-not-at-top
  config = _stage_config()
  assert rm.config.vocab_size >= config.tokenizer.vocab_size  # covers the policy's tokenizer
  config.reward_model.path, config.reward_model.weight = saved, 2.0
  grpo_stage.run(config, str(tmp_path))
  assert f"reward model {saved} (weight 2.0) added to the rule-based rewards: accuracy, format" in (
      capsys.readouterr().out)
  row = _last_rollout_row(tmp_path)
  # A random head gives each completion its own score, and the total is the weighted sum.
  assert row["rewards/reward_model/std"] > 1e-4
  assert row["reward"] == pytest.approx(
      row["rewards/accuracy/mean"] + 0.5 * row["rewards/format/mean"] + 2.0 * row["rewards/reward_model/mean"],
      abs=1e-5)

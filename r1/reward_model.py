"""A model-based reward: the DeepSeek backbone plus a scalar value head (R1 §2.3.4).

R1's last RL stage ("RL for all scenarios") adds reward models for general data (helpfulness,
harmlessness) to the rule-based rewards. Here a reward model is the r1 Transformer with a linear
head `value_head` (kernel [D, 1], bias [1]) read at the final hidden state of each sequence's last
real token, trained with the Bradley-Terry pairwise loss -log sigmoid(r_chosen - r_rejected)
(InstructGPT eq. 1).

  rm = init_reward_model(get_model_config("tiny_v3"), jax.random.key(0))
  scores = rm.score_batch(batch)            # f32[N]; batch as from r1.stages.rollout.grpo_batch
  save_reward_model(rm, "/tmp/rm")          # HF backbone + reward_head.safetensors + reward_model.json
  rm = load_reward_model("/tmp/rm", dtype="bfloat16", mesh=mesh)

The head itself is r1/model/reward_head.py; this file is what uses it: scoring batches on a mesh,
initialising, the pairwise training step, and the reward-model directory format. The rule-based
rewards (r1/rewards/) know nothing of it or of JAX; the GRPO stage loads it only when
config.reward_model.path is set.
"""

import contextlib
import dataclasses
import functools
import json
import os

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1 import sharding
from r1.checkpoints import hf, safetensors_io
from r1.checkpoints.hf import CheckpointError
from r1.model import ModelConfig, init_variables
from r1.model.reward_head import ValueHead, reward_scores
from r1.policy import Policy

HEAD_FILE = "reward_head.safetensors"
METADATA_FILE = "reward_model.json"
INDEX_FILE = "model.safetensors.index.json"
FORMAT = "r1.reward_model"


@functools.lru_cache(maxsize=16)
def _score_fn(config: ModelConfig):
  return jax.jit(functools.partial(reward_scores, config))


def _rows(x, rows: int) -> np.ndarray:
  """Pads axis 0 to `rows` by repeating the last row (a real sequence: no fully masked rows)."""
  x = np.asarray(x)
  return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1), mode="edge")


@dataclasses.dataclass(frozen=True)
class RewardModel:
  """A reward model: config, variables {"params": {..., "value_head"}, "moe_bias"?}, score
  normalisation (r - mean) / std from the checkpoint, and the mesh its variables live on."""
  config: ModelConfig
  variables: dict
  mean: float = 0.0
  std: float = 1.0
  mesh: jax.sharding.Mesh | None = None

  @property
  def backbone(self) -> Policy:
    """The backbone as a Policy (the value head left out; its LM head is unused here)."""
    params = {k: v for k, v in self.variables["params"].items() if k != "value_head"}
    return Policy(self.config, {**self.variables, "params": params})

  def score(self, tokens, positions=None, segment_ids=None, *, batch_size: int = 0) -> np.ndarray:
    """Normalised rewards f32[N] of sequences int32[N, T] (jitted).

    Args:
      tokens: int32[N, T]; any mix of left and right padding.
      positions: int32[N, T], default 0..T-1; segment_ids: int32[N, T], 0 on padding, default all 1.
      batch_size: rows per forward pass (the last chunk is padded, so one compile); 0: all at once.
    Multi-host (a mesh over several processes): a collective; each process passes its own rows of
    the global batch (as the GRPO stage holds them) and gets their rewards.
    """
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be int32[N, T], got shape {tokens.shape}")
    n, t = tokens.shape
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (n, t)) if positions is None else positions
    segment_ids = np.ones((n, t), np.int32) if segment_ids is None else segment_ids
    positions, segment_ids = np.asarray(positions, np.int32), np.asarray(segment_ids, np.int32)
    if self.mesh is not None and jax.process_count() > 1:
      raw = self._score_host_rows(tokens, positions, segment_ids, batch_size)
    else:
      chunk = batch_size if 0 < batch_size < n else n
      fn = _score_fn(self.config)
      out = []
      with sharding.mesh_context(self.mesh) if self.mesh is not None else contextlib.nullcontext():
        for start in range(0, n, chunk):
          args = [_rows(a[start:start + chunk], chunk) for a in (tokens, positions, segment_ids)]
          out.append(np.asarray(fn(self.variables, *args)))
      raw = np.concatenate(out)[:n]
    return ((raw - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

  def _score_host_rows(self, tokens: np.ndarray, positions: np.ndarray, segment_ids: np.ndarray,
                       batch_size: int) -> np.ndarray:
    """Raw scores f32[N] of this process's rows when several processes share the mesh (a
    collective: every process calls it at once, each with its own rows of a global batch).

    Every process pads its rows to the same [N_max, T_max] (more rows repeat its last one; more
    columns are right padding, segment 0, which the score ignores), so each chunk is one global
    batch, its rows placed where this process's devices hold them (sharding.place_host_batch) and
    read back from there (sharding.host_local_rows).
    """
    n, t = tokens.shape
    rows, width = sharding.max_over_processes(n), sharding.max_over_processes(t)
    pad = ((0, 0), (0, width - t))
    tokens, positions, segment_ids = (np.pad(a, pad) for a in (tokens, positions, segment_ids))
    chunk = batch_size if 0 < batch_size < rows else rows
    fn = _score_fn(self.config)
    out = []
    with sharding.mesh_context(self.mesh):
      for start in range(0, rows, chunk):
        # A process with fewer rows than the widest repeats its last one (or has no real row left).
        local = {name: _rows(a[start:start + chunk] if start < n else a[-1:], chunk)
                 for name, a in (("tokens", tokens), ("positions", positions), ("segment_ids", segment_ids))}
        placed = sharding.place_host_batch(local, self.mesh)
        out.append(sharding.host_local_rows(fn(self.variables, placed["tokens"], placed["positions"],
                                               placed["segment_ids"]), self.mesh))
    return np.concatenate(out)[:n]

  def score_batch(self, batch: dict, *, batch_size: int = 0) -> np.ndarray:
    """Rewards f32[N] of a batch dict with "tokens", "positions", "segment_ids" [N, T] (grpo_batch's)."""
    return self.score(batch["tokens"], batch.get("positions"), batch.get("segment_ids"), batch_size=batch_size)


def init_head(config: ModelConfig, rng: jax.Array) -> dict:
  """Random value-head params {"kernel": f32[D, 1], "bias": f32[1]}."""
  hidden = jnp.zeros((1, config.hidden_size), jnp.float32)
  return nn.unbox(ValueHead().init(rng, hidden))["params"]


def init_reward_model(config: ModelConfig, rng: jax.Array, backbone_variables: dict | None = None) -> RewardModel:
  """A reward model with a random head on a random backbone, or on `backbone_variables` (e.g. the
  SFT policy's, the usual starting point)."""
  backbone_rng, head_rng = jax.random.split(rng)
  backbone = init_variables(config, backbone_rng) if backbone_variables is None else backbone_variables
  params = {**backbone["params"], "value_head": init_head(config, head_rng)}
  return RewardModel(config, {**backbone, "params": params})


# ----------------------------------------------------------------------------------------------
# Training: Bradley-Terry on preference pairs.


def _pair_rewards(config, variables, chosen, rejected):
  r_c = reward_scores(config, variables, chosen["tokens"], chosen["positions"], chosen["segment_ids"])
  r_r = reward_scores(config, variables, rejected["tokens"], rejected["positions"], rejected["segment_ids"])
  return r_c, r_r


def pairwise_loss(config: ModelConfig, variables: dict, chosen: dict, rejected: dict) -> jax.Array:
  """Bradley-Terry loss f32[]: mean over pairs of -log sigmoid(r(chosen) - r(rejected)).

  chosen, rejected: {"tokens", "positions", "segment_ids"} int32[B, T], row b of each a pair.
  """
  r_c, r_r = _pair_rewards(config, variables, chosen, rejected)
  return -jnp.mean(jax.nn.log_sigmoid(r_c - r_r))


def make_pairwise_step(config: ModelConfig, optimizer):
  """A jitted step(variables, opt_state, chosen, rejected) -> (variables, opt_state, metrics).

  Updates variables["params"] (backbone and head) with the optax `optimizer` on `pairwise_loss`;
  the MoE balancing bias is left as it is. metrics: loss, accuracy (fraction r_c > r_r).
  Initialise with `optimizer.init(variables["params"])`.
  """
  import optax  # pylint: disable=g-import-not-at-top

  def loss_fn(params, variables, chosen, rejected):
    r_c, r_r = _pair_rewards(config, {**variables, "params": params}, chosen, rejected)
    return -jnp.mean(jax.nn.log_sigmoid(r_c - r_r)), jnp.mean((r_c > r_r).astype(jnp.float32))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(variables, opt_state, chosen, rejected):
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"], variables, chosen,
                                                                       rejected)
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return {**variables, "params": params}, opt_state, {"loss": loss, "accuracy": accuracy}

  return step


def sequence_batch(sequences: list[list[int]], length: int | None = None) -> dict:
  """Right-padded {"tokens", "positions", "segment_ids"} int32[B, T] from token lists (T = length
  or the longest), the layout `pairwise_loss` and `RewardModel.score_batch` take."""
  t = length or max(len(s) for s in sequences)
  tokens = np.zeros((len(sequences), t), np.int32)
  segments = np.zeros((len(sequences), t), np.int32)
  for b, s in enumerate(sequences):
    if not 0 < len(s) <= t:
      raise ValueError(f"sequence {b}: length {len(s)}, expected 1..{t}")
    tokens[b, :len(s)] = s
    segments[b, :len(s)] = 1
  positions = np.broadcast_to(np.arange(t, dtype=np.int32), (len(sequences), t)).copy()
  return {"tokens": tokens, "positions": positions, "segment_ids": segments}


# ----------------------------------------------------------------------------------------------
# Checkpoints: <dir>/config.json + model.safetensors (+ index) = the backbone in Hugging Face
# format, <dir>/reward_head.safetensors = the head, <dir>/reward_model.json = what ties them.


def save_reward_model(rm: RewardModel, directory: str, *, dtype: str | None = None) -> None:
  """Writes `rm` to `directory`: the backbone as a Hugging Face checkpoint (transformers loads it
  as a DeepseekV3ForCausalLM), the head in float32 in reward_head.safetensors, and reward_model.json.

  The backbone's shards are always listed in model.safetensors.index.json, so that readers of the
  directory never take the head file for part of the backbone.
  """
  hf.save_hf_checkpoint(rm.backbone, directory, dtype=dtype)
  index = os.path.join(directory, INDEX_FILE)
  if not os.path.exists(index):
    keys = safetensors_io.SafetensorsFile(os.path.join(directory, "model.safetensors")).keys()
    with open(index, "w") as f:
      json.dump({"metadata": {}, "weight_map": {k: "model.safetensors" for k in sorted(keys)}}, f, indent=1)
  head = jax.device_get(rm.variables["params"]["value_head"])
  safetensors_io.save_file({"value_head.kernel": np.asarray(head["kernel"], np.float32),
                            "value_head.bias": np.asarray(head["bias"], np.float32)},
                           os.path.join(directory, HEAD_FILE), {"format": "np"})
  metadata = {"format": FORMAT, "version": 1, "head_file": HEAD_FILE, "hidden_size": rm.config.hidden_size,
              "pooling": "last_token", "normalize": {"mean": float(rm.mean), "std": float(rm.std)}}
  with open(os.path.join(directory, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)


def _read_head(path: str, hidden_size: int) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: reward head file is missing (expected value_head.kernel and value_head.bias)")
  try:
    f = safetensors_io.SafetensorsFile(path)
    keys = set(f.keys())
  except (ValueError, OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
  expected = {"value_head.kernel": (hidden_size, 1), "value_head.bias": (1,)}
  head = {}
  for key, shape in expected.items():
    if key not in keys:
      raise CheckpointError(f"{path}: reward head is missing tensor {key} (expected shape {shape})")
    if f.shape(key) != shape:
      raise CheckpointError(f"{path}: tensor {key}: shape {f.shape(key)} != expected {shape}")
    try:
      head[key.split(".")[1]] = np.array(f.get(key), np.float32)
    except ValueError as e:  # truncated data or an unsupported dtype
      raise CheckpointError(f"{path}: tensor {key}: {e}") from e
  unknown = sorted(keys - set(expected))
  if unknown:
    raise CheckpointError(f"{path}: reward head has tensors r1 does not know: {unknown}")
  return head


def load_reward_model(directory: str, dtype: str = "float32", *, mesh=None, **config_overrides) -> RewardModel:
  """Loads a reward model written by `save_reward_model`.

  Args:
    directory: holds reward_model.json, reward_head.safetensors and the backbone's HF checkpoint.
    dtype: backbone parameter and compute dtype; the head stays float32.
    mesh: if given, the backbone is placed sharded (as the policy is) and the head replicated.
    **config_overrides: ModelConfig fields to change (e.g. moe_impl="ragged", remat="full").
  Raises:
    CheckpointError naming the missing or mis-shaped file, tensor or field.
  """
  meta_path = os.path.join(directory, METADATA_FILE)
  if not os.path.exists(meta_path):
    raise CheckpointError(f"{meta_path}: missing; not a reward model directory (see save_reward_model)")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{meta_path}: not valid JSON: {e}") from e
  if meta.get("format") != FORMAT or meta.get("pooling", "last_token") != "last_token":
    raise CheckpointError(f"{meta_path}: format={meta.get('format')!r}, pooling={meta.get('pooling')!r}: "
                          f"expected {FORMAT!r} with last_token pooling")
  if not os.path.exists(os.path.join(directory, INDEX_FILE)):
    raise CheckpointError(f"{directory}: {INDEX_FILE} is missing; the backbone's shards must be listed so "
                          f"that {HEAD_FILE} is not read as a backbone tensor")
  # The head first: a bad one fails before a large backbone is read.
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"{config_path}: missing; the reward model's backbone is a Hugging Face checkpoint")
  with open(config_path) as f:
    hidden_size = json.load(f)["hidden_size"]
  if meta.get("hidden_size", hidden_size) != hidden_size:
    raise CheckpointError(f"{meta_path}: hidden_size {meta['hidden_size']} != config.json's {hidden_size}")
  head = _read_head(os.path.join(directory, meta.get("head_file", HEAD_FILE)), hidden_size)
  # The MTP modules are a language-modelling objective: a reward model never runs them.
  policy = hf.load_hf_checkpoint(directory, dtype, mesh=mesh, load_mtp=False, **config_overrides)
  config = policy.config
  if mesh is not None:
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    head = {k: jax.device_put(v, replicated) for k, v in head.items()}
  else:
    head = {k: jnp.asarray(v) for k, v in head.items()}
  norm = meta.get("normalize") or {}
  mean, std = float(norm.get("mean", 0.0)), float(norm.get("std", 1.0))
  if not std > 0:
    raise CheckpointError(f"{meta_path}: normalize.std={std}: expected > 0")
  variables = {**policy.variables, "params": {**policy.variables["params"], "value_head": head}}
  return RewardModel(config, variables, mean=mean, std=std, mesh=mesh)


def from_stage_config(config, policy_config: ModelConfig, mesh=None) -> RewardModel | None:
  """The RL stage's reward model from config.reward_model (path, weight), or None without one.

  Says which it is, once (log and stdout): the rule-based rewards alone, or the reward model
  added to them with its weight. The reward model is loaded in the policy's compute dtype and MoE
  kernel, on the policy's mesh; it must share the policy's tokenizer (checked: its vocabulary
  covers the policy's).
  """
  path = config.reward_model.path
  rules = ", ".join(f"{name}" for name in config.rewards.keys()) or "none"
  if not path:
    message = (f"RL stage: no reward model configured (config.reward_model.path is empty); "
               f"running with rule-based rewards only: {rules}")
    logging.info(message)
    print(message)
    return None
  rm = load_reward_model(path, policy_config.dtype, mesh=mesh, moe_impl=policy_config.moe_impl,
                         remat=policy_config.remat)
  if rm.config.vocab_size < policy_config.vocab_size:
    raise CheckpointError(f"{path}: reward model vocab_size {rm.config.vocab_size} < the policy's "
                          f"{policy_config.vocab_size}; it must use the policy's tokenizer")
  message = (f"RL stage: reward model {path} (weight {float(config.reward_model.weight)}) added to the "
             f"rule-based rewards: {rules}")
  logging.info(message)
  print(message)
  return rm

"""Hugging Face checkpoints in and out (config.json + safetensors): DeepSeek-V2/V3 and the dense
students the R1 paper distils into, Qwen2/2.5 (`model_type: qwen2`) and Llama-3 (`model_type: llama`).

Loading walks r1's parameter tree and reads each tensor from its (memory-mapped) safetensors file,
converts it (transposes, head reshapes, per-expert stacking, FP8 block dequantisation) and places
it on devices straight away, with its target sharding when a mesh is given, so host memory holds
one converted tensor at a time rather than a second copy of the model. Export writes the published
layout (per-expert tensors, `rope_theta` + `rope_scaling`) that transformers loads. The config
translation is r1/checkpoints/hf_config.py, the tensor names r1/checkpoints/hf_tensors.py.
"""

import json
import logging
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from r1.checkpoints import safetensors_io
from r1.model import abstract_variables
from r1.checkpoints.hf_config import CheckpointError, config_from_hf, config_to_hf
from r1.checkpoints.hf_tensors import shared_mtp_keys, tensor_mapping
from r1.policy import Policy
from r1.sharding import TRAIN_RULES, variable_shardings

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ----------------------------------------------------------------------------------------------
# Reading


class _CheckpointReader:
  """Finds tensors across (sharded) safetensors files and dequantises FP8 blocks on read."""

  def __init__(self, path: str, block_size: tuple[int, int] = (128, 128)):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = {name: safetensors_io.SafetensorsFile(os.path.join(path, name)) for name in set(weight_map.values())}
      self._where = {k: files[v] for k, v in weight_map.items()}
    else:
      names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
      if not names:
        raise CheckpointError(f"{path}: no *.safetensors files and no model.safetensors.index.json")
      self._where = {}
      for n in names:
        f = safetensors_io.SafetensorsFile(os.path.join(path, n))
        for k in f.keys():
          self._where[k] = f
    self.path = path
    self.block_size = block_size
    self.used: set[str] = set()

  def keys(self) -> set[str]:
    return set(self._where)

  def get(self, key: str) -> np.ndarray:
    if key not in self._where:
      raise CheckpointError(f"{self.path}: checkpoint is missing tensor {key}")
    self.used.add(key)
    a = self._where[key].get(key)
    if a.dtype in (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)):
      scale_key = key[:-len("weight")] + "weight_scale_inv"
      if scale_key not in self._where:
        raise CheckpointError(f"{self.path}: FP8 tensor {key} has no {scale_key}")
      self.used.add(scale_key)
      a = dequantize_fp8(a, self._where[scale_key].get(scale_key), self.block_size)
    return a


def dequantize_fp8(w: np.ndarray, scale_inv: np.ndarray, block_size=(128, 128)) -> np.ndarray:
  """float8 w [O, I] times its per-block scale_inv [ceil(O/bo), ceil(I/bi)] -> float32 [O, I]."""
  bo, bi = block_size
  o, i = w.shape
  expected = (math.ceil(o / bo), math.ceil(i / bi))
  if tuple(scale_inv.shape) != expected:
    raise CheckpointError(f"weight_scale_inv shape {tuple(scale_inv.shape)} != expected {expected} for {w.shape}")
  scale = np.repeat(np.repeat(scale_inv.astype(np.float32), bo, axis=0), bi, axis=1)[:o, :i]
  return w.astype(np.float32) * scale


def _get_path(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set_path(tree, path, value):
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def load_hf_checkpoint(path: str, dtype: str = "float32", *, mesh=None, rules=TRAIN_RULES,
                       load_mtp: bool | None = None, **config_overrides) -> Policy:
  """Loads a local Hugging Face checkpoint directory (DeepSeek-V2/V3, Qwen2, Llama) into an r1 Policy.

  Args:
    path: directory with config.json and model.safetensors (or shards + model.safetensors.index.json).
    dtype: parameter and compute dtype ("float32", "bfloat16"). The router weight and the balancing
      bias stay float32. FP8 weights are dequantised with their 128x128 `weight_scale_inv` blocks.
    mesh: if given, each tensor is placed directly with its sharding under `rules`.
    load_mtp: load the multi-token-prediction modules (config num_nextn_predict_layers). None: when
      the checkpoint has them (transformers-written checkpoints declare one but store none; that is
      logged); False: drop them.
    **config_overrides: ModelConfig fields to change (e.g. moe_impl="ragged").
  Raises:
    CheckpointError naming the missing / unexpected / mis-shaped tensor or unsupported config field.
  """
  with open(os.path.join(path, "config.json")) as f:
    hf_config = json.load(f)
  overrides = {"dtype": dtype, "param_dtype": dtype, **config_overrides}
  if dtype not in _DTYPES:
    raise CheckpointError(f"dtype={dtype!r}: expected one of {sorted(_DTYPES)}")
  block = tuple((hf_config.get("quantization_config") or {}).get("weight_block_size", (128, 128)))
  reader = _CheckpointReader(path, block)
  declared_mtp = int(hf_config.get("num_nextn_predict_layers", 0))
  if declared_mtp and "num_nextn_predict_layers" not in overrides:
    present = f"model.layers.{hf_config['num_hidden_layers']}.eh_proj.weight" in reader.keys()
    if load_mtp is None and not present:
      logging.warning("%s: config.json declares %d MTP module(s) but the checkpoint stores none; "
                      "loading without MTP", path, declared_mtp)
    if load_mtp is False or (load_mtp is None and not present):
      overrides["num_nextn_predict_layers"] = 0
  config = config_from_hf(hf_config, **overrides)

  abstract = abstract_variables(config)
  shardings = variable_shardings(abstract, mesh, rules) if mesh is not None else None
  abstract = nn.unbox(abstract)
  mapping = tensor_mapping(config)
  variables: dict = {}
  for full_path, (hf_keys, to_r1, _) in mapping.items():
    expected = _get_path(abstract, full_path)
    try:
      value = to_r1(reader.get)
    except ValueError as e:  # reshape of a wrongly shaped tensor
      raise CheckpointError(f"{path}: tensor for {'/'.join(full_path)} ({hf_keys[0]}): {e}") from e
    if tuple(value.shape) != tuple(expected.shape):
      raise CheckpointError(
          f"{path}: tensor for {'/'.join(full_path)} ({mapping[full_path][0][0]}): shape {tuple(value.shape)} "
          f"!= expected {tuple(expected.shape)}")
    value = np.asarray(value).astype(expected.dtype)
    if shardings is not None:
      sharding = _get_path(shardings, full_path)
      leaf = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
    else:
      leaf = jnp.asarray(value)
    _set_path(variables, full_path, leaf)
    del value

  shared = shared_mtp_keys(config)
  if config.tie_word_embeddings:  # some tied checkpoints store the head anyway
    shared.append(("lm_head.weight", "model.embed_tokens.weight"))
  for copy_key, main_key in shared:
    if copy_key in reader.keys():
      if not np.array_equal(reader.get(copy_key), reader.get(main_key)):
        raise CheckpointError(f"{path}: {copy_key} differs from {main_key}; r1 shares them "
                              f"({'tie_word_embeddings' if copy_key == 'lm_head.weight' else 'V3 paper 2.2'})")
  unused = sorted(reader.keys() - reader.used)
  if load_mtp is False:
    mtp_prefixes = tuple(f"model.layers.{config.num_hidden_layers + k}." for k in range(declared_mtp))
    unused = [k for k in unused if not k.startswith(mtp_prefixes)]
  if unused:
    raise CheckpointError(f"{path}: checkpoint has tensors r1 does not know: {unused[:10]}"
                          f"{' ...' if len(unused) > 10 else ''}")
  return Policy(config=config, variables=variables)


# ----------------------------------------------------------------------------------------------
# Writing


def save_hf_checkpoint(policy: Policy, out_dir: str, *, dtype: str | None = None,
                       max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes `policy` as a Hugging Face checkpoint (config.json + safetensors) that transformers loads.

  Args:
    policy: an r1 Policy.
    out_dir: created if missing.
    dtype: tensor dtype on disk (default: the parameters' own). The router and bias stay float32.
    max_shard_bytes: shard size; an index file is written when there is more than one shard.
  """
  config = policy.config
  dtype = dtype or config.param_dtype
  os.makedirs(out_dir, exist_ok=True)
  np_dtype = np.dtype(_DTYPES[dtype])
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for full_path, (_, _, to_hf) in tensor_mapping(config).items():
    value = np.asarray(jax.device_get(_get_path(policy.variables, full_path)))
    keep_f32 = full_path[0] == "moe_bias" or full_path[-1] == "gate"
    for key, a in to_hf(value).items():
      a = np.ascontiguousarray(a.astype(np.float32 if keep_f32 else np_dtype))
      if size and size + a.nbytes > max_shard_bytes:
        shards.append({})
        size = 0
      shards[-1][key] = a
      size += a.nbytes
  for copy_key, main_key in shared_mtp_keys(config):
    for shard in shards:
      if main_key in shard:
        shards[-1][copy_key] = shard[main_key]
        break
  if len(shards) == 1:
    safetensors_io.save_file(shards[0], os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      safetensors_io.save_file(shard, os.path.join(out_dir, name), {"format": "pt"})
      weight_map.update({k: name for k in shard})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config_to_hf(config, dtype), f, indent=2, sort_keys=True)


"""Hugging Face checkpoints in and out (config.json + safetensors): DeepSeek-V2/V3 and the dense
students the R1 paper distils into, Qwen2/2.5 (`model_type: qwen2`) and Llama-3 (`model_type: llama`).

Loading walks r1's parameter tree and reads each tensor from its (memory-mapped) safetensors file,
converts it (transposes, head reshapes, per-expert stacking, FP8 block dequantisation) and places
it on devices straight away, with its target sharding when a mesh is given, so host memory holds
one converted tensor at a time rather than a second copy of the model. Export writes the published
layout (per-expert tensors, `rope_theta` + `rope_scaling`) that transformers loads.
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
from r1.model.config import ModelConfig, RopeScaling
from r1.policy import Policy
from r1.sharding import TRAIN_RULES, variable_shardings

# config.json fields that describe the checkpoint, not the model's numbers (logged, then ignored):
# bookkeeping every transformers config may hold, what the Hub and its tools add (SmolLM2's
# `is_llama_config`, `transformers.js_config`), and every `*_token_id` (`_is_metadata`).
_METADATA_FIELDS = {
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
    "initializer_range", "use_cache", "attention_dropout", "_name_or_path", "_model_name_or_path",
    "tie_encoder_decoder", "return_dict", "output_hidden_states", "output_attentions", "use_return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "tokenizer_class",
    "task_specific_params", "torchscript", "_attn_implementation_autoset", "transformers.js_config",
    "is_llama_config",
}
_IGNORED_CONFIG_FIELDS = _METADATA_FIELDS | {
    "pretraining_tp", "num_key_value_heads", "ep_size", "aux_loss_alpha", "seq_aux", "output_router_logits",
    "head_dim", "qk_head_dim", "num_experts", "num_local_experts", "router_aux_loss_coef", "num_mtp_layers",
    "layer_types", "mlp_layer_types", "index_topk", "index_n_heads", "index_head_dim",
}
# Fields read into ModelConfig under the same name.
_SAME_NAME_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "max_position_embeddings", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "norm_topk_prob",
    "routed_scaling_factor", "first_k_dense_replace", "num_nextn_predict_layers", "rms_norm_eps",
    "tie_word_embeddings",
)
# Dense decoders: model_type -> (transformers class, its config defaults for the fields r1 reads).
# transformers 4.x writes only the fields that differ from its class defaults, so a missing field
# means this value, not DeepSeek-V3's.
_DENSE_ARCHITECTURES = {
    "qwen2": ("Qwen2ForCausalLM", dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False)),
    "llama": ("LlamaForCausalLM", dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=None, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False)),
}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class CheckpointError(ValueError):
  """A checkpoint that does not match what r1 expects (names the key and the problem)."""


def _is_metadata(field: str) -> bool:
  return field in _METADATA_FIELDS or field.endswith("_token_id") or field.endswith("_token_ids")


# Every field some r1 reader turns into numbers: met where its architecture does not use it (a qwen2
# config with kv_lora_rank), it would change the model, so it is refused rather than ignored.
_MODEL_FIELDS = set(_SAME_NAME_FIELDS) | {
    "num_key_value_heads", "head_dim", "hidden_act", "attention_bias", "mlp_bias", "moe_layer_freq",
    "rope_parameters", "rope_scaling", "rope_theta", "rope_interleave", "rope_interleaved", "topk_method",
    "scoring_func", "n_group", "topk_group", "use_sliding_window", "sliding_window", "max_window_layers",
    "use_mrope", "pretraining_tp", "layer_types", "qk_head_dim", "num_experts", "num_local_experts",
    "quantization_config",
}


def _check_fields(hf: dict, known: set, reader: str) -> list[str]:
  """Logs the metadata fields, warns about unknown fields of uncertain meaning, and returns the
  fields (set, not null or false) that belong to another architecture: they would change the numbers."""
  fields = set(hf) - known
  metadata = sorted(f for f in fields if _is_metadata(f))
  if metadata:
    logging.info("config.json: %s describe the checkpoint, not the model; ignored", metadata)
  foreign = sorted(f for f in fields - set(metadata) if f in _MODEL_FIELDS and hf[f] not in (None, False))
  unknown = sorted(fields - set(metadata) - set(foreign) - _MODEL_FIELDS)
  if unknown:
    logging.warning("config.json: fields %s are not known to r1's %s reader and are ignored; check that "
                    "they do not change the model", unknown, reader)
  return foreign


# ----------------------------------------------------------------------------------------------
# config.json <-> ModelConfig


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
  """ModelConfig from a config.json dict: DeepSeek-V2/V3, Qwen2 or Llama (either rope spelling).

  Raises CheckpointError naming any field r1 does not support or does not know.
  """
  model_type = hf.get("model_type", "deepseek_v3")
  if model_type in _DENSE_ARCHITECTURES:
    out = _dense_config_from_hf(dict(hf))
  elif model_type in ("deepseek_v2", "deepseek_v3"):
    out = _deepseek_config_from_hf(dict(hf))
  else:
    raise CheckpointError(f"config.json model_type={model_type!r}: expected one of deepseek_v2, deepseek_v3, "
                          f"{', '.join(_DENSE_ARCHITECTURES)}")
  out.update(overrides)
  try:
    return ModelConfig(**out)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"config.json: {e}") from e


def _rope_from_hf(hf: dict, supported: tuple[str, ...], default_original: int) -> tuple[float, RopeScaling | None]:
  """(rope_theta, rope_scaling) from either spelling: published checkpoints write rope_theta +
  rope_scaling{type | rope_type}; recent transformers writes rope_parameters{rope_type, rope_theta, ...}.

  default_original: original_max_position_embeddings where the scaling does not say.
  """
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
  if rope_type not in supported:
    raise CheckpointError(f"config.json rope type {rope_type!r} is not supported (expected "
                          f"{', '.join(supported[:-1])} or {supported[-1]})")
  known = {"type", "rope_type", "rope_theta"} | {
      "default": set(),
      "yarn": {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
               "truncate"},
      "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"},
  }[rope_type]
  unknown = sorted(set(rope) - known)
  if rope_type == "yarn" and not rope.get("truncate", True):
    unknown.append("truncate=false")
  if unknown:
    raise CheckpointError(f"config.json rope parameters {unknown} are not supported with rope type {rope_type!r}")
  if rope_type == "default":
    return theta, None
  original = rope.get("original_max_position_embeddings") or default_original
  if rope_type == "llama3":
    missing = sorted(k for k in ("factor", "low_freq_factor", "high_freq_factor") if rope.get(k) is None)
    if missing:
      raise CheckpointError(f"config.json rope type 'llama3' needs {missing}")
    return theta, RopeScaling(
        rope_type="llama3", factor=float(rope["factor"]), original_max_position_embeddings=int(original),
        low_freq_factor=float(rope["low_freq_factor"]), high_freq_factor=float(rope["high_freq_factor"]))
  # transformers derives a missing factor from the context extension.
  factor = rope.get("factor") or hf.get("max_position_embeddings", original) / original
  # Missing mscale / mscale_all_dim read as 0: the attention factor is then 0.1 ln(factor) + 1, as in
  # transformers (r1.model.layers.rope_attention_factor).
  return theta, RopeScaling(
      factor=float(factor), original_max_position_embeddings=int(original),
      beta_fast=float(rope.get("beta_fast") or 32), beta_slow=float(rope.get("beta_slow") or 1),
      mscale=float(rope.get("mscale") or 0.0), mscale_all_dim=float(rope.get("mscale_all_dim") or 0.0))


def _deepseek_config_from_hf(hf: dict) -> dict:
  """ModelConfig fields from a DeepSeek-V2/V3 config.json (absent fields: V3's published values)."""
  v3 = hf.get("model_type", "deepseek_v3") == "deepseek_v3"
  out = {k: hf[k] for k in _SAME_NAME_FIELDS if k in hf}
  if hf.get("hidden_act", "silu") != "silu":
    raise CheckpointError(f"config.json hidden_act={hf['hidden_act']!r}: only silu is supported")
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise CheckpointError(f"config.json {flag}=true is not supported (DeepSeek checkpoints have no biases)")
  if hf.get("moe_layer_freq", 1) != 1:
    raise CheckpointError(f"config.json moe_layer_freq={hf['moe_layer_freq']}: only 1 is supported")
  out["rope_theta"], out["rope_scaling"] = _rope_from_hf(hf, ("default", "yarn"), default_original=4096)
  # DeepSeek's checkpoints store rotary dims interleaved; transformers' V3 defaults to that too.
  out["rope_interleave"] = bool(hf.get("rope_interleave", True))

  if v3:
    out["topk_method"] = hf.get("topk_method", "noaux_tc")
    out["scoring_func"] = hf.get("scoring_func", "sigmoid")
  else:
    out["topk_method"] = hf.get("topk_method", "greedy")
    out["scoring_func"] = hf.get("scoring_func", "softmax")
    out.setdefault("norm_topk_prob", False)
    out.setdefault("routed_scaling_factor", 1.0)
    out.setdefault("first_k_dense_replace", 0)
  out["n_group"] = hf.get("n_group") or 1
  out["topk_group"] = hf.get("topk_group") or 1

  known = set(_SAME_NAME_FIELDS) | _IGNORED_CONFIG_FIELDS | {
      "hidden_act", "attention_bias", "mlp_bias", "moe_layer_freq", "rope_parameters", "rope_scaling",
      "rope_theta", "rope_interleave", "topk_method", "scoring_func", "n_group", "topk_group",
      "quantization_config"}
  foreign = _check_fields(hf, known, "DeepSeek")
  if foreign:
    raise CheckpointError(f"config.json fields {foreign} are not supported by r1's DeepSeek model (they "
                          "would change it)")
  return out


def _dense_config_from_hf(hf: dict) -> dict:
  """ModelConfig fields from a Qwen2 or Llama config.json.

  Qwen2 always has q/k/v biases (and none on o_proj); Llama has none (its attention_bias would put
  one on o_proj too, which r1's GQA does not have). Both rotate half-split heads (`rotate_half`).
  """
  model_type = hf["model_type"]
  defaults = _DENSE_ARCHITECTURES[model_type][1]
  out = {k: hf[k] if hf.get(k) is not None else v for k, v in defaults.items()}
  out["num_key_value_heads"] = out["num_key_value_heads"] or out["num_attention_heads"]
  # An explicit head_dim equal to the implied one is stored as None, like r1's named configs.
  head_dim = hf.get("head_dim")
  out["head_dim"] = None if head_dim in (None, out["hidden_size"] // out["num_attention_heads"]) else head_dim
  # transformers fills a missing original_max_position_embeddings with max_position_embeddings.
  out["rope_theta"], out["rope_scaling"] = _rope_from_hf(hf, ("default", "llama3", "yarn"),
                                                         default_original=out["max_position_embeddings"])
  out.update(architecture=model_type, attention_bias=model_type == "qwen2", rope_interleave=False,
             n_routed_experts=None, num_nextn_predict_layers=0)

  problems = []
  if hf.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={hf['hidden_act']!r} (only silu is supported)")
  known = set(defaults) | {"head_dim", "hidden_act", "rope_theta", "rope_scaling", "rope_parameters", "layer_types"}
  if model_type == "qwen2":
    known |= {"use_sliding_window", "sliding_window", "max_window_layers", "use_mrope"}
    if hf.get("use_sliding_window"):
      problems.append("use_sliding_window=true (r1 attends over the full context in every layer)")
    if hf.get("use_mrope"):
      problems.append("use_mrope=true (multimodal RoPE)")
  else:
    known |= {"attention_bias", "mlp_bias", "pretraining_tp", "rope_interleaved"}
    if hf.get("rope_interleaved"):
      problems.append("rope_interleaved=true (Llama rotates half-split heads)")
    if hf.get("attention_bias"):
      problems.append("attention_bias=true (Llama's biases o_proj too; r1's GQA has q/k/v biases only)")
    if hf.get("mlp_bias"):
      problems.append("mlp_bias=true (r1's SwiGLU has no biases)")
    if hf.get("pretraining_tp", 1) != 1:
      problems.append(f"pretraining_tp={hf['pretraining_tp']} (only 1 is supported)")
  # transformers records a GGUF source as quantization_config {quant_method: gguf} in the config it
  # saves, but it dequantised the weights on load: they are plain floats, read as stored. Any other
  # method (gptq, awq, bitsandbytes, fp8...) stores weights r1's dense reader cannot use.
  known.add("quantization_config")
  quant = (hf.get("quantization_config") or {}).get("quant_method")
  if quant == "gguf":
    logging.info("config.json: quantization_config names a GGUF source; its weights are read as stored")
  elif quant is not None or hf.get("quantization_config"):
    problems.append(f"quantization_config quant_method={quant!r} (r1's {model_type} reader reads unquantised "
                    "weights)")
  sliding = sorted({t for t in hf.get("layer_types") or () if t != "full_attention"})
  if sliding and not hf.get("use_sliding_window"):
    problems.append(f"layer_types {sliding} (only full_attention is supported)")
  foreign = _check_fields(hf, known, model_type)
  if foreign:
    problems.append(f"fields {foreign} (not used by r1's {model_type} model, and they would change it)")
  if problems:
    raise CheckpointError(f"config.json (model_type={model_type!r}) is not supported: {'; '.join(problems)}")
  return out


def config_to_hf(config: ModelConfig, dtype: str = "float32") -> dict:
  """A config.json dict in the published spelling: DeepSeek-V3 (V2 for softmax routing), Qwen2 or Llama."""
  if config.is_gqa:
    return _dense_config_to_hf(config, dtype)
  c = config
  v3 = c.scoring_func == "sigmoid"
  hf = {k: getattr(c, k) for k in _SAME_NAME_FIELDS}
  hf.update({
      "architectures": ["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
      "model_type": "deepseek_v3" if v3 else "deepseek_v2",
      "num_key_value_heads": c.num_attention_heads,
      "hidden_act": "silu",
      "attention_bias": False,
      "rope_theta": c.rope_theta,
      "rope_interleave": c.rope_interleave,
      "topk_method": c.topk_method,
      "scoring_func": c.scoring_func,
      "n_group": c.n_group,
      "topk_group": c.topk_group,
      "torch_dtype": dtype,
  })
  if not c.n_routed_experts:
    raise CheckpointError("export needs a MoE config (n_routed_experts); dense DeepSeek models are not supported")
  if c.rope_scaling is not None:
    s = c.rope_scaling
    if s.rope_type != "yarn":
      raise CheckpointError(f"export: DeepSeek checkpoints spell only YaRN rope scaling, not {s.rope_type!r}")
    hf["rope_scaling"] = _rope_scaling_to_hf(s, "type")
  return hf


def _rope_scaling_to_hf(s: RopeScaling, type_key: str) -> dict:
  """`rope_scaling` as config.json spells it; type_key: "type" (DeepSeek's published configs) or
  "rope_type" (Qwen2 / Llama)."""
  fields = (("low_freq_factor", "high_freq_factor") if s.rope_type == "llama3"
            else ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"))
  return {type_key: s.rope_type, "factor": s.factor,
          "original_max_position_embeddings": s.original_max_position_embeddings, **{f: getattr(s, f) for f in fields}}


def _dense_config_to_hf(c: ModelConfig, dtype: str) -> dict:
  """Qwen2 / Llama config.json, spelled as DeepSeek-R1-Distill-* publish it (rope_theta + rope_scaling)."""
  if c.attention_bias != (c.architecture == "qwen2"):
    raise CheckpointError(f"export: architecture={c.architecture!r} with attention_bias={c.attention_bias} has no "
                          "transformers counterpart (Qwen2 always has q/k/v biases, Llama none)")
  hf = {k: getattr(c, k) for k in _DENSE_ARCHITECTURES[c.architecture][1]}
  hf.update({
      "architectures": [_DENSE_ARCHITECTURES[c.architecture][0]],
      "model_type": c.architecture,
      "num_key_value_heads": c.kv_heads,
      "head_dim": c.gqa_head_dim,
      "hidden_act": "silu",
      "rope_theta": c.rope_theta,
      "torch_dtype": dtype,
  })
  if c.architecture == "qwen2":
    hf["use_sliding_window"] = False
  else:
    hf.update(attention_bias=False, mlp_bias=False)
  if c.rope_scaling is not None:
    hf["rope_scaling"] = _rope_scaling_to_hf(c.rope_scaling, "rope_type")
  return hf


# ----------------------------------------------------------------------------------------------
# Tensor name mapping. Each r1 leaf is produced from HF tensors by a `to_r1` and written back by
# a `to_hf`, both over numpy arrays.


def _linear(hf_key):
  """nn.Linear weight [out, in] <-> kernel [in, out]."""
  return [hf_key], lambda get: get(hf_key).T, lambda a: {hf_key: a.T}


def _copy(hf_key):
  return [hf_key], lambda get: get(hf_key), lambda a: {hf_key: a}


def _heads_out(hf_key, heads):
  """[H*k, in] <-> [in, H, k] (q and kv_b projections)."""
  def to_r1(get):
    w = get(hf_key).T
    return w.reshape(w.shape[0], heads, -1)
  return [hf_key], to_r1, lambda a: {hf_key: a.reshape(a.shape[0], -1).T}


def _heads_in(hf_key, heads):
  """o_proj [D, H*v] <-> [H, v, D]."""
  def to_r1(get):
    w = get(hf_key).T
    return w.reshape(heads, -1, w.shape[-1])
  return [hf_key], to_r1, lambda a: {hf_key: a.reshape(-1, a.shape[-1]).T}


def _head_bias(hf_key, heads):
  """q/k/v bias [H*k] <-> [H, k]."""
  return [hf_key], lambda get: get(hf_key).reshape(heads, -1), lambda a: {hf_key: a.reshape(-1)}


def _experts(prefix, proj, num_experts):
  """Per-expert linears mlp.experts.{e}.{proj}.weight [out, in] <-> stacked [E, in, out]."""
  keys = [f"{prefix}.experts.{e}.{proj}.weight" for e in range(num_experts)]

  def to_r1(get):
    first = get(keys[0])
    out = np.empty((num_experts,) + first.T.shape, first.dtype)
    for e, k in enumerate(keys):
      out[e] = get(k).T  # filled in place: one stacked copy, never a list of E arrays
    return out
  return keys, to_r1, lambda a: {k: a[e].T for e, k in enumerate(keys)}


def _block_mapping(c: ModelConfig, prefix: str, moe: bool) -> dict[tuple, tuple]:
  """Mapping for one decoder block at HF `prefix` (e.g. model.layers.3), r1-relative paths."""
  h = c.num_attention_heads
  attn = f"{prefix}.self_attn"
  m = {
      ("input_layernorm", "scale"): _copy(f"{prefix}.input_layernorm.weight"),
      ("post_attention_layernorm", "scale"): _copy(f"{prefix}.post_attention_layernorm.weight"),
  }
  if c.is_gqa:
    # K/V projections have kv_heads heads; query head h reads K/V head h // (H / kv_heads), the
    # grouping of transformers' repeat_kv, so the HF row order needs no permutation.
    for proj, heads in (("q", h), ("k", c.kv_heads), ("v", c.kv_heads)):
      m[("self_attn", f"{proj}_proj")] = _heads_out(f"{attn}.{proj}_proj.weight", heads)
      if c.attention_bias:
        m[("self_attn", f"{proj}_bias")] = _head_bias(f"{attn}.{proj}_proj.bias", heads)
    m[("self_attn", "o_proj")] = _heads_in(f"{attn}.o_proj.weight", h)
  else:
    m[("self_attn", "kv_a_proj_with_mqa")] = _linear(f"{attn}.kv_a_proj_with_mqa.weight")
    m[("self_attn", "kv_a_layernorm", "scale")] = _copy(f"{attn}.kv_a_layernorm.weight")
    m[("self_attn", "kv_b_proj")] = _heads_out(f"{attn}.kv_b_proj.weight", h)
    m[("self_attn", "o_proj")] = _heads_in(f"{attn}.o_proj.weight", h)
    if c.q_lora_rank is None:
      m[("self_attn", "q_proj")] = _heads_out(f"{attn}.q_proj.weight", h)
    else:
      m[("self_attn", "q_a_proj")] = _linear(f"{attn}.q_a_proj.weight")
      m[("self_attn", "q_a_layernorm", "scale")] = _copy(f"{attn}.q_a_layernorm.weight")
      m[("self_attn", "q_b_proj")] = _heads_out(f"{attn}.q_b_proj.weight", h)
  mlp = f"{prefix}.mlp"
  if moe:
    m[("mlp", "gate")] = _linear(f"{mlp}.gate.weight")
    for proj in ("gate_proj", "up_proj", "down_proj"):
      m[("mlp", f"experts_{proj}")] = _experts(mlp, proj, c.n_routed_experts)
      if c.n_shared_experts:
        m[("mlp", "shared_experts", proj)] = _linear(f"{mlp}.shared_experts.{proj}.weight")
  else:
    for proj in ("gate_proj", "up_proj", "down_proj"):
      m[("mlp", proj)] = _linear(f"{mlp}.{proj}.weight")
  return m


def tensor_mapping(config: ModelConfig) -> dict[tuple, tuple]:
  """{(collection, *path): (hf_keys, to_r1, to_hf)} for every r1 variable of `config`."""
  c = config
  m = {("params", "embed_tokens"): _copy("model.embed_tokens.weight"),
       ("params", "norm", "scale"): _copy("model.norm.weight")}
  if not c.tie_word_embeddings:
    m[("params", "lm_head")] = _linear("lm_head.weight")

  def add_block(r1_prefix, hf_prefix, moe):
    for path, spec in _block_mapping(c, hf_prefix, moe).items():
      m[("params",) + r1_prefix + path] = spec
    if moe and c.topk_method == "noaux_tc":
      m[("moe_bias",) + r1_prefix + ("mlp", "e_score_correction_bias")] = _copy(
          f"{hf_prefix}.mlp.gate.e_score_correction_bias")

  for i in range(c.num_hidden_layers):
    add_block((f"layers_{i}",), f"model.layers.{i}", c.is_moe_layer(i))
  for k in range(c.num_nextn_predict_layers):
    i = c.num_hidden_layers + k
    hf_prefix = f"model.layers.{i}"
    add_block((f"mtp_{k}", "block"), hf_prefix, c.is_moe_layer(i))
    m[("params", f"mtp_{k}", "enorm", "scale")] = _copy(f"{hf_prefix}.enorm.weight")
    m[("params", f"mtp_{k}", "hnorm", "scale")] = _copy(f"{hf_prefix}.hnorm.weight")
    m[("params", f"mtp_{k}", "eh_proj")] = _linear(f"{hf_prefix}.eh_proj.weight")
    m[("params", f"mtp_{k}", "final_norm", "scale")] = _copy(f"{hf_prefix}.shared_head.norm.weight")
  return m


def _shared_mtp_keys(config: ModelConfig) -> list[tuple[str, str]]:
  """(MTP copy, main tensor) pairs: V3 stores the shared embedding and head once per MTP module."""
  pairs = []
  for k in range(config.num_nextn_predict_layers):
    p = f"model.layers.{config.num_hidden_layers + k}"
    pairs.append((f"{p}.embed_tokens.weight", "model.embed_tokens.weight"))
    pairs.append((f"{p}.shared_head.head.weight",
                  "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"))
  return pairs


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

  shared = _shared_mtp_keys(config)
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
  for copy_key, main_key in _shared_mtp_keys(config):
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


"""Hugging Face config.json <-> r1's ModelConfig: DeepSeek-V2/V3, Qwen2/2.5 and Llama-3.

Fields that only describe the checkpoint (`_name_or_path`, `torch_dtype`, `*_token_id`, ...) are
logged once and ignored; a field that would change the numbers r1 does not compute (`mlp_bias`,
a sliding window, an unsupported `rope_scaling`) is refused with its name; an unknown field of
uncertain meaning is warned about by name.
"""

import logging

from r1.model.config import ModelConfig, RopeScaling


class CheckpointError(ValueError):
  """A checkpoint that r1 cannot read as the model asked for (a missing or misshapen tensor, a
  config field that would change the numbers); the message names the file and the field."""


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

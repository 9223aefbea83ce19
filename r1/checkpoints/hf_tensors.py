"""Hugging Face tensor names <-> r1's parameter tree, per architecture.

`tensor_mapping(config)` maps each r1 leaf path to the HF tensors it is made of and the two
conversions between them (`to_r1`, `to_hf`, over numpy arrays): transposes, head reshapes,
per-expert stacking. r1/checkpoints/hf.py reads and writes checkpoints with it.
"""

import numpy as np

from r1.model.config import ModelConfig


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


def shared_mtp_keys(config: ModelConfig) -> list[tuple[str, str]]:
  """(MTP copy, main tensor) pairs: V3 stores the shared embedding and head once per MTP module."""
  pairs = []
  for k in range(config.num_nextn_predict_layers):
    p = f"model.layers.{config.num_hidden_layers + k}"
    pairs.append((f"{p}.embed_tokens.weight", "model.embed_tokens.weight"))
    pairs.append((f"{p}.shared_head.head.weight",
                  "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"))
  return pairs

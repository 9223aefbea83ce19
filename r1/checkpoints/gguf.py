"""GGUF (llama.cpp) files -> Hugging Face checkpoint directories that `load_hf_checkpoint` reads.

    from r1.checkpoints import gguf
    gguf.convert("SmolLM2-135M-Instruct.Q4_1.gguf", "/tmp/smollm2")   # config.json, safetensors,
    policy = r1.load_hf_checkpoint("/tmp/smollm2")                    # tokenizer.json, ...

The file is read with the `gguf` package (llama.cpp's own reader, numpy only; extra `gguf`) and
every tensor is dequantised to float32 with `gguf.quants.dequantize` (F32/F16/BF16, Q4_0/Q4_1/
Q5_0/Q5_1/Q8_0 and the K-quants it implements). No torch, no transformers.

What the conversion undoes: llama.cpp stores a Llama's q_proj and k_proj rows permuted for its
interleaved rotary layout (per head, the two halves that Hugging Face's `rotate_half` pairs are
interleaved); `_unpermute` puts them back. The tokenizer is rebuilt the way transformers' own GGUF
loader builds it for a llama file with a byte-level BPE vocabulary (`tokenizer.ggml.model=gpt2`):
BPE over the stored vocabulary and merges, byte fallback, control tokens (`token_type` 3) as special
tokens, a ByteLevel pre-tokenizer without prefix space, no normaliser.

Architectures: `llama` (Llama, SmolLM2). Anything else, a rope scaling r1 does not read, or a
tensor type the reader cannot dequantise raises GGUFError naming it.
"""

import json
import os

import numpy as np

from r1.checkpoints import safetensors_io

SUPPORTED_ARCHITECTURES = ("llama",)
_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED = 3, 4

# GGUF tensor names (per block: blk.{i}.<name>) -> Hugging Face names.
_GLOBAL_TENSORS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                   "output.weight": "lm_head.weight"}
_BLOCK_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


class GGUFError(ValueError):
  """A GGUF file r1 cannot convert (names the architecture, field or tensor)."""


def _reader(path: str):
  try:
    import gguf  # Optional: pip install -e ".[gguf]".
  except ImportError as e:
    raise GGUFError("reading GGUF files needs the gguf package: pip install 'r1[gguf]' (or gguf>=0.17)") from e
  try:
    return gguf, gguf.GGUFReader(path)
  except (ValueError, IndexError, OSError) as e:  # Bad magic, truncated, empty: the reader's own words.
    raise GGUFError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def read_metadata(reader) -> dict:
  """Every key-value field of a GGUFReader as Python values (arrays as lists)."""
  out = {}
  for key, field in reader.fields.items():
    if key.startswith("GGUF."):
      continue
    out[key] = field.contents()
  return out


def _unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation: w f32[H * d, D], rows per head (d/2, 2) -> (2, d/2)."""
  rows = w.shape[0]
  return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _float32_value(value) -> float:
  """The shortest decimal that reads back as this float32 (GGUF stores float32: the Hub config's
  1e-05 arrives as 9.999999747378752e-06, which is the same float32 but not the same config)."""
  return float(np.format_float_scientific(np.float32(value), unique=True, trim="-"))


def hf_config(meta: dict, tied: bool) -> dict:
  """config.json of a llama-family GGUF's metadata (Hugging Face LlamaConfig field names)."""
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise GGUFError(f"GGUF general.architecture={arch!r}: r1 converts {', '.join(SUPPORTED_ARCHITECTURES)}")

  def get(name, default=None, required=True):
    key = f"{arch}.{name}"
    if key not in meta:
      if required:
        raise GGUFError(f"GGUF field {key} is missing")
      return default
    return meta[key]

  scaling = get("rope.scaling.type", "none", required=False)
  if scaling not in ("none", None):
    raise GGUFError(f"GGUF {arch}.rope.scaling.type={scaling!r} is not supported by the converter")
  heads = int(get("attention.head_count"))
  hidden = int(get("embedding_length"))
  tokens = meta.get("tokenizer.ggml.tokens") or []
  config = {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
      "hidden_size": hidden, "intermediate_size": int(get("feed_forward_length")),
      "num_hidden_layers": int(get("block_count")), "num_attention_heads": heads,
      "num_key_value_heads": int(get("attention.head_count_kv", heads, required=False)),
      "head_dim": int(get("rope.dimension_count", hidden // heads, required=False)),
      "max_position_embeddings": int(get("context_length")),
      "rms_norm_eps": _float32_value(get("attention.layer_norm_rms_epsilon")),
      "rope_theta": _float32_value(get("rope.freq_base", 10000.0, required=False)),
      "vocab_size": int(get("vocab_size", len(tokens), required=False)),
      "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
  }
  for name in ("bos", "eos", "padding"):
    value = meta.get(f"tokenizer.ggml.{name}_token_id")
    if value is not None:
      config[f"{'pad' if name == 'padding' else name}_token_id"] = int(value)
  return config


def hf_tokenizer(meta: dict):
  """(tokenizers.Tokenizer, tokenizer_config dict) of a GGUF byte-level BPE vocabulary."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

  kind = meta.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise GGUFError(f"GGUF tokenizer.ggml.model={kind!r}: the converter builds byte-level BPE ('gpt2') only")
  tokens, merges = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.merges")
  if not merges:
    raise GGUFError("GGUF tokenizer.ggml.merges is missing: a byte-level BPE needs its merges")
  types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)

  def token(name):
    index = meta.get(f"tokenizer.ggml.{name}_token_id")
    return tokens[int(index)] if index is not None else None

  unk = token("unknown")
  tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ", 1)) for m in merges],
                                   unk_token=unk, fuse_unk=True, byte_fallback=True))
  tokenizer.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True)
                                for i, t in enumerate(types) if t == _TOKEN_TYPE_CONTROL])
  tokenizer.add_tokens([AddedToken(tokens[i], normalized=False, special=False)
                        for i, t in enumerate(types) if t == _TOKEN_TYPE_USER_DEFINED])
  tokenizer.normalizer = normalizers.Sequence([])
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
  tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("▁", " "),
                                         decoders.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                                            use_regex=True)])
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
            "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False))}
  for key, name in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")):
    config[key] = token(name)
  if meta.get("tokenizer.chat_template"):
    config["chat_template"] = meta["tokenizer.chat_template"]
  return tokenizer, config


def convert(gguf_path: str, out_dir: str) -> str:
  """Writes config.json, model.safetensors (float32), tokenizer.json and tokenizer_config.json.

  Returns out_dir. Raises GGUFError for an architecture, field or tensor type r1 cannot convert.
  """
  gguf, reader = _reader(gguf_path)
  meta = read_metadata(reader)
  names = {t.name for t in reader.tensors}
  config = hf_config(meta, tied="output.weight" not in names)
  heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
  tensors = {}
  for t in reader.tensors:
    block, _, rest = t.name.partition(".") if t.name.startswith("blk.") else ("", "", t.name)
    if block:
      index, _, local = rest.partition(".")
      if local not in _BLOCK_TENSORS:
        raise GGUFError(f"GGUF tensor {t.name}: not a llama tensor the converter knows")
      name = f"model.layers.{index}.{_BLOCK_TENSORS[local]}"
    elif t.name in _GLOBAL_TENSORS:
      name = _GLOBAL_TENSORS[t.name]
    elif t.name == "rope_freqs.weight":
      raise GGUFError("GGUF tensor rope_freqs.weight (rope scaling factors) is not supported by the converter")
    else:
      raise GGUFError(f"GGUF tensor {t.name}: not a llama tensor the converter knows")
    try:
      w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    except NotImplementedError as e:
      raise GGUFError(f"GGUF tensor {t.name}: type {t.tensor_type.name} cannot be dequantised by gguf "
                      f"{getattr(gguf, '__version__', '')}".rstrip()) from e
    w = w.reshape(tuple(int(n) for n in reversed(t.shape.tolist())))  # ggml lists dims innermost first.
    if name.endswith("q_proj.weight"):
      w = _unpermute(w, heads)
    elif name.endswith("k_proj.weight"):
      w = _unpermute(w, kv_heads)
    tensors[name] = np.ascontiguousarray(w)
  tokenizer, tokenizer_config = hf_tokenizer(meta)

  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  safetensors_io.save_file(tensors, os.path.join(out_dir, "model.safetensors"))
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(tokenizer_config, f, indent=2, ensure_ascii=False)
  return out_dir

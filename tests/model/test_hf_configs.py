"""config.json as real checkpoints publish it: metadata is ignored, what changes the model is refused.

transformers' own `save_pretrained` of SmolLM2-135M-Instruct (read from its GGUF) wrote
`_model_name_or_path` and `unk_token_id`, which r1 used to refuse; Hub configs carry more such
fields (`_name_or_path`, `transformers.js_config`, `is_llama_config`, `torch_dtype`).
"""

import json
import logging
import pathlib

import pytest

from r1.checkpoints import hf
from r1.model import get_model_config

PUBLISHED = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"

# A Llama config with every metadata field the Hub and transformers add (the shape is SmolLM2's).
LLAMA = {
    "_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "_model_name_or_path": "smollm2.gguf",
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "unk_token_id": 0, "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
    "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False,
    "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
    "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152,
}


def test_metadata_fields_are_logged_once_and_ignored(caplog):
  with caplog.at_level(logging.INFO):
    config = hf.config_from_hf(LLAMA)
  assert (config.architecture, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
  assert (config.num_attention_heads, config.num_key_value_heads, config.tie_word_embeddings) == (9, 3, True)
  assert config.rope_theta == 100000 and config.rope_scaling is None and config.head_dim is None
  logged = [r for r in caplog.records if "describe the checkpoint" in r.getMessage()]
  assert len(logged) == 1 and logged[0].levelno == logging.INFO
  for field in ("_model_name_or_path", "unk_token_id", "transformers.js_config", "is_llama_config"):
    assert field in logged[0].getMessage()
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unknown_field_is_a_warning_that_names_it(caplog):
  with caplog.at_level(logging.INFO):
    config = hf.config_from_hf(dict(LLAMA, my_new_flag=3))
  assert config.num_hidden_layers == 30
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "my_new_flag" in warnings[0]


@pytest.mark.parametrize("changes,message", [
    ({"mlp_bias": True}, "mlp_bias=true"),
    ({"attention_bias": True}, "attention_bias=true"),
    ({"rope_interleaved": True}, "rope_interleaved=true"),
    ({"sliding_window": 4096}, r"fields \['sliding_window'\]"),
    ({"kv_lora_rank": 512}, r"fields \['kv_lora_rank'\]"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope type 'dynamic' is not supported"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantization_config quant_method='gptq'"),
    ({"quantization_config": {"load_in_4bit": True}}, "quantization_config quant_method=None"),
])
def test_fields_that_change_the_numbers_are_still_refused(changes, message):
  with pytest.raises(hf.CheckpointError, match=message):
    hf.config_from_hf(dict(LLAMA, **changes))


def test_a_gguf_source_named_in_quantization_config_is_provenance():
  # transformers' save_pretrained of a model it read from a GGUF (it dequantised the weights).
  gguf = {"quant_method": "gguf", "dequantize": False, "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
  assert hf.config_from_hf(dict(LLAMA, quantization_config=gguf)) == hf.config_from_hf(LLAMA)


def test_foreign_fields_set_to_null_or_false_are_harmless():
  # Qwen2 configs often carry `sliding_window: null` or `use_sliding_window: false`; so may Llama's.
  config = hf.config_from_hf(dict(LLAMA, sliding_window=None, use_sliding_window=False))
  assert config.num_hidden_layers == 30


def _published():
  return sorted(PUBLISHED.glob("*.json")) if PUBLISHED.exists() else []


# The shape each published config must read into (the named r1 config where one exists).
EXPECTED = {
    "smollm2_135m_instruct": dict(architecture="llama", num_hidden_layers=30, hidden_size=576,
                                  num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                  tie_word_embeddings=True),
    "qwen2_5_0_5b_instruct": dict(architecture="qwen2", num_hidden_layers=24, hidden_size=896,
                                  num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2_5_1_5b_instruct": dict(architecture="qwen2", num_hidden_layers=28, hidden_size=1536,
                                  num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2_5_math_1_5b": dict(architecture="qwen2", num_hidden_layers=28, hidden_size=1536,
                              num_attention_heads=12, num_key_value_heads=2),
    "r1_distill_qwen_1_5b": dict(architecture="qwen2", num_hidden_layers=28, hidden_size=1536,
                                 num_attention_heads=12, num_key_value_heads=2),
    "llama3_2_1b": dict(architecture="llama", num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}


def test_published_configs_are_present():
  names = {p.stem for p in _published()}
  assert names and names <= set(EXPECTED), names
  assert (PUBLISHED / "SOURCES.md").exists()


@pytest.mark.parametrize("path", _published(), ids=lambda p: p.stem)
def test_published_config_reads_without_edits(path, caplog):
  published = json.loads(path.read_text())
  with caplog.at_level(logging.WARNING):
    config = hf.config_from_hf(published)
  assert {k: getattr(config, k) for k in EXPECTED[path.stem]} == EXPECTED[path.stem]
  assert not caplog.records, [r.getMessage() for r in caplog.records]
  if path.stem == "r1_distill_qwen_1_5b":  # R1's own distilled student: exactly r1's named config.
    assert config == get_model_config("qwen2_5_math_1_5b")

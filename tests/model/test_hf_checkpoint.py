"""Checkpoint round trips, FP8 dequantisation, config spellings and errors for bad checkpoints."""

import json
import math
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest

import r1
from r1.checkpoints import hf, safetensors_io
from r1.model import get_model_config, init_variables

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
V3 = os.path.join(FIXTURES, "v3_qlora_yarn_groups")   # sharded, with an index
V2 = os.path.join(FIXTURES, "v2_lite_greedy")


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _copy_checkpoint(src, dst):
  shutil.copytree(src, dst)
  return dst


@pytest.mark.parametrize("src", [V3, V2])
@pytest.mark.parametrize("max_shard_bytes", [5 * 2**30, 40_000])
def test_load_save_load_is_lossless(tmp_path, src, max_shard_bytes):
  policy = r1.load_hf_checkpoint(src)
  r1.save_hf_checkpoint(policy, str(tmp_path / "out"), max_shard_bytes=max_shard_bytes)
  assert os.path.exists(tmp_path / "out" / "model.safetensors.index.json") == (max_shard_bytes < 10**6)
  again = r1.load_hf_checkpoint(str(tmp_path / "out"))
  assert again.config == policy.config
  _assert_trees_equal(policy.variables, again.variables)


def test_export_uses_published_tensor_names(tmp_path):
  policy = r1.load_hf_checkpoint(V3)
  r1.save_hf_checkpoint(policy, str(tmp_path))
  keys = set(safetensors_io.SafetensorsFile(str(tmp_path / "model.safetensors")).keys())
  with open(os.path.join(V3, "model.safetensors.index.json")) as f:
    assert keys == set(json.load(f)["weight_map"])
  with open(tmp_path / "config.json") as f:
    config = json.load(f)
  assert config["rope_scaling"]["type"] == "yarn" and config["model_type"] == "deepseek_v3"


def test_random_mtp_model_round_trips(tmp_path):
  config = get_model_config("tiny_v3_mtp")
  policy = r1.Policy(config, init_variables(config, jax.random.key(0)))
  r1.save_hf_checkpoint(policy, str(tmp_path))
  keys = set(safetensors_io.SafetensorsFile(str(tmp_path / "model.safetensors")).keys())
  assert "model.layers.3.eh_proj.weight" in keys and "model.layers.3.shared_head.head.weight" in keys
  again = r1.load_hf_checkpoint(str(tmp_path))
  assert again.config.num_nextn_predict_layers == 1
  _assert_trees_equal(policy.variables, again.variables)
  dropped = r1.load_hf_checkpoint(str(tmp_path), load_mtp=False)
  assert dropped.config.num_nextn_predict_layers == 0 and "mtp_0" not in dropped.params


def test_bfloat16_load_and_export(tmp_path):
  policy = r1.load_hf_checkpoint(V2, dtype="bfloat16")
  assert policy.params["embed_tokens"].dtype == jax.numpy.bfloat16
  assert policy.params["layers_1"]["mlp"]["gate"].dtype == np.float32  # router stays float32
  r1.save_hf_checkpoint(policy, str(tmp_path))
  again = r1.load_hf_checkpoint(str(tmp_path), dtype="bfloat16")
  _assert_trees_equal(policy.variables, again.variables)
  ref = np.load(os.path.join(V2, "reference.npz"))
  logits = np.asarray(policy.logits(ref["tokens"]))
  assert np.abs(logits - ref["logits"]).mean() < 0.1  # bf16 compute, close to the f32 reference


def _dequantize_loop(w8, scale_inv, block=128):
  out = np.zeros(w8.shape, np.float32)
  for i in range(w8.shape[0]):
    for j in range(w8.shape[1]):
      out[i, j] = float(w8[i, j]) * float(scale_inv[i // block, j // block])
  return out


def test_dequantize_fp8_blocks():
  rng = np.random.default_rng(0)
  w8 = rng.normal(size=(200, 130)).astype(ml_dtypes.float8_e4m3fn)
  scale = rng.uniform(0.5, 2, size=(2, 2)).astype(np.float32)
  np.testing.assert_array_equal(hf.dequantize_fp8(w8, scale), _dequantize_loop(w8, scale))
  with pytest.raises(hf.CheckpointError, match="weight_scale_inv shape"):
    hf.dequantize_fp8(w8, scale[:1])


def test_fp8_checkpoint_is_dequantised_on_load(tmp_path):
  """Quantise one fixture to float8_e4m3 with 8x8 blocks; loading must give w8 * scale_inv."""
  src = safetensors_io.SafetensorsFile(os.path.join(V2, "model.safetensors"))
  tensors, expected = {}, {}
  for key in src.keys():
    w = np.asarray(src.get(key))
    if key.endswith("proj.weight") and w.ndim == 2:
      blocks = (math.ceil(w.shape[0] / 8), math.ceil(w.shape[1] / 8))
      amax = np.zeros(blocks, np.float32)
      for i in range(blocks[0]):
        for j in range(blocks[1]):
          amax[i, j] = np.abs(w[8 * i:8 * i + 8, 8 * j:8 * j + 8]).max()
      scale_inv = (amax / 448.0).astype(np.float32)
      full = np.repeat(np.repeat(scale_inv, 8, 0), 8, 1)[:w.shape[0], :w.shape[1]]
      w8 = (w / full).astype(ml_dtypes.float8_e4m3fn)
      tensors[key], tensors[key[:-len("weight")] + "weight_scale_inv"] = w8, scale_inv
      expected[key] = _dequantize_loop(w8, scale_inv, 8)
    else:
      tensors[key] = w
  os.makedirs(tmp_path / "fp8")
  safetensors_io.save_file(tensors, str(tmp_path / "fp8" / "model.safetensors"))
  with open(os.path.join(V2, "config.json")) as f:
    config = json.load(f)
  config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [8, 8]}
  with open(tmp_path / "fp8" / "config.json", "w") as f:
    json.dump(config, f)
  policy = r1.load_hf_checkpoint(str(tmp_path / "fp8"))
  o_proj = np.asarray(policy.params["layers_0"]["self_attn"]["o_proj"])
  h = policy.config.num_attention_heads
  ref = expected["model.layers.0.self_attn.o_proj.weight"].T.reshape(h, -1, o_proj.shape[-1])
  np.testing.assert_array_equal(o_proj, ref)
  gate = np.asarray(policy.params["layers_1"]["mlp"]["experts_gate_proj"][3])
  np.testing.assert_array_equal(gate, expected["model.layers.1.mlp.experts.3.gate_proj.weight"].T)
  ref_logits = np.load(os.path.join(V2, "reference.npz"))
  assert np.abs(np.asarray(policy.logits(ref_logits["tokens"])) - ref_logits["logits"]).mean() < 0.5


def _edit_config(path, **changes):
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  for k, v in changes.items():
    if v is None:
      config.pop(k, None)
    else:
      config[k] = v
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)


def _with_tensors(tmp_path, edit):
  """A copy of the V2 fixture whose tensors dict went through `edit` (in place)."""
  dst = _copy_checkpoint(V2, str(tmp_path / "ckpt"))
  src = safetensors_io.SafetensorsFile(os.path.join(V2, "model.safetensors"))
  tensors = {k: np.asarray(src.get(k)) for k in src.keys()}
  edit(tensors)
  safetensors_io.save_file(tensors, os.path.join(dst, "model.safetensors"))
  return dst


def test_missing_tensor_is_named(tmp_path):
  dst = _with_tensors(tmp_path, lambda t: t.pop("model.layers.2.mlp.experts.5.up_proj.weight"))
  with pytest.raises(hf.CheckpointError, match=r"missing tensor model\.layers\.2\.mlp\.experts\.5\.up_proj\.weight"):
    r1.load_hf_checkpoint(dst)


def test_wrong_shape_is_named(tmp_path):
  dst = _with_tensors(tmp_path, lambda t: t.update({"model.norm.weight": np.ones(63, np.float32)}))
  with pytest.raises(hf.CheckpointError, match=r"model\.norm\.weight.*\(63,\) != expected \(64,\)"):
    r1.load_hf_checkpoint(dst)


def test_unexpected_tensor_is_named(tmp_path):
  dst = _with_tensors(tmp_path, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4)}))
  with pytest.raises(hf.CheckpointError, match=r"does not know.*rotary_emb\.inv_freq"):
    r1.load_hf_checkpoint(dst)


@pytest.mark.parametrize("changes,message", [
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope type 'dynamic' is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"attention_bias": True}, "attention_bias=true"),
    ({"sliding_window": 4096}, r"fields \['sliding_window'\] are not supported"),
    ({"topk_method": "top1"}, "topk_method='top1'"),
    ({"model_type": "llama"}, "model_type='llama'"),
])
def test_unsupported_config_is_named(tmp_path, changes, message):
  dst = _copy_checkpoint(V2, str(tmp_path / "ckpt"))
  _edit_config(dst, **changes)
  with pytest.raises(hf.CheckpointError, match=message):
    r1.load_hf_checkpoint(dst)


def test_published_v3_config_reads_exactly():
  """The deepseek-ai/DeepSeek-V3 config.json (as published) gives r1's deepseek_v3 config."""
  published = {
      "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
      "auto_map": {}, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
      "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
      "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
      "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
      "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128, "num_experts_per_tok": 8,
      "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536,
      "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
      "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                              "weight_block_size": [128, 128]},
      "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                              "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                                              "type": "yarn"},
      "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": False,
      "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.33.1",
      "use_cache": True, "v_head_dim": 128, "vocab_size": 129280}
  config = hf.config_from_hf(published, num_nextn_predict_layers=0)
  assert config == get_model_config("deepseek_v3")
  respelled = dict(published, rope_parameters=dict(published.pop("rope_scaling"), rope_type="yarn", rope_theta=10000))
  respelled.pop("rope_theta")
  del respelled["rope_parameters"]["type"]
  assert hf.config_from_hf(respelled, num_nextn_predict_layers=0) == config

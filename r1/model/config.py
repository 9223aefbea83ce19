"""The model configuration: one frozen, hashable dataclass for every decoder r1 runs.

`architecture` picks the attention and the layout: "deepseek" (DeepSeek-V2/V3: Multi-head Latent
Attention, DeepSeekMoE) or the dense GQA decoders the R1 paper distils into, "qwen2" (Qwen2/2.5,
R1-Distill-Qwen: q/k/v biases) and "llama" (Llama-3, R1-Distill-Llama: llama3 RoPE scaling). Dense
models use the GQA fields (num_key_value_heads, head_dim, attention_bias) and ignore the MLA and
MoE ones. Field names are the Hugging Face `config.json` names (so a checkpoint's config reads
straight in); the last section holds r1's own settings (dtypes, MoE kernel). Being frozen and
hashable, a `ModelConfig` can be a Flax module attribute and a static argument of `jax.jit`.
"""

import dataclasses
from typing import Any

import ml_collections

# What a decoder layer keeps from its forward pass for the backward (mapped to jax.checkpoint
# policies in r1/model/transformer.py; r1/tools/plan.py models the memory of each):
#   none  keep every intermediate the backward needs (fastest, most memory);
#   full  keep only the layer's input and recompute the whole layer in the backward;
#   dots  keep the outputs of the weight matmuls (projections, dense / shared-expert FFN, router)
#         and recompute the rest: norms, RoPE, the attention scores and softmax, routed experts.
REMAT_POLICIES = ("none", "full", "dots")
ARCHITECTURES = ("deepseek", "qwen2", "llama")
ROPE_SCALING_TYPES = ("yarn", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE context extension: YaRN (DeepSeek-V2/V3, `type: yarn`) or Llama-3's frequency scaling
  (`rope_type: llama3`, which reads factor, original_max_position_embeddings and the two
  *_freq_factor fields; the beta_* and mscale* fields are YaRN's)."""
  factor: float = 40.0
  original_max_position_embeddings: int = 4096
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  mscale: float = 1.0
  mscale_all_dim: float = 0.0
  rope_type: str = "yarn"
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0

  def __post_init__(self):
    if self.rope_type not in ROPE_SCALING_TYPES:
      raise ValueError(f"rope_type={self.rope_type!r}: expected one of {', '.join(ROPE_SCALING_TYPES)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder. Defaults are DeepSeek-V3's published values."""
  architecture: str = "deepseek"       # an ARCHITECTURES name: "deepseek" (MLA + MoE), "qwen2" or "llama"
  vocab_size: int = 129280
  hidden_size: int = 7168
  intermediate_size: int = 18432       # dense FFN width (first_k_dense_replace layers)
  moe_intermediate_size: int = 2048    # width of one routed (and one shared) expert
  num_hidden_layers: int = 61
  num_attention_heads: int = 128
  # Multi-head Latent Attention.
  q_lora_rank: int | None = 1536       # None: a direct q projection (V2-Lite)
  kv_lora_rank: int = 512
  qk_nope_head_dim: int = 128
  qk_rope_head_dim: int = 64
  v_head_dim: int = 128
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = RopeScaling(mscale=1.0, mscale_all_dim=1.0)
  rope_interleave: bool = True         # rotary pairs (2i, 2i+1) as in DeepSeek's checkpoints
  max_position_embeddings: int = 163840
  # DeepSeekMoE.
  n_routed_experts: int | None = 256   # None: a dense model
  n_shared_experts: int = 1
  num_experts_per_tok: int = 8
  n_group: int = 8
  topk_group: int = 4
  topk_method: str = "noaux_tc"        # V3 bias-corrected group top-k; V2: greedy / group_limited_greedy
  scoring_func: str = "sigmoid"        # V3 sigmoid, V2 softmax
  norm_topk_prob: bool = True
  routed_scaling_factor: float = 2.5
  first_k_dense_replace: int = 3
  # Multi-token prediction depth D (V3 paper section 2.2); 0 disables it.
  num_nextn_predict_layers: int = 0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  # Grouped-query attention (architecture qwen2 / llama): num_key_value_heads K/V heads shared by
  # num_attention_heads / num_key_value_heads query heads each, of width head_dim (None:
  # hidden_size // num_attention_heads); attention_bias adds q/k/v biases (Qwen2).
  num_key_value_heads: int | None = None
  head_dim: int | None = None
  attention_bias: bool = False
  # r1's own settings (not in config.json).
  dtype: str = "float32"               # activation / matmul dtype (bfloat16 on TPU)
  param_dtype: str = "float32"
  moe_impl: str = "einsum"             # "einsum" (padded batched matmul, fast on CPU), "ragged" or "ep"
  capacity_factor: float | None = None  # None: dropless
  remat: str = "none"                  # a REMAT_POLICIES name: what each decoder layer saves for backward

  def __post_init__(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture={self.architecture!r}: expected one of {', '.join(ARCHITECTURES)}")
    if self.is_gqa:
      if self.n_routed_experts:
        raise ValueError(f"architecture={self.architecture!r} is a dense model: set n_routed_experts=None")
      if self.num_nextn_predict_layers:
        raise ValueError(f"architecture={self.architecture!r} has no multi-token prediction modules")
      kv = self.num_key_value_heads or self.num_attention_heads
      if self.num_attention_heads % kv:
        raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                         f"num_key_value_heads={kv}")
      if self.gqa_head_dim % 2:
        raise ValueError(f"head_dim={self.gqa_head_dim} must be even (RoPE rotates pairs)")
      if self.rope_interleave:
        raise ValueError(f"architecture={self.architecture!r} rotates RoPE half-split (transformers' rotate_half): "
                         "set rope_interleave=False (True is DeepSeek's checkpoint layout)")
    if self.topk_method not in ("noaux_tc", "greedy", "group_limited_greedy"):
      raise ValueError(f"topk_method={self.topk_method!r}: expected noaux_tc, greedy or group_limited_greedy")
    if self.scoring_func not in ("sigmoid", "softmax"):
      raise ValueError(f"scoring_func={self.scoring_func!r}: expected sigmoid or softmax")
    if self.moe_impl not in ("einsum", "ragged", "ep"):
      raise ValueError(f"moe_impl={self.moe_impl!r}: expected einsum, ragged or ep")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r}: expected one of {', '.join(REMAT_POLICIES)}")
    if self.n_routed_experts:
      if self.n_routed_experts % self.n_group:
        raise ValueError(f"n_routed_experts={self.n_routed_experts} is not divisible by n_group={self.n_group}")
      if self.topk_group > self.n_group:
        raise ValueError(f"topk_group={self.topk_group} > n_group={self.n_group}")
      if self.num_experts_per_tok > self.topk_group * self.n_routed_experts // self.n_group:
        raise ValueError("num_experts_per_tok exceeds the experts in the selected groups")
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))

  @property
  def is_gqa(self) -> bool:
    """A dense grouped-query-attention decoder (Qwen2 / Llama) rather than DeepSeek's MLA + MoE."""
    return self.architecture != "deepseek"

  @property
  def gqa_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  @property
  def kv_heads(self) -> int:
    """K/V heads of GQA (num_attention_heads when unset)."""
    return self.num_key_value_heads or self.num_attention_heads

  @property
  def qk_head_dim(self) -> int:
    """Width of a query/key head: nope + rope for MLA, head_dim for GQA."""
    if self.is_gqa:
      return self.gqa_head_dim
    return self.qk_nope_head_dim + self.qk_rope_head_dim

  @property
  def rope_dim(self) -> int:
    """How many dimensions of a query/key head RoPE rotates: MLA's decoupled key, GQA's whole head."""
    return self.gqa_head_dim if self.is_gqa else self.qk_rope_head_dim

  def cache_entry_shapes(self, absorb: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Trailing shapes of the two per-token, per-layer decode cache entries.

    MLA: the latent (c_kv [kv_lora_rank], k_pe [qk_rope_head_dim]), or with absorb=False expanded
    per-head keys and values ([H, qk_head], [H, v_head]). GQA: k and v [num_key_value_heads, head_dim].
    """
    if self.is_gqa:
      return (self.kv_heads, self.gqa_head_dim), (self.kv_heads, self.gqa_head_dim)
    if absorb:
      return (self.kv_lora_rank,), (self.qk_rope_head_dim,)
    return (self.num_attention_heads, self.qk_head_dim), (self.num_attention_heads, self.v_head_dim)

  def is_moe_layer(self, layer: int) -> bool:
    """Layer `layer` (0-based) uses DeepSeekMoE; the first `first_k_dense_replace` are dense."""
    return bool(self.n_routed_experts) and layer >= self.first_k_dense_replace

  @property
  def num_moe_layers(self) -> int:
    return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any] | ml_collections.ConfigDict) -> "ModelConfig":
    """Builds a config from a dict or ConfigDict with exactly these field names."""
    if isinstance(d, ml_collections.ConfigDict):
      d = d.to_dict()
    d = dict(d)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise ValueError(f"unknown model config fields {unknown}; expected a subset of {sorted(fields)}")
    if isinstance(d.get("rope_scaling"), dict):
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)

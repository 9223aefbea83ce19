"""The decoder: embeddings, attention + (dense | MoE) layers, final norm, LM head, MTP.

DeepSeek-V2/V3 layers use MLA and DeepSeekMoE after the first dense ones; Qwen2 / Llama layers
(config.architecture) use grouped-query attention and a dense SwiGLU everywhere. Everything else
(norms, FFN, embeddings, head, the sampler's decode interface) is shared.

Layers are an explicit Python loop rather than `nn.scan`: the stack is heterogeneous (dense first
layers, MoE after, MTP blocks on top), each layer returns its own expert load, and per-layer
parameter names map one-to-one onto Hugging Face checkpoint keys. The cost is compile time linear
in depth, which is small for the configs r1 trains; `remat` (config.REMAT_POLICIES) bounds
activation memory: "full" keeps only each layer's input, "dots" also its weight-matmul outputs.
"""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from r1.model import layers
from r1.model.config import ModelConfig
from r1.model.gqa import GQA
from r1.model.mla import MLA, attention_mask
from r1.model.moe import MoE

Array = jax.Array


def remat_policy(name: str):
  """The jax.checkpoint policy of a config.REMAT_POLICIES name other than "none" (None: save nothing)."""
  policies = {
      "full": None,
      # Matmuls against weights have no dot_general batch dimensions; the attention score and
      # context einsums (batched over B, H) and the routed experts (over E, or ragged_dot) do.
      "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }
  if name not in policies:
    raise ValueError(f"remat={name!r}: expected one of {', '.join(policies)} (or none)")
  return policies[name]


@flax.struct.dataclass
class ModelOutput:
  """logits f32[B, T, V] (None if not asked for); hidden [B, T, D] after the final norm;
  expert_load int32[L_moe, E] tokens routed to each expert per MoE layer;
  mtp_logits f32[D_mtp, B, T, V] where depth k (0-based) at position i predicts token i + k + 2;
  latent_kv: the decode cache entries when asked for (prefill), per layer: MLA's latent
  (c_kv [B, T, kv_lora], k_pe [B, T, rope]), or GQA's (k [B, T, K, hd], v [B, T, K, hd])."""
  logits: Array | None
  hidden: Array
  expert_load: Array
  mtp_logits: Array | None = None
  latent_kv: tuple | None = None


class DecoderLayer(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then + FFN(norm(.)); attn = MLA or GQA, FFN = SwiGLU or DeepSeekMoE."""
  config: ModelConfig
  moe: bool

  def setup(self):
    c = self.config
    self.input_layernorm = layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype)
    self.self_attn = GQA(c) if c.is_gqa else MLA(c)
    self.post_attention_layernorm = layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype)
    self.mlp = MoE(c) if self.moe else layers.SwiGLU(c.intermediate_size, c.dtype, c.param_dtype)

  def _ffn(self, x, token_mask):
    h = self.post_attention_layernorm(x)
    if self.moe:
      y, load = self.mlp(h, token_mask)
    else:
      y, load = self.mlp(h), None
    return x + y.astype(x.dtype), load

  def __call__(self, x, cos, sin, mask, token_mask, return_kv: bool = False):
    """x [B, T, D] -> (x, expert load int32[E] or None, latent kv or None)."""
    attn = self.self_attn(self.input_layernorm(x), cos, sin, mask, return_kv=return_kv)
    attn, kv = attn if return_kv else (attn, None)
    x, load = self._ffn(x + attn.astype(x.dtype), token_mask)
    return layers.constrain(x, ("batch", "length", "act_embed")), load, kv

  def decode(self, x, cos, sin, prompt_kv, prompt_mask, sample_kv, sample_mask, write_index, absorb=True):
    """One decode step, x [B, G, D] -> (x, updated sample kv); see MLA.decode / decode_expanded."""
    attend = self.self_attn.decode if absorb else self.self_attn.decode_expanded
    attn, sample_kv = attend(self.input_layernorm(x), cos, sin, prompt_kv, prompt_mask, sample_kv, sample_mask,
                             write_index)
    x, _ = self._ffn(x + attn.astype(x.dtype), jnp.ones(x.shape[:2], bool))
    return x, sample_kv


class MTPModule(nn.Module):
  """One multi-token-prediction depth (V3 eq. 21-23): combine h^{k-1} with Emb(t_{i+k}), one block."""
  config: ModelConfig
  layer_index: int

  @nn.compact
  def __call__(self, prev_hidden, next_embeds, cos, sin, mask, token_mask):
    c = self.config
    e = layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype, name="enorm")(next_embeds)
    h = layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype, name="hnorm")(prev_hidden)
    # Checkpoint order is [embedding; hidden] (as served by vLLM), the paper writes the reverse.
    eh = layers.param_with_axes(self, "eh_proj", (2 * c.hidden_size, c.hidden_size), ("mlp", "embed"),
                                dtype=jnp.dtype(c.param_dtype))
    x = jnp.concatenate([e, h], axis=-1) @ eh.astype(e.dtype)
    x, load, _ = DecoderLayer(c, c.is_moe_layer(self.layer_index), name="block")(x, cos, sin, mask, token_mask)
    return x, layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype, name="final_norm")(x), load


class Transformer(nn.Module):
  """tokens int32[B, T] -> ModelOutput. Positions default to 0..T-1 and segment_ids to all ones."""
  config: ModelConfig

  def setup(self):
    c = self.config
    if c.hidden_size % 2 or c.qk_rope_head_dim % 2:
      raise ValueError("hidden_size and qk_rope_head_dim must be even")
    self.embed_tokens = layers.param_with_axes(self, "embed_tokens", (c.vocab_size, c.hidden_size),
                                               ("vocab", "embed"), dtype=jnp.dtype(c.param_dtype))
    # return_kv (argument 6, counting self) is a Python bool.
    block = DecoderLayer
    if c.remat != "none":
      block = nn.remat(DecoderLayer, static_argnums=(6,), policy=remat_policy(c.remat))
    self.layers = [block(c, c.is_moe_layer(i), name=f"layers_{i}") for i in range(c.num_hidden_layers)]
    self.norm = layers.RMSNorm(c.rms_norm_eps, param_dtype=c.param_dtype)
    if not c.tie_word_embeddings:
      self.lm_head = layers.param_with_axes(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"),
                                            dtype=jnp.dtype(c.param_dtype))
    self.mtp = [MTPModule(c, c.num_hidden_layers + k, name=f"mtp_{k}") for k in range(c.num_nextn_predict_layers)]

  def embed(self, tokens: Array) -> Array:
    """tokens int32[B, T] -> embeddings [B, T, D] in the compute dtype."""
    x = jnp.take(self.embed_tokens, tokens, axis=0).astype(jnp.dtype(self.config.dtype))
    return layers.constrain(x, ("batch", "length", "act_embed"))

  def head(self, hidden: Array) -> Array:
    """hidden [..., D] (after the final norm) -> logits f32[..., V]."""
    cd = jnp.dtype(self.config.dtype)
    w = self.embed_tokens.T if self.config.tie_word_embeddings else self.lm_head
    return jnp.einsum("...d,dv->...v", hidden.astype(cd), w.astype(cd), preferred_element_type=jnp.float32)

  def __call__(self, tokens: Array, positions: Array | None = None, segment_ids: Array | None = None, *,
               return_logits: bool = True, return_mtp: bool = False, return_kv: bool = False) -> ModelOutput:
    c = self.config
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if segment_ids is None:
      segment_ids = jnp.ones((b, t), jnp.int32)
    mask = attention_mask(segment_ids)
    token_mask = segment_ids != 0
    cos, sin = layers.rope_cos_sin(positions, c)

    x = self.embed(tokens)
    loads, latent_kv = [], []
    for layer in self.layers:
      x, load, kv = layer(x, cos, sin, mask, token_mask, return_kv)
      latent_kv.append(kv)
      if load is not None:
        loads.append(load)
    hidden = self.norm(x)

    mtp_logits = None
    if return_mtp and self.mtp:
      prev, depth_logits = hidden, []
      for k, module in enumerate(self.mtp):
        # Depth k+1 reads the token k+1 ahead; positions past the end see token 0 and are masked
        # out of the MTP loss by the caller.
        ahead = jnp.pad(tokens[:, k + 1:], ((0, 0), (0, k + 1)))
        prev, normed, load = module(prev, self.embed(ahead), cos, sin, mask, token_mask)
        loads.append(load)
        depth_logits.append(self.head(normed))
      mtp_logits = jnp.stack(depth_logits)
    e = c.n_routed_experts or 1
    expert_load = jnp.stack(loads) if loads else jnp.zeros((0, e), jnp.int32)
    return ModelOutput(logits=self.head(hidden) if return_logits else None, hidden=hidden,
                       expert_load=expert_load, mtp_logits=mtp_logits,
                       latent_kv=tuple(latent_kv) if return_kv else None)

  def expand_prompt_cache(self, latent_kv):
    """Per layer (c_kv, k_pe) -> per layer (k [..., H, qk_head], v [..., H, v_head])."""
    return tuple(layer.self_attn.expand_kv(*kv) for layer, kv in zip(self.layers, latent_kv))

  def decode(self, tokens: Array, positions: Array, prompt_kv, prompt_mask: Array, sample_kv,
             sample_mask: Array, write_index: Array, absorb: bool = True):
    """One decode step for G samples per prompt on the latent cache (absorbed MLA) or GQA's K/V cache.

    With absorb=False an MLA model's caches hold expanded per-head keys and values instead (a
    baseline); GQA ignores it. Cache entry shapes: config.cache_entry_shapes(absorb).

    Args:
      tokens, positions: int32[B, G] the newest token of each sample and its position.
      prompt_kv: per layer (c_kv [B, P, L], k_pe [B, P, R]) (GQA: (k, v) [B, P, K, hd]), shared by a
        prompt's G samples.
      prompt_mask: bool[B, P] real (non-padding) prompt tokens.
      sample_kv: per layer (c_kv [B, G, S, L], k_pe [B, G, S, R]) (GQA: [B, G, S, K, hd]) for
        generated tokens.
      sample_mask: bool[B, G, S] generated positions to attend to (the one written now included).
      write_index: int32 scalar, where this step's entry goes in sample_kv.
    Returns:
      logits f32[B, G, V] for the next token, and the updated sample_kv.
    """
    cos, sin = layers.rope_cos_sin(positions, self.config)
    x = self.embed(tokens)
    new_kv = []
    for layer, p_kv, s_kv in zip(self.layers, prompt_kv, sample_kv):
      x, s_kv = layer.decode(x, cos, sin, p_kv, prompt_mask, s_kv, sample_mask, write_index, absorb)
      new_kv.append(s_kv)
    return self.head(self.norm(x)), tuple(new_kv)

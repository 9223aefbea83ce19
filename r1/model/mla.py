"""Multi-head Latent Attention (DeepSeek-V2 section 2.1, V3 section 2.1.1).

Keys and values are compressed jointly into a latent c_kv of width kv_lora_rank (plus one RoPE key
of width qk_rope_head_dim shared by all heads), so a decode cache holds only
(kv_lora_rank + qk_rope_head_dim) numbers per token per layer. `__call__` is the training /
prefill form: it expands the latent into per-head keys and values. `decode` is the sampler's
absorbed form: the key up-projection is folded into the query and the value up-projection into
the output, so attention runs in the latent space and nothing is re-expanded per step.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1.model import layers
from r1.model.config import ModelConfig

Array = jax.Array

# Finite "minus infinity": a fully masked row (a padding query) yields a uniform softmax, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(segment_ids: Array) -> Array:
  """bool[B, T, T]: query t sees key s iff s <= t and both are in the same non-zero segment.

  segment_ids: int[B, T]; 0 marks padding, packed examples carry 1, 2, ...
  """
  t = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return causal[None] & same & (segment_ids[:, None, :] != 0)


class MLA(nn.Module):
  """x: [B, T, D], positions int[B, T], mask bool[B, T, T] -> [B, T, D]."""
  config: ModelConfig

  def setup(self):
    c = self.config
    pd = jnp.dtype(c.param_dtype)
    h, qk = c.num_attention_heads, c.qk_head_dim
    if c.q_lora_rank is None:
      self.q_proj = layers.param_with_axes(self, "q_proj", (c.hidden_size, h, qk), ("embed", "heads", "qk_head"),
                                           dtype=pd)
    else:
      self.q_a_proj = layers.param_with_axes(self, "q_a_proj", (c.hidden_size, c.q_lora_rank), ("embed", "q_lora"),
                                             dtype=pd)
      self.q_a_layernorm = layers.RMSNorm(eps=c.rms_norm_eps, axis_name="q_lora", param_dtype=c.param_dtype)
      self.q_b_proj = layers.param_with_axes(self, "q_b_proj", (c.q_lora_rank, h, qk), ("q_lora", "heads", "qk_head"),
                                             dtype=pd)
    # One projection produces the KV latent and the shared RoPE key, as in the checkpoints.
    self.kv_a_proj_with_mqa = layers.param_with_axes(
        self, "kv_a_proj_with_mqa", (c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim), ("embed", "kv_lora"),
        dtype=pd)
    self.kv_a_layernorm = layers.RMSNorm(eps=c.rms_norm_eps, axis_name="kv_lora", param_dtype=c.param_dtype)
    self.kv_b_proj = layers.param_with_axes(
        self, "kv_b_proj", (c.kv_lora_rank, h, c.qk_nope_head_dim + c.v_head_dim), ("kv_lora", "heads", "qk_head"),
        dtype=pd)
    self.o_proj = layers.param_with_axes(self, "o_proj", (h, c.v_head_dim, c.hidden_size), ("heads", "v_head", "embed"),
                                         dtype=pd)

  def project_query(self, x: Array, cos: Array, sin: Array) -> tuple[Array, Array]:
    """Queries: q_nope [B, T, H, nope] and RoPE'd q_pe [B, T, H, rope]."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    x = x.astype(cd)
    if c.q_lora_rank is None:
      q = jnp.einsum("btd,dhk->bthk", x, self.q_proj.astype(cd))
    else:
      q = self.q_a_layernorm(x @ self.q_a_proj.astype(cd))
      q = jnp.einsum("btr,rhk->bthk", q, self.q_b_proj.astype(cd))
    q = layers.constrain(q, ("batch", "length", "act_heads", None))
    q_nope, q_pe = q[..., :c.qk_nope_head_dim], q[..., c.qk_nope_head_dim:]
    return q_nope, layers.apply_rope(q_pe, cos, sin, c.rope_interleave)

  def compress_kv(self, x: Array, cos: Array, sin: Array) -> tuple[Array, Array]:
    """The latent cache entries: normalised c_kv [B, T, kv_lora] and RoPE'd k_pe [B, T, rope]."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    kv = x.astype(cd) @ self.kv_a_proj_with_mqa.astype(cd)
    c_kv = self.kv_a_layernorm(kv[..., :c.kv_lora_rank])
    k_pe = layers.apply_rope(kv[..., c.kv_lora_rank:], cos, sin, c.rope_interleave)
    return c_kv, k_pe

  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, return_kv: bool = False):
    """Expanded attention; with return_kv also the latent cache entries (c_kv, k_pe)."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    q_nope, q_pe = self.project_query(x, cos, sin)
    c_kv, k_pe = self.compress_kv(x, cos, sin)
    kv = jnp.einsum("bsr,rhk->bshk", c_kv, self.kv_b_proj.astype(cd))
    k_nope, v = kv[..., :c.qk_nope_head_dim], kv[..., c.qk_nope_head_dim:]
    # The RoPE key is shared by all heads (the "decoupled" key of V2 eq. 14).
    scores = (jnp.einsum("bthk,bshk->bhts", q_nope, k_nope)
              + jnp.einsum("bthk,bsk->bhts", q_pe, k_pe)).astype(jnp.float32)
    scores = scores * layers.softmax_scale(c)
    scores = jnp.where(mask[:, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(cd)
    out = jnp.einsum("bhts,bshv->bthv", probs, v)
    out = layers.constrain(out, ("batch", "length", "act_heads", None))
    out = jnp.einsum("bthv,hvd->btd", out, self.o_proj.astype(cd))
    return (out, (c_kv, k_pe)) if return_kv else out

  def expand_kv(self, c_kv: Array, k_pe: Array) -> tuple[Array, Array]:
    """Latent cache -> per-head keys [..., H, qk_head] and values [..., H, v_head] (MHA layout)."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    kv = jnp.einsum("...r,rhk->...hk", c_kv.astype(cd), self.kv_b_proj.astype(cd))
    k_nope, v = kv[..., :c.qk_nope_head_dim], kv[..., c.qk_nope_head_dim:]
    k_pe = jnp.broadcast_to(k_pe[..., None, :].astype(cd), k_nope.shape[:-1] + (c.qk_rope_head_dim,))
    return jnp.concatenate([k_nope, k_pe], axis=-1), v

  def decode_expanded(self, x: Array, cos: Array, sin: Array, prompt_kv, prompt_mask: Array, sample_kv,
                      sample_mask: Array, write_index: Array):
    """`decode` on an expanded cache of per-head keys and values (the non-absorbed baseline).

    prompt_kv: (k [B, P, H, qk_head], v [B, P, H, v_head]); sample_kv: (k [B, G, S, H, qk_head],
    v [B, G, S, H, v_head]). H * (qk_head + v_head) values per token instead of L + R.
    """
    c = self.config
    cd = jnp.dtype(c.dtype)
    q_nope, q_pe = self.project_query(x, cos, sin)
    q = jnp.concatenate([q_nope, q_pe], axis=-1)                          # [B, G, H, qk]
    k_new, v_new = self.expand_kv(*self.compress_kv(x, cos, sin))
    k_gen, v_gen = layers.write_sample_cache(sample_kv, (k_new, v_new), write_index)
    scale = layers.softmax_scale(c)
    s_prompt = jnp.einsum("bghk,bphk->bghp", q, prompt_kv[0].astype(cd)).astype(jnp.float32) * scale
    s_gen = jnp.einsum("bghk,bgshk->bghs", q, k_gen.astype(cd)).astype(jnp.float32) * scale
    s_prompt = jnp.where(prompt_mask[:, None, None, :], s_prompt, MASK_VALUE)
    s_gen = jnp.where(sample_mask[:, :, None, :], s_gen, MASK_VALUE)
    probs = jax.nn.softmax(jnp.concatenate([s_prompt, s_gen], axis=-1), axis=-1).astype(cd)
    p_prompt, p_gen = probs[..., :s_prompt.shape[-1]], probs[..., s_prompt.shape[-1]:]
    out = (jnp.einsum("bghp,bphv->bghv", p_prompt, prompt_kv[1].astype(cd))
           + jnp.einsum("bghs,bgshv->bghv", p_gen, v_gen.astype(cd)))
    return jnp.einsum("bghv,hvd->bgd", out, self.o_proj.astype(cd)), (k_gen, v_gen)

  def decode(self, x: Array, cos: Array, sin: Array, prompt_kv, prompt_mask: Array, sample_kv,
             sample_mask: Array, write_index: Array):
    """One absorbed decode step for G samples of each of B prompts.

    The prompt's latent cache is stored once per prompt and shared by its G samples (prefix
    sharing); each sample has its own cache for the tokens it generated.

    Args:
      x: [B, G, D] the new tokens' hidden states; cos, sin: [B, G, R/2] at their positions.
      prompt_kv: (c_kv [B, P, L], k_pe [B, P, R]) with prompt_mask bool[B, P].
      sample_kv: (c_kv [B, G, S, L], k_pe [B, G, S, R]); the new entry is written at write_index.
      sample_mask: bool[B, G, S] the valid generated positions, the new one included.
      write_index: int32 scalar.
    Returns:
      out [B, G, D] and the updated sample_kv.
    """
    c = self.config
    cd = jnp.dtype(c.dtype)
    q_nope, q_pe = self.project_query(x, cos, sin)                     # [B, G, H, *]
    c_new, k_pe_new = self.compress_kv(x, cos, sin)                     # [B, G, L], [B, G, R]
    c_gen, k_gen = layers.write_sample_cache(sample_kv, (c_new, k_pe_new), write_index)
    c_prompt, k_prompt = prompt_kv
    w_kv = self.kv_b_proj.astype(cd)
    w_uk, w_uv = w_kv[..., :c.qk_nope_head_dim], w_kv[..., c.qk_nope_head_dim:]
    q_latent = jnp.einsum("bghk,rhk->bghr", q_nope, w_uk)               # key up-projection absorbed
    scale = layers.softmax_scale(c)
    s_prompt = (jnp.einsum("bghr,bpr->bghp", q_latent, c_prompt.astype(cd))
                + jnp.einsum("bghk,bpk->bghp", q_pe, k_prompt.astype(cd))).astype(jnp.float32) * scale
    s_gen = (jnp.einsum("bghr,bgsr->bghs", q_latent, c_gen.astype(cd))
             + jnp.einsum("bghk,bgsk->bghs", q_pe, k_gen.astype(cd))).astype(jnp.float32) * scale
    s_prompt = jnp.where(prompt_mask[:, None, None, :], s_prompt, MASK_VALUE)
    s_gen = jnp.where(sample_mask[:, :, None, :], s_gen, MASK_VALUE)
    probs = jax.nn.softmax(jnp.concatenate([s_prompt, s_gen], axis=-1), axis=-1).astype(cd)
    p_prompt, p_gen = probs[..., :s_prompt.shape[-1]], probs[..., s_prompt.shape[-1]:]
    ctx = (jnp.einsum("bghp,bpr->bghr", p_prompt, c_prompt.astype(cd))
           + jnp.einsum("bghs,bgsr->bghr", p_gen, c_gen.astype(cd)))      # attention in latent space
    out = jnp.einsum("bghr,rhv->bghv", ctx, w_uv)                       # value up-projection absorbed
    return jnp.einsum("bghv,hvd->bgd", out, self.o_proj.astype(cd)), (c_gen, k_gen)

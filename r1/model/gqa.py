"""Grouped-query attention (Qwen2, Llama-3): the dense students the R1 paper distils into.

num_key_value_heads K/V heads are each shared by a group of num_attention_heads / K query heads
(query head h reads K/V head h // group, as transformers' `repeat_kv` lays them out). RoPE rotates
the whole head in the half-split layout of transformers' `rotate_half`. The decode cache holds the
RoPE'd keys and the values of the K/V heads, 2 x K x head_dim numbers per token per layer; the
interface (`__call__(..., return_kv)`, `decode`, `expand_kv`) is MLA's, so the sampler and the
decoder layer do not care which attention they hold.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1.model import layers
from r1.model.config import ModelConfig
from r1.model.mla import MASK_VALUE

Array = jax.Array


class GQA(nn.Module):
  """x: [B, T, D], cos/sin [B, T, head_dim/2], mask bool[B, T, T] -> [B, T, D]."""
  config: ModelConfig

  def setup(self):
    c = self.config
    pd = jnp.dtype(c.param_dtype)
    h, k, d = c.num_attention_heads, c.kv_heads, c.gqa_head_dim
    self.q_proj = layers.param_with_axes(self, "q_proj", (c.hidden_size, h, d), ("embed", "heads", "qk_head"), dtype=pd)
    # K/V heads get their own logical name: there are few of them (2 in Qwen2.5-1.5B), often fewer
    # than a tensor-parallel axis, so the rules may replicate them where query heads are split.
    self.k_proj = layers.param_with_axes(self, "k_proj", (c.hidden_size, k, d), ("embed", "kv_heads", "qk_head"),
                                         dtype=pd)
    self.v_proj = layers.param_with_axes(self, "v_proj", (c.hidden_size, k, d), ("embed", "kv_heads", "v_head"),
                                         dtype=pd)
    self.o_proj = layers.param_with_axes(self, "o_proj", (h, d, c.hidden_size), ("heads", "v_head", "embed"), dtype=pd)
    if c.attention_bias:
      zeros = nn.initializers.zeros
      self.q_bias = layers.param_with_axes(self, "q_bias", (h, d), ("heads", "qk_head"), zeros, pd)
      self.k_bias = layers.param_with_axes(self, "k_bias", (k, d), ("kv_heads", "qk_head"), zeros, pd)
      self.v_bias = layers.param_with_axes(self, "v_bias", (k, d), ("kv_heads", "v_head"), zeros, pd)

  def _project(self, x: Array, cos: Array, sin: Array) -> tuple[Array, Array, Array]:
    """x [..., T, D] -> RoPE'd q [..., T, K, group, hd], RoPE'd k [..., T, K, hd], v [..., T, K, hd]."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    x = x.astype(cd)
    q = jnp.einsum("...d,dhk->...hk", x, self.q_proj.astype(cd))
    k = jnp.einsum("...d,dhk->...hk", x, self.k_proj.astype(cd))
    v = jnp.einsum("...d,dhk->...hk", x, self.v_proj.astype(cd))
    if c.attention_bias:
      q, k, v = q + self.q_bias.astype(cd), k + self.k_bias.astype(cd), v + self.v_bias.astype(cd)
    q = layers.apply_rope(q, cos, sin, interleave=False)
    k = layers.apply_rope(k, cos, sin, interleave=False)
    q = q.reshape(*q.shape[:-2], c.kv_heads, c.num_attention_heads // c.kv_heads, q.shape[-1])
    return q, k, v

  def _output(self, out: Array) -> Array:
    """Attention output [..., K, group, hd] -> [..., D]."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    out = out.reshape(*out.shape[:-3], c.num_attention_heads, out.shape[-1])
    return jnp.einsum("...hk,hkd->...d", out, self.o_proj.astype(cd))

  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array, return_kv: bool = False):
    """Causal attention over the sequence; with return_kv also the cache entries (k, v), each
    [B, T, K, hd]."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    q, k, v = self._project(x, cos, sin)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * layers.softmax_scale(c)
    scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(cd)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    out = self._output(out)
    return (out, (k, v)) if return_kv else out

  def expand_kv(self, k: Array, v: Array) -> tuple[Array, Array]:
    """The cache is already per K/V head: nothing to expand (the sampler's absorb flag is MLA's)."""
    return k, v

  def decode(self, x: Array, cos: Array, sin: Array, prompt_kv, prompt_mask: Array, sample_kv,
             sample_mask: Array, write_index: Array):
    """One decode step for G samples of each of B prompts (the prompt's cache shared by its samples).

    Args:
      x: [B, G, D] the new tokens' hidden states; cos, sin: [B, G, hd/2] at their positions.
      prompt_kv: (k [B, P, K, hd], v [B, P, K, hd]) with prompt_mask bool[B, P].
      sample_kv: (k [B, G, S, K, hd], v [B, G, S, K, hd]); the new entry is written at write_index.
      sample_mask: bool[B, G, S] the valid generated positions, the new one included.
      write_index: int32 scalar.
    Returns:
      out [B, G, D] and the updated sample_kv.
    """
    c = self.config
    cd = jnp.dtype(c.dtype)
    q, k_new, v_new = self._project(x, cos, sin)                      # q [B, G, K, g, hd]
    k_gen, v_gen = layers.write_sample_cache(sample_kv, (k_new, v_new), write_index)
    scale = layers.softmax_scale(c)
    s_prompt = jnp.einsum("bGkgd,bpkd->bGkgp", q, prompt_kv[0].astype(cd)).astype(jnp.float32) * scale
    s_gen = jnp.einsum("bGkgd,bGskd->bGkgs", q, k_gen.astype(cd)).astype(jnp.float32) * scale
    s_prompt = jnp.where(prompt_mask[:, None, None, None, :], s_prompt, MASK_VALUE)
    s_gen = jnp.where(sample_mask[:, :, None, None, :], s_gen, MASK_VALUE)
    # One softmax over prompt and generated keys together.
    probs = jax.nn.softmax(jnp.concatenate([s_prompt, s_gen], axis=-1), axis=-1).astype(cd)
    p_prompt, p_gen = probs[..., :s_prompt.shape[-1]], probs[..., s_prompt.shape[-1]:]
    out = (jnp.einsum("bGkgp,bpkd->bGkgd", p_prompt, prompt_kv[1].astype(cd))
           + jnp.einsum("bGkgs,bGskd->bGkgd", p_gen, v_gen.astype(cd)))
    return self._output(out), (k_gen, v_gen)

  # The sampler's non-absorbed baseline is MLA's; for GQA both paths are this one.
  decode_expanded = decode

"""Small building blocks: parameters with logical axes, RMSNorm, rotary embeddings (YaRN), SwiGLU.

Logical axis names used by the model (mapped to mesh axes in r1/sharding.py):
  params:      vocab, embed, q_lora, kv_lora, heads, kv_heads, qk_head, v_head, mlp, exp
  activations: batch, length, act_embed, act_heads, act_mlp, act_exp
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1.model.config import ModelConfig, RopeScaling

Array = jax.Array


def param_with_axes(module: nn.Module, name: str, shape, axes: tuple[str, ...], init=None,
                    dtype=jnp.float32) -> Array:
  """Declares a parameter annotated with logical axis names (one per dimension)."""
  if len(axes) != len(shape):
    raise ValueError(f"param {name}: {len(axes)} axis names {axes} for shape {shape}")
  init = init or nn.initializers.normal(stddev=0.02)
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), dtype)


def constrain(x: Array, axes: tuple[str | None, ...]) -> Array:
  """Sharding hint for an activation by logical names; a no-op outside a mesh."""
  return nn.with_logical_constraint(x, axes)


def write_sample_cache(sample_kv: tuple[Array, Array], new: tuple[Array, Array], write_index: Array
                       ) -> tuple[Array, Array]:
  """Writes one decode step's cache entries into the per-sample caches.

  sample_kv: two arrays [B, G, S, ...]; new: the step's entries [B, G, ...]; write_index: int32
  scalar position in S. Used by every attention's decode (MLA latent or expanded, GQA K/V).
  """
  return tuple(jax.lax.dynamic_update_slice_in_dim(cache, entry[:, :, None].astype(cache.dtype), write_index, axis=2)
               for cache, entry in zip(sample_kv, new))


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in float32 like DeepSeek's reference. x: [..., D] -> [..., D]."""
  eps: float = 1e-6
  axis_name: str = "embed"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = param_with_axes(self, "scale", (x.shape[-1],), (self.axis_name,), nn.initializers.ones,
                            jnp.dtype(self.param_dtype))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return scale.astype(x.dtype) * x32.astype(x.dtype)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
  """YaRN attention-temperature correction 0.1·m·ln(s) + 1 (1 for s ≤ 1)."""
  if scale <= 1:
    return 1.0
  return 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
  """Inverse rotary frequencies f32[dim // 2], with YaRN's or Llama-3's per-frequency rescaling."""
  exponents = np.arange(0, dim, 2, dtype=np.float32) / dim
  inv_freq = 1.0 / (theta ** exponents)
  if scaling is None:
    return inv_freq.astype(np.float32)
  if scaling.rope_type == "llama3":
    return _llama3_inv_freq(inv_freq.astype(np.float32), scaling)

  def correction_dim(num_rotations):
    return dim * math.log(scaling.original_max_position_embeddings / (num_rotations * 2 * math.pi)) / (
        2 * math.log(theta))

  # Frequencies that rotate more than beta_fast times over the original context are kept
  # (extrapolated); fewer than beta_slow are interpolated by `factor`; a linear ramp in between.
  low = max(math.floor(correction_dim(scaling.beta_fast)), 0)
  high = min(math.ceil(correction_dim(scaling.beta_slow)), dim - 1)
  if low == high:
    high += 0.001
  ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
  keep = 1.0 - ramp
  interpolated = inv_freq / scaling.factor
  return (interpolated * (1 - keep) + inv_freq * keep).astype(np.float32)


def _llama3_inv_freq(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
  """Llama-3.1's scaling: wavelengths longer than original_context / low_freq_factor are slowed by
  `factor`, shorter than original_context / high_freq_factor kept, and a smooth blend in between."""
  old_context = scaling.original_max_position_embeddings
  low_wavelen = old_context / scaling.low_freq_factor
  high_wavelen = old_context / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = (old_context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_attention_factor(scaling: RopeScaling | None) -> float:
  """The YaRN factor multiplied into cos/sin (1.0 for DeepSeek, where mscale == mscale_all_dim;
  1.0 without YaRN)."""
  if scaling is None or scaling.rope_type != "yarn":
    return 1.0
  if scaling.mscale and scaling.mscale_all_dim:
    return yarn_mscale(scaling.factor, scaling.mscale) / yarn_mscale(scaling.factor, scaling.mscale_all_dim)
  return yarn_mscale(scaling.factor)


def softmax_scale(config: ModelConfig) -> float:
  """1/sqrt(qk_head_dim), times mscale(factor, mscale_all_dim)² under DeepSeek's YaRN (V2 appendix).

  GQA models (Qwen2, Llama) put YaRN's correction into cos/sin only, as transformers does.
  """
  scale = config.qk_head_dim ** -0.5
  if config.is_gqa:
    return scale
  if config.rope_scaling is not None and config.rope_scaling.mscale_all_dim:
    m = yarn_mscale(config.rope_scaling.factor, config.rope_scaling.mscale_all_dim)
    scale = scale * m * m
  return scale


def rope_cos_sin(positions: Array, config: ModelConfig) -> tuple[Array, Array]:
  """cos, sin: f32[B, T, R/2] for positions int[B, T] and R = config.rope_dim (MLA's
  qk_rope_head_dim, GQA's head_dim)."""
  inv_freq = rope_inv_freq(config.rope_dim, config.rope_theta, config.rope_scaling)
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  factor = rope_attention_factor(config.rope_scaling)
  return jnp.cos(angles) * factor, jnp.sin(angles) * factor


def apply_rope(x: Array, cos: Array, sin: Array, interleave: bool) -> Array:
  """Rotates x: [B, T, (H,) R] by cos/sin [B, T, R/2].

  interleave=True rotates pairs (x[2i], x[2i+1]) (DeepSeek's checkpoint layout); False rotates
  (x[i], x[i + R/2]). The output is always in the half-split layout [rotated evens | rotated odds]:
  queries and keys go through the same function, so their dot products are unaffected.
  """
  if x.ndim == 4:
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  if interleave:
    x1, x2 = x[..., 0::2], x[..., 1::2]
  else:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
  cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class SwiGLU(nn.Module):
  """down(silu(gate(x)) * up(x)); x: [..., D] -> [..., D]. The dense FFN and the shared experts."""
  intermediate_size: int
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, f = x.shape[-1], self.intermediate_size
    pd, cd = jnp.dtype(self.param_dtype), jnp.dtype(self.dtype)
    gate = param_with_axes(self, "gate_proj", (d, f), ("embed", "mlp"), dtype=pd)
    up = param_with_axes(self, "up_proj", (d, f), ("embed", "mlp"), dtype=pd)
    down = param_with_axes(self, "down_proj", (f, d), ("mlp", "embed"), dtype=pd)
    x = x.astype(cd)
    h = nn.silu(x @ gate.astype(cd)) * (x @ up.astype(cd))
    h = constrain(h, ("batch", "length", "act_mlp") if h.ndim == 3 else (None, "act_mlp"))
    return h @ down.astype(cd)

"""A policy: a model config plus its variables (params and MoE balancing bias) as plain pytrees."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1.model import ModelConfig, Transformer


@functools.lru_cache(maxsize=32)
def _logits_fn(config: ModelConfig):
  model = Transformer(config)

  @jax.jit
  def logits(variables, tokens, positions, segment_ids):
    return model.apply(variables, tokens, positions, segment_ids).logits

  return logits


@dataclasses.dataclass
class Policy:
  """config: ModelConfig; variables: {"params": ..., "moe_bias": ...} (jax arrays, any sharding)."""
  config: ModelConfig
  variables: dict

  @property
  def params(self) -> dict:
    return self.variables["params"]

  def logits(self, tokens, positions=None, segment_ids=None) -> jax.Array:
    """tokens int32[B, T] -> logits float32[B, T, V] (jitted; positions default to 0..T-1)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be int32[B, T], got shape {tokens.shape}")
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones(tokens.shape, jnp.int32)
    return _logits_fn(self.config)(self.variables, tokens, positions, segment_ids)

"""A policy: a model config plus its variables (params and MoE balancing bias) as plain pytrees."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1.model import ModelConfig, Transformer


@functools.lru_cache(maxsize=32)
def _logits_fn(config: ModelConfig):
  model = Transformer(config)

  @jax.jit
  def logits(variables, tokens, positions, segment_ids):
    return model.apply(variables, tokens, positions, segment_ids).logits

  return logits


def _bits_as_uint32(x: jax.Array) -> jax.Array:
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksums(leaves):
  """uint32[len(leaves), 3]: per leaf, the sum of its bits and two position-weighted sums (mod 2**32:
  integer sums, so the value does not depend on the sharding or the reduction order)."""
  rows = []
  for x in leaves:
    bits = _bits_as_uint32(jnp.atleast_2d(x))
    odd = lambda axis, b=bits: jax.lax.broadcasted_iota(jnp.uint32, b.shape, axis) * 2 + 1  # pylint: disable=unnecessary-lambda-assignment
    rows.append(jnp.stack([bits.sum(), (bits * odd(bits.ndim - 1)).sum(), (bits * odd(0)).sum()]))
  return jnp.stack(rows)


@dataclasses.dataclass
class Policy:
  """config: ModelConfig; variables: {"params": ..., "moe_bias": ...} (jax arrays, any sharding)."""
  config: ModelConfig
  variables: dict

  @property
  def params(self) -> dict:
    return self.variables["params"]

  def fingerprint(self) -> list[int]:
    """Checksums of every variable's bits (3 per leaf, in tree order): equal lists mean bitwise-equal
    variables to overwhelming probability (a different value, dtype or shape changes them), so an
    evaluation of one policy can stand for another's. One pass over the weights, on their devices."""
    leaves = jax.tree.leaves(self.variables)
    sums = _checksums(leaves)
    return [int(v) for v in np.asarray(sums.addressable_data(0)).reshape(-1)] + [len(leaves)]

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

  def generate(self, prompts, lengths=None, *, num_samples: int = 1, max_new_tokens: int = 64,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, stop_tokens=None, seed: int = 0,
               mesh=None, rules=None):
    """G samples per prompt from the latent-cache sampler; see r1.sampling.generate.

    `rules`: the logical-axis rules the sampler runs under (default sharding.TRAIN_RULES; with
    sharding.SAMPLE_RULES, reshard the variables to them first with sharding.reshard).

    Returns SampleOutput: tokens int32[B*G, N], logprobs f32[B*G, N], lengths int32[B*G],
    mask bool[B*G, N], stopped bool[B*G]; rows grouped by prompt.
    """
    from r1 import sampling  # pylint: disable=g-import-not-at-top
    return sampling.generate(self.config, self.variables, prompts, lengths, num_samples=num_samples,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                             stop_tokens=stop_tokens, seed=seed, mesh=mesh,
                             **({} if rules is None else {"rules": rules}))

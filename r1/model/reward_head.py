"""A reward model's head: the r1 Transformer read out to one scalar per sequence (R1 §2.3.4).

`ValueHead` (kernel [D, 1], bias [1]) reads the final hidden state of each sequence's last real
token; `RewardTransformer` is the decoder with it, whose variables are a Policy's plus
params["value_head"]. Loading, scoring batches and training live in r1/reward_model.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1.model import layers
from r1.model.config import ModelConfig
from r1.model.transformer import Transformer


class ValueHead(nn.Module):
  """hidden [B, D] -> rewards f32[B]: h · kernel + bias, in float32."""

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    d = hidden.shape[-1]
    # std 1/sqrt(D): the final norm makes |h| ~ sqrt(D), so initial rewards are O(1).
    kernel = layers.param_with_axes(self, "kernel", (d, 1), ("embed", None),
                                    nn.initializers.normal(stddev=d ** -0.5), jnp.float32)
    bias = layers.param_with_axes(self, "bias", (1,), (None,), nn.initializers.zeros, jnp.float32)
    return (hidden.astype(jnp.float32) @ kernel + bias)[:, 0]


def last_token_index(segment_ids: jax.Array) -> jax.Array:
  """segment_ids int[B, T] -> int32[B]: the last position with a non-zero segment (0 if none)."""
  real = segment_ids != 0
  t = segment_ids.shape[1]
  last = t - 1 - jnp.argmax(real[:, ::-1], axis=1)
  return jnp.where(real.any(axis=1), last, 0).astype(jnp.int32)


class RewardTransformer(Transformer):
  """The Transformer with a value head; variables are a Policy's plus params["value_head"]."""

  def setup(self):
    super().setup()
    self.value_head = ValueHead()

  def reward(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """tokens, positions, segment_ids int32[B, T] -> raw rewards f32[B] at each row's last real token."""
    hidden = super().__call__(tokens, positions, segment_ids, return_logits=False).hidden
    last = last_token_index(segment_ids)
    return self.value_head(jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0])


def reward_scores(config: ModelConfig, variables: dict, tokens: jax.Array, positions: jax.Array,
                  segment_ids: jax.Array) -> jax.Array:
  """Raw (unnormalised) rewards f32[B] of sequences int32[B, T]; pure, for use inside jit/grad.

  Padding (segment 0) anywhere in a row is ignored; the score is read at the last real token.
  """
  return RewardTransformer(config).apply(variables, tokens, positions, segment_ids,
                                         method=RewardTransformer.reward)

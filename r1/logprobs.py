"""Token log-probabilities under a policy: the LM head over T in chunks, in one place.

With a real vocabulary the [B, T, V] float32 logits are the largest tensor of an update (SmolLM2's
49,152 tokens: 64 x 256 x 49,152 x 4 B = 3.2 GB a copy). `over_time_chunks` runs any per-position
head function a chunk of T at a time, rematerialised in the backward pass, so training stores only
the hidden states: GRPO and SFT use it through `head_logprobs`, distillation with two heads.

The shift convention: position t scores the *target* token t + 1 (`next_token_targets`).
"""

import jax
import jax.numpy as jnp

from r1.model import ModelConfig, Transformer

Array = jax.Array


def logprobs_from_logits(logits: Array, targets: Array, temperature: float = 1.0) -> tuple[Array, Array]:
  """log_softmax(logits / temperature) at targets, and the entropy of that distribution.

  logits f32[..., V], targets int[...] -> (logprobs f32[...], entropy f32[...] (no gradient)).
  The temperature is the sampler's (r1.sampling draws from softmax(logits / T)), so the ratio, the
  KL and the entropy of a GRPO update are those of the distribution the rollouts came from.
  """
  logits = logits.astype(jnp.float32)
  if temperature != 1.0:   # Static: at T = 1 the program is the untempered one, bit for bit.
    logits = logits / temperature
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  sg = jax.lax.stop_gradient(logits)
  probs = jax.nn.softmax(sg, axis=-1)
  entropy = jax.lax.stop_gradient(logz) - jnp.sum(probs * sg, axis=-1)
  return picked - logz, entropy


def over_time_chunks(fn, arrays: tuple, chunk_size: int | None) -> tuple:
  """fn over T in chunks of `chunk_size` (None, or >= T: at once): never more than one chunk's worth
  of fn's intermediates alive, each chunk rematerialised in the backward pass (jax.checkpoint).

  arrays: [B, T, ...] inputs; fn(*chunks) -> a tuple of [B, chunk] outputs. Returns fn's outputs
  for the whole [B, T] (T padded to a multiple of the chunk inside, and cut back).
  """
  b, t = arrays[0].shape[:2]
  if not chunk_size or chunk_size >= t:
    return fn(*arrays)
  n = -(-t // chunk_size)
  pad = n * chunk_size - t
  to_chunks = lambda x: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)).reshape(  # pylint: disable=unnecessary-lambda-assignment
      b, n, chunk_size, *x.shape[2:]).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(lambda a: fn(*a)), tuple(to_chunks(x) for x in arrays))
  return tuple(x.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t] for x in out)


def head_logprobs(config: ModelConfig, params: dict, hidden: Array, targets: Array, chunk_size: int | None = None,
                  temperature: float = 1.0):
  """LM head + log_softmax(logits / temperature) over T in chunks (`over_time_chunks`): never more
  than f32[B, chunk, V] logits alive. hidden [B, T, D] after the final norm, targets int32[B, T] ->
  (logprobs f32[B, T], entropy f32[B, T])."""
  model = Transformer(config)

  def chunk(h, y):
    return logprobs_from_logits(model.apply({"params": params}, h, method=lambda m, x: m.head(x)), y, temperature)

  return over_time_chunks(chunk, (hidden, targets), chunk_size)


def forward(config: ModelConfig, params, moe_bias, tokens, positions, segment_ids, targets, *,
            chunk_size: int | None = None, return_mtp: bool = False, temperature: float = 1.0):
  """Policy forward -> (logprobs f32[B, T] of targets under softmax(logits / temperature), entropy
  f32[B, T], ModelOutput without logits)."""
  variables = {"params": params, "moe_bias": moe_bias} if moe_bias else {"params": params}
  out = Transformer(config).apply(variables, tokens, positions, segment_ids, return_logits=False,
                                  return_mtp=return_mtp)
  logprobs, entropy = head_logprobs(config, params, out.hidden, targets, chunk_size, temperature)
  return logprobs, entropy, out


def next_token_targets(tokens: Array) -> Array:
  """targets[:, t] = tokens[:, t + 1]; the last position gets 0 (its mask must be 0)."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))

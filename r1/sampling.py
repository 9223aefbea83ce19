"""Grouped rollouts: G completions per prompt from one jitted prefill and one jitted decode loop.

  prefill  (once per prompt)  full forward over the left-padded prompts -> the prompt's latent KV
                              cache [B, P, L + R] per layer and the first next-token logits.
  decode   (lax.while_loop)   G samples per prompt step together; each step runs absorbed MLA over
                              the shared prompt cache plus the sample's own generated cache.

Prefix sharing is structural: the prompt cache is never copied G times; decode attends to it with
the G samples as an extra batch axis. For DeepSeek's MLA the cache holds only the KV latent and the
shared RoPE key, (kv_lora_rank + qk_rope_head_dim) values per token per layer; for the dense GQA
students (Qwen2, Llama) the keys and values of the K/V heads (config.cache_entry_shapes).

Log-probabilities. `logprobs[i, t]` is log softmax(logits / temperature)[token], the tempered
distribution *before* top-k / top-p truncation: what r1.grpo's step computes with the training
forward at the same temperature (its pi_old), which logs the difference between the two as the
train/inference mismatch. With temperature 0 (greedy) the untempered log softmax(logits) is reported.

Shapes are static: prompts are left-padded to a length bucket, so a run compiles one prefill and
one decode program per (batch, bucket, G, max_new_tokens); `compile_count()` says how many.
"""

import contextlib
import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from r1 import sharding
from r1.model import ModelConfig, Transformer

Array = jax.Array

PROMPT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_COMPILES = {"prefill": 0, "decode": 0}


def compile_count() -> dict[str, int]:
  """How many prefill / decode programs have been traced (compiled) in this process."""
  return dict(_COMPILES)


@flax.struct.dataclass
class SampleOutput:
  """Rows are grouped by prompt: row b * G + g is sample g of prompt b.

  tokens int32[N, max_new] (0 after a row stops), logprobs f32[N, max_new] (0 where masked),
  lengths int32[N] (the stop token included), mask bool[N, max_new], stopped bool[N] (False:
  truncated at max_new_tokens), decode_steps int32 scalar (loop iterations run: fewer than
  max_new_tokens when every row stopped early).
  """
  tokens: Array
  logprobs: Array
  lengths: Array
  mask: Array
  stopped: Array
  decode_steps: Array


@flax.struct.dataclass
class DecodeState:
  step: Array                # int32 scalar: tokens generated so far
  tokens: Array              # int32[B, G, N]
  logprobs: Array            # f32[B, G, N]
  done: Array                # bool[B, G]
  lengths: Array             # int32[B, G]
  logits: Array              # f32[B, G, V] for the next token
  sample_kv: tuple           # per layer (c_kv [B, G, N, L], k_pe [B, G, N, R]); GQA: (k, v) [B, G, N, K, hd]
  rng: Array


def cache_bytes_per_token(config: ModelConfig, absorb: bool = True) -> int:
  """Decode cache size per token, summed over layers: (kv_lora_rank + qk_rope_head_dim) x dtype
  bytes per layer for MLA's latent cache, H x (qk_head_dim + v_head_dim) expanded, 2 x K x head_dim
  for GQA (config.cache_entry_shapes)."""
  width = sum(int(np.prod(s)) for s in config.cache_entry_shapes(absorb))
  return width * config.num_hidden_layers * jnp.dtype(config.dtype).itemsize


def bucket_length(length: int, buckets=PROMPT_BUCKETS) -> int:
  """The smallest bucket >= length."""
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f"prompt length {length} exceeds the largest bucket {buckets[-1]}")


def pad_prompts(prompts, lengths=None, buckets=PROMPT_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads prompts to a bucket. Returns tokens int32[B, P] and mask bool[B, P].

  prompts: a list of token-id lists (ragged), or int32[B, T] with `lengths` int[B]: row b's real
  tokens are its first lengths[b] entries (right padding).
  """
  if lengths is not None:
    arr = np.asarray(prompts)
    rows = [list(arr[b, :int(n)]) for b, n in enumerate(np.asarray(lengths))]
  else:
    rows = [list(p) for p in prompts]
  if any(len(r) == 0 for r in rows):
    raise ValueError("every prompt needs at least one token")
  p = bucket_length(max(len(r) for r in rows), buckets)
  tokens = np.zeros((len(rows), p), np.int32)
  mask = np.zeros((len(rows), p), bool)
  for b, r in enumerate(rows):
    tokens[b, p - len(r):] = r
    mask[b, p - len(r):] = True
  return tokens, mask


def _largest_threshold(values: Array, satisfied, iterations: int = 48) -> Array:
  """Per row, the largest t in [0, max(values)] with satisfied(values >= t), by bisection.

  values: f32[..., V] >= 0; satisfied: bool[..., V] mask -> bool[...] (monotone: true at t = 0).
  Replaces a vocabulary sort (~40x slower on CPU for a 32k vocabulary) for top-k and top-p.
  """
  lo = jnp.zeros(values.shape[:-1], values.dtype)
  hi = values.max(axis=-1) * (1 + 1e-6) + 1e-30

  def step(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    ok = satisfied(values >= mid[..., None])
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  return jax.lax.fori_loop(0, iterations, step, (lo, hi))[0]


def _sample_inverse_cdf(rng: Array, probs: Array, block: int = 256) -> Array:
  """One draw per row from probs f32[..., V] (unnormalised is fine) with one uniform per row.

  Two-level inverse CDF (block sums, then within the block) keeps float32 cumulative sums short
  and exact to ~1e-7; a zero-probability token is never returned. Gumbel-max would need V random
  numbers per row per step, which on CPU costs more than a small model's forward.
  """
  v = probs.shape[-1]
  nb = -(-v // block)
  p = jnp.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(0, nb * block - v)]).reshape(*probs.shape[:-1], nb, block)
  block_mass = p.sum(-1)
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  u = jax.random.uniform(rng, probs.shape[:-1]) * block_cdf[..., -1]
  b = jnp.minimum(jnp.sum(block_cdf <= u[..., None], axis=-1), nb - 1)
  # Rounding can push u past the last non-empty block: take the last block with mass instead.
  last_nonempty = nb - 1 - jnp.argmax(jnp.flip(block_mass > 0, axis=-1), axis=-1)
  b = jnp.minimum(b, last_nonempty)
  u = u - (jnp.take_along_axis(block_cdf, b[..., None], -1) - jnp.take_along_axis(block_mass, b[..., None], -1))[..., 0]
  within = jnp.take_along_axis(p, b[..., None, None], axis=-2)[..., 0, :]
  i = jnp.sum(jnp.cumsum(within, axis=-1) <= u[..., None], axis=-1)
  last_positive = block - 1 - jnp.argmax(jnp.flip(within > 0, axis=-1), axis=-1)
  return (b * block + jnp.minimum(i, last_positive)).astype(jnp.int32)


def first_argmax(x: Array) -> Array:
  """jnp.argmax over the last axis (first maximum), as a max and a min: XLA:CPU lowers argmax to a
  variadic reduction that took 5 ms for 64 x 32k, against 0.2 ms for this."""
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  first = jnp.min(jnp.where(x >= x.max(axis=-1, keepdims=True), iota, x.shape[-1]), axis=-1)
  return jnp.minimum(first, x.shape[-1] - 1)  # a NaN row has no maximum: stay in the vocabulary


def sample_token(logits: Array, rng: Array, temperature: Array, top_k: Array, top_p: Array) -> tuple[Array, Array]:
  """Draws one token per row.

  Args:
    logits: f32[..., V]. temperature: scalar (0 = greedy). top_k: int scalar (0 = off).
    top_p: scalar in (0, 1] (1 = off); the nucleus is the smallest set of most likely tokens whose
      probability reaches top_p (after top-k), renormalised. Ties at a boundary are kept.
  Returns:
    token int32[...] and its log-probability under log_softmax(logits / temperature) (untruncated).
  """
  logits = logits.astype(jnp.float32)
  greedy = temperature <= 0
  scaled = logits / jnp.where(greedy, 1.0, temperature)
  # One exp pass over the vocabulary: unnormalised weights for the draw, and the chosen token's
  # logprob from the log-partition (a full log_softmax would cost two more passes per step).
  top = jax.lax.stop_gradient(scaled.max(axis=-1, keepdims=True))
  weights = jnp.exp(scaled - top)
  log_z = top[..., 0] + jnp.log(weights.sum(axis=-1))

  def truncated(weights):
    probs = weights / weights.sum(-1, keepdims=True)
    kth = _largest_threshold(probs, lambda keep: keep.sum(-1) >= top_k)
    probs = jnp.where((top_k > 0) & (probs < kth[..., None]), 0.0, probs)
    probs = probs / probs.sum(-1, keepdims=True)
    nucleus = _largest_threshold(probs, lambda keep: jnp.where(keep, probs, 0.0).sum(-1) >= top_p)
    return jnp.where(probs >= nucleus[..., None], probs, 0.0)

  # Filtering costs a few passes over the vocabulary: skip it when no filter is on (the GRPO
  # rollout setting, top_p = 1 and top_k = 0).
  filtering = (top_k > 0) | (top_p < 1.0)
  sampled = _sample_inverse_cdf(rng, jax.lax.cond(filtering, truncated, lambda w: w, weights))
  token = jnp.where(greedy, first_argmax(logits), sampled).astype(jnp.int32)
  return token, jnp.take_along_axis(scaled, token[..., None], axis=-1)[..., 0] - log_z


@dataclasses.dataclass(frozen=True)
class _Program:
  """The static part of a sampling call: one compiled prefill + decode pair per instance."""
  config: ModelConfig
  num_samples: int
  max_new_tokens: int
  stop_tokens: tuple[int, ...]
  absorb: bool = True


@functools.lru_cache(maxsize=64)
def _prefill_fn(config: ModelConfig):
  model = Transformer(config)

  @jax.jit
  def prefill(variables, prompt_tokens, prompt_mask):
    _COMPILES["prefill"] += 1  # runs only while tracing
    positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)
    out = model.apply(variables, prompt_tokens, positions, prompt_mask.astype(jnp.int32), return_logits=False,
                      return_kv=True)
    # Left padding puts every prompt's last token at the last column.
    last_logits = model.apply(variables, out.hidden[:, -1], method=lambda m, h: m.head(h))
    return out.latent_kv, last_logits

  return prefill


@functools.lru_cache(maxsize=64)
def _expand_fn(config: ModelConfig):
  model = Transformer(config)
  return jax.jit(lambda variables, kv: model.apply(variables, kv, method=Transformer.expand_prompt_cache))


@functools.lru_cache(maxsize=64)
def _decode_fn(program: _Program):
  config, n = program.config, program.max_new_tokens
  model = Transformer(config)
  stop = jnp.asarray(program.stop_tokens or (-1,), jnp.int32)

  def body(variables, prompt_kv, prompt_mask, prompt_lengths, temperature, top_k, top_p, state: DecodeState):
    rng, step_rng = jax.random.split(state.rng)
    token, logprob = sample_token(state.logits, step_rng, temperature, top_k, top_p)
    live = ~state.done
    token = jnp.where(live, token, 0)
    tokens = state.tokens.at[:, :, state.step].set(token)
    logprobs = state.logprobs.at[:, :, state.step].set(jnp.where(live, logprob, 0.0))
    lengths = state.lengths + live.astype(jnp.int32)
    done = state.done | (live & jnp.isin(token, stop))
    sample_mask = jnp.broadcast_to(jnp.arange(n) <= state.step, (*done.shape, n))
    positions = (prompt_lengths[:, None] + state.step).astype(jnp.int32) * jnp.ones_like(token)
    logits, sample_kv = model.apply(variables, token, positions, prompt_kv, prompt_mask, state.sample_kv,
                                    sample_mask, state.step, program.absorb, method=Transformer.decode)
    return DecodeState(step=state.step + 1, tokens=tokens, logprobs=logprobs, done=done, lengths=lengths,
                       logits=logits, sample_kv=sample_kv, rng=rng)

  @functools.partial(jax.jit, donate_argnums=(7,))
  def decode(variables, prompt_kv, prompt_mask, prompt_lengths, temperature, top_k, top_p, state):
    _COMPILES["decode"] += 1
    step = functools.partial(body, variables, prompt_kv, prompt_mask, prompt_lengths, temperature, top_k, top_p)
    # Stop when every sample has stopped; the last iteration's forward is for a token never drawn,
    # the price of a single-body loop.
    return jax.lax.while_loop(lambda s: (s.step < n) & ~jnp.all(s.done), step, state)

  return decode


def initial_state(config: ModelConfig, first_logits: Array, num_samples: int, max_new_tokens: int,
                  seed: int, absorb: bool = True) -> DecodeState:
  """Empty per-sample caches and outputs; each sample starts from its prompt's prefill logits."""
  b, v = first_logits.shape
  g, n = num_samples, max_new_tokens
  dt = jnp.dtype(config.dtype)
  widths = config.cache_entry_shapes(absorb)
  kv = tuple(tuple(jnp.zeros((b, g, n) + w, dt) for w in widths) for _ in range(config.num_hidden_layers))
  return DecodeState(step=jnp.zeros((), jnp.int32), tokens=jnp.zeros((b, g, n), jnp.int32),
                     logprobs=jnp.zeros((b, g, n), jnp.float32), done=jnp.zeros((b, g), bool),
                     lengths=jnp.zeros((b, g), jnp.int32),
                     logits=jnp.broadcast_to(first_logits[:, None], (b, g, v)), sample_kv=kv,
                     rng=jax.random.key(seed))


def generate(config: ModelConfig, variables, prompts, lengths=None, *, num_samples: int = 1,
             max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             stop_tokens=None, seed: int = 0, buckets=PROMPT_BUCKETS, mesh=None, absorb: bool = True,
             rules=sharding.TRAIN_RULES) -> SampleOutput:
  """Samples `num_samples` completions for each prompt; see the module docstring.

  Args:
    config, variables: the policy (variables may be sharded; prompts are placed like the batch).
    prompts: list of token-id lists, or int32[B, T] with `lengths` (real tokens first, then padding).
    num_samples: G. max_new_tokens: N. temperature: 0 is greedy. top_p, top_k: nucleus / top-k
      filters (1.0 / 0 turn them off). stop_tokens: ids that end a row (kept in the output).
    seed: PRNG seed; the same seed gives the same tokens.
    mesh: when the variables are sharded on a mesh, the prompts are split over its batch axes and
      the programs run under the model's logical-axis rules.
    rules: those rules; sharding.SAMPLE_RULES with variables resharded to them (sharding.reshard)
      keeps the weights unsharded over fsdp while decoding.
    absorb: True (default) decodes on the latent cache with absorbed MLA; False expands the cache
      into per-head keys and values (H * (qk_head + v_head) per token), a baseline for benchmarks.
  Returns:
    SampleOutput with rows [B * G] grouped by prompt.
  """
  tokens, mask = pad_prompts(prompts, lengths, buckets)
  context = contextlib.nullcontext() if mesh is None else sharding.mesh_context(mesh, rules)
  with context:
    if mesh is not None and jax.process_count() > 1:
      # Multi-process: `prompts` are this process's rows of the global batch, placed where its
      # devices hold them (at the widest process's bucket); the outputs are global arrays, rows
      # grouped by prompt, whose rows of this process's prompts sharding.host_local_rows reads.
      tokens, mask = sharding.place_host_prompts(tokens, mask, mesh, rules)
    else:
      place = jnp.asarray
      if mesh is not None:
        batch = sharding.logical_to_sharding(jax.sharding.PartitionSpec("batch", "length"), mesh, rules)
        place = lambda a: jax.device_put(a, batch)  # pylint: disable=unnecessary-lambda-assignment
      tokens, mask = place(tokens), place(mask)
    b = tokens.shape[0]
    prompt_lengths = mask.sum(axis=1).astype(jnp.int32)
    prompt_kv, first_logits = _prefill_fn(config)(variables, tokens, mask)
    if not absorb:
      prompt_kv = _expand_fn(config)(variables, prompt_kv)
    program = _Program(config, num_samples, max_new_tokens, tuple(int(t) for t in (stop_tokens or ())), absorb)
    state = initial_state(config, first_logits, num_samples, max_new_tokens, seed, absorb)
    state = _decode_fn(program)(variables, prompt_kv, mask, prompt_lengths,
                                jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), state)
  n_rows = b * num_samples
  lengths_out = state.lengths.reshape(n_rows)
  stopped = state.done.reshape(n_rows)
  return SampleOutput(tokens=state.tokens.reshape(n_rows, max_new_tokens),
                      logprobs=state.logprobs.reshape(n_rows, max_new_tokens), lengths=lengths_out,
                      mask=jnp.arange(max_new_tokens)[None] < lengths_out[:, None], stopped=stopped,
                      decode_steps=state.step)

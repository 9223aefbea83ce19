"""What the benchmarks share: the machine's measured limits, model FLOP counts, and the models they run.

`matmul_peak_flops` is the ceiling MFU is reported against (a big float32 matmul, measured in the
same run as the work it judges); `bandwidth_bytes_per_s` is the floor a decode step cannot beat.
FLOP counts follow the usual convention (PaLM appendix B): 2 FLOPs per multiply-add of a weight
that a token passes through, the input embedding excluded (a gather), the LM head included.
"""

import math
import os
import sys
import time

import jax
import jax.numpy as jnp

import r1
from r1.model import get_model_config, init_variables, param_count

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
import r1_zero_smollm2  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# The real pretrained model a `--model=smollm2` run loads: the converted HF directory that
# configs/r1_zero_smollm2.py trains (its docstring says how to make it).
SMOLLM2_DIR = r1_zero_smollm2.DEFAULT_HF_DIR
SMOLLM2_CONFIG = r1_zero_smollm2.get_config


def best_seconds(fn, repeat: int = 1) -> float:
  """Fastest of `repeat` timed calls of fn(), after one untimed call (compile / warm-up)."""
  fn()
  best = math.inf
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
  """Best sustained float32 FLOP/s of an n x n x n matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n ** 3 / best_seconds(lambda: f(a, b).block_until_ready(), repeat=repeats)


def bandwidth_bytes_per_s() -> float:
  """Host memory bandwidth seen by XLA: a jitted reduction over 512 MiB (read once)."""
  x = jnp.ones((128 * 2**20,), jnp.float32)
  f = jax.jit(jnp.sum)
  return x.nbytes / best_seconds(lambda: f(x).block_until_ready(), repeat=3)


def matmul_params(config) -> int:
  """Weights one token multiplies through: active params minus the input embedding, plus the
  LM head when it is tied to that embedding."""
  counts = param_count(config)
  n = counts["active"] - config.vocab_size * config.hidden_size
  return n + (config.vocab_size * config.hidden_size if config.tie_word_embeddings else 0)


def _attention_dims(config) -> int:
  """Per-head width of q.k plus that of the attention-weighted values (MLA or GQA)."""
  if config.is_gqa:
    return 2 * config.gqa_head_dim
  return config.qk_head_dim + config.v_head_dim   # DeepSeek MLA


def decode_flops_per_token(config, context: float) -> float:
  """Forward FLOPs of one decoded token that attends to `context` earlier tokens."""
  attention = 2 * context * config.num_attention_heads * _attention_dims(config) * config.num_hidden_layers
  return 2 * matmul_params(config) + attention


def update_flops(config, batch: int, length: int, ref_forward: bool) -> float:
  """Model FLOPs of one update on [batch, length] tokens: 6 x matmul params per token for the
  forward + backward, + 2 x that for a reference forward, + attention (6 B T^2 H (d_qk + d_v) per
  layer for the policy, 2 more for the reference; the causal mask is not discounted because the
  kernel computes every score)."""
  tokens = batch * length
  dense = (6 + (2 if ref_forward else 0)) * matmul_params(config) * tokens
  attn_fwd = 2 * batch * length ** 2 * config.num_attention_heads * _attention_dims(config)
  return dense + (3 + (1 if ref_forward else 0)) * attn_fwd * config.num_hidden_layers


def load_policy(model: str, hf_dir: str = SMOLLM2_DIR) -> r1.Policy:
  """`smollm2`: the pretrained SmolLM2-135M-Instruct from `hf_dir`; else the registry's config with
  random weights (seed 0)."""
  if model == "smollm2":
    if not os.path.exists(os.path.join(hf_dir, "config.json")):
      raise SystemExit(f"--model=smollm2: no converted checkpoint in {hf_dir}; make it as "
                       "configs/r1_zero_smollm2.py's docstring says, or pass --hf_dir")
    return r1.load_hf_checkpoint(hf_dir)
  config = get_model_config(model)
  return r1.Policy(config, init_variables(config, jax.random.key(0)))

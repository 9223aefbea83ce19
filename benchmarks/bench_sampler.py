"""Sampler throughput: r1's latent-cache sampler vs HF generate, a no-cache baseline and an
expanded (per-head K/V) cache, on the same random small DeepSeek-V3 weights, in one run.

    python benchmarks/bench_sampler.py                  # the issue's setting (2-core CPU: ~5 min)
    python benchmarks/bench_sampler.py --no_hf --long_context 0   # r1 only
    python benchmarks/bench_sampler.py --model=small_qwen2 --long_context 0   # a dense GQA student
    python benchmarks/bench_sampler.py --model=smollm2   # the pretrained SmolLM2-135M-Instruct

Setting: small_v3 (4 layers, hidden 512, 8 routed experts top-2, vocab 32k), 8 prompts of 64
tokens x G=8 samples x 128 new tokens, temperature 1, no early stop. The no-cache baseline
re-runs a full forward over the fixed [B*G, P+N] buffer each step; it is timed over
--naive_steps steps and reported per generated token at that constant cost.

--model=smollm2 loads the converted checkpoint (--hf_dir; configs/r1_zero_smollm2.py says how to
make it) on both sides, and its prompts are real: 8 of configs/r1_zero_smollm2.py's arithmetic
questions in SmolLM2's chat template with R1-Zero's instructions, cut to the shortest one's
length so that neither side pads. A dense model has one K/V cache layout, so the expanded-cache
rows are skipped.

MFU: r1's decode FLOPs (2 x matmul weights per token + attention over the cache at its mean
length) per second over this machine's float32 matmul peak, both measured in the run. The last
line is one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import r1  # noqa: E402
from r1 import sampling  # noqa: E402
from r1.model import Transformer, param_count  # noqa: E402
from benchmarks import _machine  # noqa: E402

_time = _machine.best_seconds


def smollm2_prompts(hf_dir: str, num_prompts: int) -> list[list[int]]:
  """configs/r1_zero_smollm2.py's first training questions, rendered and tokenized as the RL stage
  does, each cut to the shortest one's length (a real-text prefix of equal length: no padding)."""
  from r1.data import tasks, templates  # pylint: disable=g-import-not-at-top
  from r1.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
  data = _machine.SMOLLM2_CONFIG().data
  task = tasks.make_task(data.task, **dict(data.task_knobs))
  template = templates.get_template(data.template, hf_dir)
  tokenizer = load_tokenizer(hf_dir)
  ids = [tokenizer.encode(template.render_prompt(task.example(data.seed, i).prompt)) for i in range(num_prompts)]
  length = min(len(p) for p in ids)
  return [p[:length] for p in ids]


def r1_generate(policy, prompts, args, absorb=True, max_new=None):
  out = sampling.generate(policy.config, policy.variables, prompts, num_samples=args.num_samples,
                          max_new_tokens=max_new or args.max_new_tokens, temperature=1.0, seed=0, absorb=absorb)
  return out.tokens.block_until_ready()


def r1_prefill_seconds(policy, prompts):
  tokens, mask = sampling.pad_prompts(prompts)
  fn = sampling._prefill_fn(policy.config)  # pylint: disable=protected-access
  return _time(lambda: jax.block_until_ready(fn(policy.variables, jnp.asarray(tokens), jnp.asarray(mask))),
               repeat=2)


def naive_seconds_per_step(policy, prompts, args):
  """A full forward over the whole [B*G, P+N] buffer per generated token (no cache)."""
  rows = len(prompts) * args.num_samples
  total = len(prompts[0]) + args.max_new_tokens
  model = Transformer(policy.config)

  @jax.jit
  def step(variables, buf, index, rng):
    logits = model.apply(variables, buf).logits
    nxt = jax.random.categorical(rng, jax.lax.dynamic_index_in_dim(logits, index - 1, axis=1, keepdims=False))
    return jax.lax.dynamic_update_index_in_dim(buf, nxt.astype(jnp.int32), index, axis=1)

  buf = jnp.zeros((rows, total), jnp.int32).at[:, :len(prompts[0])].set(
      jnp.repeat(jnp.asarray(prompts, jnp.int32), args.num_samples, axis=0))
  step(policy.variables, buf, len(prompts[0]), jax.random.key(0)).block_until_ready()
  start = time.perf_counter()
  for i in range(args.naive_steps):
    buf = step(policy.variables, buf, len(prompts[0]) + i, jax.random.key(i))
  buf.block_until_ready()
  return (time.perf_counter() - start) / args.naive_steps


def hf_seconds(policy, prompts, args, hf_dir=None):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  with tempfile.TemporaryDirectory() as d:
    if hf_dir is None:
      r1.save_hf_checkpoint(policy, d)
    # DeepseekV3ForCausalLM, or Qwen2 / Llama for a dense student (--model=small_qwen2, smollm2).
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir or d, dtype=torch.float32).eval()
  ids = torch.tensor(prompts)

  def run():
    with torch.no_grad():
      model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                     temperature=1.0, num_return_sequences=args.num_samples, max_new_tokens=args.max_new_tokens,
                     min_new_tokens=args.max_new_tokens, pad_token_id=0, eos_token_id=None)
  return _time(run, repeat=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="small_v3", help="a registry name (random weights) or smollm2")
  parser.add_argument("--hf_dir", default=_machine.SMOLLM2_DIR, help="the converted SmolLM2 (--model=smollm2)")
  parser.add_argument("--num_prompts", type=int, default=8)
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--num_samples", type=int, default=8)
  parser.add_argument("--max_new_tokens", type=int, default=128)
  parser.add_argument("--naive_steps", type=int, default=3)
  parser.add_argument("--long_context", type=int, default=1000, help="prompt length of the absorbed-vs-expanded "
                      "comparison (0 skips it)")
  parser.add_argument("--no_hf", action="store_true")
  args = parser.parse_args()

  policy = _machine.load_policy(args.model, args.hf_dir)
  config = policy.config
  rng = np.random.default_rng(0)
  if args.model == "smollm2":
    prompts = smollm2_prompts(args.hf_dir, args.num_prompts)
    args.prompt_len = len(prompts[0])
  else:
    prompts = rng.integers(1, config.vocab_size, (args.num_prompts, args.prompt_len)).tolist()
  rows = args.num_prompts * args.num_samples
  new_tokens = rows * args.max_new_tokens
  has_latent = not config.is_gqa     # MLA's absorbed latent cache vs its expanded per-head K/V
  if not has_latent:
    args.long_context = 0

  peak = _machine.matmul_peak_flops()
  total_s = _time(lambda: r1_generate(policy, prompts, args))
  prefill_s = r1_prefill_seconds(policy, prompts)
  decode_s = total_s - prefill_s
  expanded_s = _time(lambda: r1_generate(policy, prompts, args, absorb=False)) - prefill_s if has_latent else None
  naive_step_s = naive_seconds_per_step(policy, prompts, args)
  hf_s = None if args.no_hf else hf_seconds(policy, prompts, args, args.hf_dir if args.model == "smollm2" else None)
  peak = max(peak, _machine.matmul_peak_flops())   # re-measured after the runs (turbo / thermal drift)
  mean_context = args.prompt_len + (args.max_new_tokens - 1) / 2
  decode_flops = new_tokens * _machine.decode_flops_per_token(config, mean_context)

  latent_bytes = sampling.cache_bytes_per_token(config)
  expanded_bytes = sampling.cache_bytes_per_token(config, absorb=False) if has_latent else None
  # Bandwidth floor of one decode step: every weight is read once (64 rows x top-2 of 8 experts
  # touch every expert) plus the prompt cache once per prompt and each sample's own cache.
  bandwidth = _machine.bandwidth_bytes_per_s()
  weight_bytes = param_count(config)["total"] * jnp.dtype(config.param_dtype).itemsize
  mid_cache = (args.num_prompts * args.prompt_len + rows * args.max_new_tokens / 2) * latent_bytes
  floor_step_s = (weight_bytes + mid_cache) / bandwidth

  results = {
      "device": jax.devices()[0].device_kind,
      "model": args.model,
      "model_params": param_count(config)["total"],
      "setting": f"{args.num_prompts} prompts x {args.prompt_len} tokens x G={args.num_samples} x "
                 f"{args.max_new_tokens} new tokens, temperature 1, no early stop",
      "r1_decode_tokens_per_s": new_tokens / decode_s,
      "r1_prefill_tokens_per_s": args.num_prompts * args.prompt_len / prefill_s,
      "r1_total_seconds": total_s,
      "expanded_decode_tokens_per_s": None if expanded_s is None else new_tokens / expanded_s,
      "naive_tokens_per_s": rows / naive_step_s,
      "hf_tokens_per_s": None if hf_s is None else new_tokens / hf_s,
      "latent_cache_bytes_per_token": latent_bytes,
      "expanded_cache_bytes_per_token": expanded_bytes,
      "measured_bandwidth_gb_per_s": bandwidth / 1e9,
      "bandwidth_floor_step_ms": floor_step_s * 1e3,
      "r1_step_ms": decode_s / args.max_new_tokens * 1e3,
      "matmul_peak_tflops_per_s": peak / 1e12,
      "r1_decode_tflops_per_s": decode_flops / decode_s / 1e12,
      "r1_decode_mfu": decode_flops / decode_s / peak,
  }
  results["r1_vs_hf"] = None if hf_s is None else results["r1_decode_tokens_per_s"] / results["hf_tokens_per_s"]
  results["r1_vs_naive"] = results["r1_decode_tokens_per_s"] / results["naive_tokens_per_s"]
  results["r1_vs_expanded"] = (None if expanded_s is None else
                               results["r1_decode_tokens_per_s"] / results["expanded_decode_tokens_per_s"])

  if args.long_context:
    long_prompts = rng.integers(1, config.vocab_size, (args.num_prompts, args.long_context)).tolist()
    long_args = argparse.Namespace(**{**vars(args), "max_new_tokens": 32})
    pre = r1_prefill_seconds(policy, long_prompts)
    lat = _time(lambda: r1_generate(policy, long_prompts, long_args)) - pre
    exp = _time(lambda: r1_generate(policy, long_prompts, long_args, absorb=False)) - pre
    results["long_context"] = args.long_context
    results["long_context_absorbed_tokens_per_s"] = rows * 32 / lat
    results["long_context_expanded_tokens_per_s"] = rows * 32 / exp

  print(f"{'':34s}{'tokens/s':>12s}{'vs r1':>9s}")
  for name, key in [("r1 decode (latent, absorbed)", "r1_decode_tokens_per_s"),
                    ("r1 decode (expanded K/V cache)", "expanded_decode_tokens_per_s"),
                    ("no-cache full forwards", "naive_tokens_per_s"),
                    ("HF transformers generate", "hf_tokens_per_s"),
                    ("r1 prefill", "r1_prefill_tokens_per_s")]:
    v = results[key]
    ratio = "" if v is None or key == "r1_prefill_tokens_per_s" else f"{results['r1_decode_tokens_per_s'] / v:8.2f}x"
    print(f"{name:34s}{'n/a' if v is None else f'{v:12,.0f}':>12s}{ratio:>9s}")
  if has_latent:
    print(f"cache bytes/token: latent {latent_bytes:,}  expanded {expanded_bytes:,} "
          f"({expanded_bytes / latent_bytes:.1f}x)")
  else:
    print(f"cache bytes/token: {latent_bytes:,} (GQA K/V)")
  print(f"r1 decode: {results['r1_decode_tflops_per_s']:.3f} TFLOP/s = {results['r1_decode_mfu']:.1%} of the "
        f"measured {results['matmul_peak_tflops_per_s']:.3f} TFLOP/s f32 matmul peak")
  print(f"decode step: r1 {results['r1_step_ms']:.1f} ms, bandwidth floor {results['bandwidth_floor_step_ms']:.1f} ms "
        f"({results['measured_bandwidth_gb_per_s']:.1f} GB/s)")
  if args.long_context:
    print(f"{args.long_context}-token prompts: absorbed {results['long_context_absorbed_tokens_per_s']:,.0f} "
          f"tokens/s, expanded {results['long_context_expanded_tokens_per_s']:,.0f} tokens/s")
  print(json.dumps(results))


if __name__ == "__main__":
  main()

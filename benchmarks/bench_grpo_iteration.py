"""One full GRPO iteration (generate -> reward -> reference logprobs -> update): r1 vs TRL's GRPOTrainer.

    python benchmarks/bench_grpo_iteration.py             # 2-core CPU: about 5 minutes, most of it TRL
    python benchmarks/bench_grpo_iteration.py --no_trl    # r1 only, under a minute
    python benchmarks/bench_grpo_iteration.py --model=smollm2   # the pretrained SmolLM2-135M-Instruct

Setting: a random DeepSeek-V3 (4 layers, hidden 512, q_lora 256, kv_lora 128, 8 heads with qk_nope 64
/ qk_rope 32 / v 64, layer 0 dense, then 8 routed experts top-2 + 1 shared, vocab 8192), saved as a
Hugging Face checkpoint that both sides load. 8 prompts of 64 tokens x G=8 x 128 new tokens at
temperature 1 with no early stop, beta (kl_coef) 0.04, mu (num_iterations) 1, float32, one update
on all 64 sequences. Reward: distinct tokens in the completion / 128, computed from token ids
identically on both sides. TRL runs when installed (`pip install -e .[fixtures]`), with gradient
checkpointing off and min_new_tokens = 128, and its second step is timed; r1's iteration is the
one r1/stages/grpo.py runs, timed warm (after a compiling iteration).

--model=smollm2 runs the same iteration on the converted SmolLM2-135M-Instruct (--hf_dir), which
both sides load; the prompts stay random token ids (TRL's side maps them 1:1 through a word-level
tokenizer). Its 49,152-token vocabulary does not fit the update in one pass here, so r1 runs the
fastest micro-batch / LM-head-chunk split its memory planner finds (printed), as the RL stage's
grpo.fit_memory does. The update's MFU is its model FLOPs (bench_grpo_step's count, with the
reference forward) per second over the float32 matmul peak measured in the same run. The last
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
from r1 import grpo, optim, sampling, train_state  # noqa: E402
from r1.model import get_model_config, init_variables, param_count  # noqa: E402
from r1.stages import rollout  # noqa: E402
from benchmarks import _machine  # noqa: E402


def model_config():
  return get_model_config("small_v3").replace(
      vocab_size=8192, q_lora_rank=256, kv_lora_rank=128, num_attention_heads=8, num_hidden_layers=4,
      hidden_size=512, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1)


def distinct_token_reward(ids, max_new_tokens: int = 128) -> float:
  """Distinct token ids in one completion / N: cheap, rule-based and the same for r1 and TRL."""
  return len(set(int(t) for t in ids)) / max_new_tokens


class R1Iteration:
  """r1/stages/grpo.py's step body on a fixed batch of prompts, split into generate / reward / update."""

  def __init__(self, policy, args):
    self.config, self.args = policy.config, args
    self.optimizer, schedule = optim.make_optimizer(1e-6, schedule="constant")
    self.state = train_state.init_train_state(policy.variables, self.optimizer, with_reference=True)
    rows, seq_len = args.num_prompts * args.num_samples, args.prompt_len + args.max_new_tokens
    split = train_state.fitting_update_split(self.config, self.state, rows, seq_len)
    if split is None:
      raise SystemExit(f"r1's update of {rows} x {seq_len} tokens fits no split on this machine")
    self.num_micro_batches, self.logits_chunk_size = split
    self.update = grpo.make_grpo_step(self.config, self.optimizer, schedule, kl_coef=args.beta,
                                            num_iterations=1,
                                            num_micro_batches=split[0], logits_chunk_size=split[1])

  def __call__(self, prompts, seed: int) -> dict[str, float]:
    g, n = self.args.num_samples, self.args.max_new_tokens
    s = self.state
    t0 = time.perf_counter()
    variables = {"params": s.params, "moe_bias": s.moe_bias} if s.moe_bias else {"params": s.params}
    out = sampling.generate(self.config, variables, prompts, num_samples=g, max_new_tokens=n, temperature=1.0,
                            stop_tokens=None, seed=seed)
    completions, mask = np.asarray(out.tokens), np.asarray(out.mask)
    t1 = time.perf_counter()
    rewards = np.array([distinct_token_reward(row[m], n) for row, m in zip(completions, mask)], np.float32)
    t2 = time.perf_counter()
    prompt_tokens, prompt_mask = sampling.pad_prompts(prompts)
    # mu = 1: no sampler logprobs, the update's own (detached) logprobs are pi_old, as in TRL.
    batch = rollout.grpo_batch(prompt_tokens, prompt_mask, completions, mask, None, g)
    batch["advantages"] = np.asarray(grpo.group_advantages(jnp.asarray(rewards), g))
    # The reference logprobs are computed inside the fused step from state.ref_params.
    self.state, metrics = self.update(self.state, batch)
    metrics = jax.device_get(metrics)
    t3 = time.perf_counter()
    if not np.isfinite(metrics["loss"]) or int(metrics["skipped"]):
      raise RuntimeError(f"r1 update: loss {metrics['loss']}, skipped {metrics['skipped']}")
    if int(mask.sum()) != completions.size:
      raise RuntimeError(f"r1 generated {int(mask.sum())} tokens, expected {completions.size} (no early stop)")
    return {"total": t3 - t0, "generate": t1 - t0, "reward": t2 - t1, "update": t3 - t2,
            "mean_reward": float(rewards.mean())}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="random_v3", choices=("random_v3", "smollm2"))
  parser.add_argument("--hf_dir", default=_machine.SMOLLM2_DIR, help="the converted SmolLM2 (--model=smollm2)")
  parser.add_argument("--num_prompts", type=int, default=8)
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--num_samples", type=int, default=8)
  parser.add_argument("--max_new_tokens", type=int, default=128)
  parser.add_argument("--beta", type=float, default=0.04)
  parser.add_argument("--r1_iterations", type=int, default=2, help="timed warm iterations (median reported)")
  parser.add_argument("--no_trl", action="store_true")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as scratch:
    if args.model == "smollm2":
      checkpoint_dir = args.hf_dir
      policy = _machine.load_policy("smollm2", checkpoint_dir)
    else:
      checkpoint_dir = scratch
      random_config = model_config()
      r1.save_hf_checkpoint(r1.Policy(random_config, init_variables(random_config, jax.random.key(0))), checkpoint_dir)
      policy = r1.load_hf_checkpoint(checkpoint_dir)
    config = policy.config
    rng = np.random.default_rng(0)
    # Two batches: TRL's first step compiles nothing but warms its allocator, so both sides time a
    # later iteration. Ids start at 2 (t0 is TRL's padding, t1 its end-of-sequence).
    all_prompts = rng.integers(2, config.vocab_size, (2 * args.num_prompts, args.prompt_len)).tolist()
    peak = _machine.matmul_peak_flops()

    iteration = R1Iteration(policy, args)
    first = iteration(all_prompts[:args.num_prompts], seed=0)
    timed = [iteration(all_prompts[args.num_prompts:], seed=i + 1) for i in range(args.r1_iterations)]
    r1_times = {k: float(np.median([t[k] for t in timed])) for k in ("total", "generate", "reward", "update")}
    peak = max(peak, _machine.matmul_peak_flops())   # re-measured after r1's runs (turbo / thermal drift)

    trl_result, trl_error = None, None
    if args.no_trl:
      trl_error = "--no_trl"
    else:
      try:
        import trl  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      except ImportError as e:
        trl_error = f"trl not installed ({e}); pip install -e .[fixtures]"
    if trl_error is None:
      try:
        from benchmarks import _trl_grpo  # pylint: disable=g-import-not-at-top
      except ImportError:
        import _trl_grpo  # pylint: disable=g-import-not-at-top
      try:
        trl_result = _trl_grpo.seconds_per_step(
            checkpoint_dir, all_prompts, lambda ids: distinct_token_reward(ids, args.max_new_tokens),
            num_generations=args.num_samples, max_new_tokens=args.max_new_tokens, beta=args.beta, steps=2,
            output_dir=os.path.join(scratch, "trl_out"))
      except Exception as e:  # pylint: disable=broad-except
        trl_error = f"TRL failed: {type(e).__name__}: {e}"

  trl_s = None if trl_result is None else trl_result["seconds_per_step"]
  rows, seq_len = args.num_prompts * args.num_samples, args.prompt_len + args.max_new_tokens
  update_flops = _machine.update_flops(config, rows, seq_len, ref_forward=bool(args.beta))
  results = {
      "device": jax.devices()[0].device_kind,
      "model": args.model,
      "setting": f"{args.num_prompts} prompts x {args.prompt_len} tokens x G={args.num_samples} x "
                 f"{args.max_new_tokens} new tokens, beta={args.beta}, mu=1, float32, no early stop",
      "model_params": param_count(config)["total"],
      "r1_compile_seconds": first["total"] - r1_times["total"],
      "r1_generate_seconds": r1_times["generate"],
      "r1_reward_seconds": r1_times["reward"],
      "r1_update_seconds": r1_times["update"],
      "trl_version": None if trl_result is None else trl_result["version"],
      "trl_generate_seconds": None if trl_result is None else trl_result["generate_seconds"],
      "trl_reward_seconds": None if trl_result is None else trl_result["reward_seconds"],
      "trl_update_seconds": None if trl_result is None else trl_result["update_seconds"],
      "trl_error": trl_error,
      "r1_seconds_per_iteration": r1_times["total"],
      "trl_seconds_per_iteration": trl_s,
      "trl_over_r1": None if trl_s is None else trl_s / r1_times["total"],
      "r1_num_micro_batches": iteration.num_micro_batches,
      "r1_logits_chunk_size": iteration.logits_chunk_size,
      "matmul_peak_tflops_per_s": peak / 1e12,
      "r1_update_mfu": update_flops / r1_times["update"] / peak,
      "trl_update_mfu": None if trl_result is None else update_flops / trl_result["update_seconds"] / peak,
  }

  print(f"{results['setting']}; model {results['model_params'] / 1e6:.1f}M params, {results['device']}")
  print(f"{'':6s}{'iteration s':>13s}{'generate':>10s}{'reward':>9s}{'update':>9s}{'vs r1':>8s}")
  print(f"{'r1':6s}{r1_times['total']:13.2f}{r1_times['generate']:10.2f}{r1_times['reward']:9.3f}"
        f"{r1_times['update']:9.2f}{'':>8s}")
  if trl_result is None:
    print(f"{'TRL':6s}{'n/a':>13s}  ({trl_error})")
  else:
    print(f"{'TRL':6s}{trl_s:13.2f}{trl_result['generate_seconds']:10.2f}{trl_result['reward_seconds']:9.3f}"
          f"{trl_result['update_seconds']:9.2f}{results['trl_over_r1']:7.1f}x")
  print(f"r1 compile (first iteration - warm): {results['r1_compile_seconds']:.1f} s; update includes the "
        f"reference forward on both sides")
  trl_mfu = "" if results["trl_update_mfu"] is None else f", TRL {results['trl_update_mfu']:.1%}"
  print(f"update MFU (of the measured {peak / 1e12:.3f} TFLOP/s f32 matmul peak): r1 {results['r1_update_mfu']:.1%}"
        f"{trl_mfu}; r1 split: num_micro_batches={iteration.num_micro_batches}, "
        f"logits_chunk_size={iteration.logits_chunk_size}")
  print(json.dumps(results))


if __name__ == "__main__":
  main()

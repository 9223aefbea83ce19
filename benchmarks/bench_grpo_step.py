"""Throughput and MFU of the fused GRPO update step (r1.grpo.make_grpo_step).

  python benchmarks/bench_grpo_step.py            # ~3 minutes on a 2-core CPU
  python benchmarks/bench_grpo_step.py --quick    # one config, fewer repeats

MFU is measured against this machine's matmul peak, taken in the same run with a big float32
matmul. Model FLOPs per update = 6 x (matmul params active per token) x tokens for the policy's
forward + backward, + 2 x that for the reference forward when the step runs it, + attention
(6 B T^2 H (d_qk + d_v) per layer; the causal mask is not discounted because the kernel computes
every score). The input embedding is a gather, so its parameters are excluded; the LM head is
counted. Prints a table; the last line is one JSON object (the first row's numbers at top level).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1 import grpo
from r1 import optim
from r1 import train_state
from r1.model import get_model_config, init_variables, param_count

try:
  from benchmarks import _machine  # pylint: disable=g-import-not-at-top
except ImportError:  # run as a script: benchmarks/ is on sys.path
  import _machine  # pylint: disable=g-import-not-at-top


def make_batch(config, b, t, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((b, t), np.float32)
  mask[:, t // 4:-1] = 1   # a quarter prompt, the rest completion
  rewards = rng.integers(0, 2, b).astype(np.float32)
  return {"tokens": jnp.asarray(rng.integers(1, config.vocab_size, (b, t)), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
          "segment_ids": jnp.ones((b, t), jnp.int32), "completion_mask": jnp.asarray(mask),
          "advantages": grpo.group_advantages(jnp.asarray(rewards), min(b, 4))}


def bench(name, config, *, batch, length, kl_coef, chunk, micro, repeats):
  variables = init_variables(config, jax.random.key(0))
  opt, sched = optim.make_optimizer(1e-5, warmup_steps=10, decay_steps=1000)
  state = train_state.init_train_state(variables, opt, with_reference=bool(kl_coef))
  step = grpo.make_grpo_step(config, opt, sched, kl_coef=kl_coef, logits_chunk_size=chunk, num_micro_batches=micro)
  data = make_batch(config, batch, length)
  t0 = time.perf_counter()
  state, m = step(state, data)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m = step(state, data)
    jax.block_until_ready((state.params, m))
    times.append(time.perf_counter() - t0)
  assert np.isfinite(float(m["loss"])) and float(m["skipped"]) == 0
  dt = float(np.median(times))
  flops = _machine.update_flops(config, batch, length, ref_forward=bool(kl_coef))
  return {"name": name, "active_params": param_count(config)["active"], "tokens": batch * length,
          "step_s": dt, "compile_s": compile_s, "tokens_per_s": batch * length / dt,
          "model_tflops_per_s": flops / dt / 1e12}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  repeats = 2 if args.quick else 4

  small = get_model_config("small_v3")
  # Dense-dominated: small_v3's MLA and vocab, wide dense FFNs and one MoE layer of four wide
  # experts (top-2), so matmuls dominate; einsum dispatch computes all E experts per token, so
  # E/K = 2x the routed FLOPs are spent and not counted.
  dense_heavy = small.replace(hidden_size=1024, intermediate_size=4096, moe_intermediate_size=1024,
                              num_attention_heads=8, n_routed_experts=4, n_group=2, topk_group=1,
                              num_experts_per_tok=2, first_k_dense_replace=3, vocab_size=16000)
  runs = [("dense_heavy_v3 kl=0", dense_heavy, dict(batch=4, length=512, kl_coef=0.0, chunk=128, micro=1))]
  if not args.quick:
    runs += [("dense_heavy_v3 kl=1e-3 (ref fwd)", dense_heavy,
              dict(batch=4, length=512, kl_coef=1e-3, chunk=128, micro=1)),
             ("small_v3 kl=0 (8 experts)", small, dict(batch=4, length=512, kl_coef=0.0, chunk=128, micro=1))]

  peak = _machine.matmul_peak_flops()
  rows = []
  for name, config, kw in runs:
    row = bench(name, config, repeats=repeats, **kw)
    row["mfu"] = row["model_tflops_per_s"] * 1e12 / peak
    rows.append(row)
  peak = max(peak, _machine.matmul_peak_flops())  # re-measure after the runs (turbo / thermal drift)
  for row in rows:
    row["mfu"] = row["model_tflops_per_s"] * 1e12 / peak

  print(f"devices: {jax.devices()}  matmul peak: {peak / 1e12:.3f} TFLOP/s (f32, 2048^3)")
  print(f"{'config':36s} {'active':>8s} {'tokens':>7s} {'step s':>7s} {'tok/s':>8s} {'TFLOP/s':>8s} {'MFU':>6s}")
  for r in rows:
    print(f"{r['name']:36s} {r['active_params'] / 1e6:7.1f}M {r['tokens']:7d} {r['step_s']:7.3f} "
          f"{r['tokens_per_s']:8.0f} {r['model_tflops_per_s']:8.3f} {r['mfu']:6.1%}")
  first = rows[0]
  print(json.dumps({"tokens_per_s": first["tokens_per_s"], "model_tflops_per_s": first["model_tflops_per_s"],
                    "peak_tflops_per_s": peak / 1e12, "mfu": first["mfu"], "config": first["name"],
                    "rows": rows}))


if __name__ == "__main__":
  main()

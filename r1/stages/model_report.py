"""The model_report stage: parameter counts per module and one timed, jitted forward pass.

  python -m r1.main --config=configs/model_report.py[:deepseek_v3] --workdir=/tmp/model_report

Writes <workdir>/model_report.json: counts (total, active per token, embedding, routed experts,
MTP) and, below config.forward.max_forward_params, tokens/s of the forward, its compile time, the
random-token NLL and the expert load per MoE layer.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import r1
from r1.model import Transformer, get_model_config, init_variables, param_count


def run(config, workdir: str) -> dict:
  """Prints parameter counts per module and runs one jitted forward pass; returns the report."""
  overrides = dict(config.model.overrides)
  if config.init.hf_dir:
    policy = r1.load_hf_checkpoint(config.init.hf_dir, **overrides)
    model_config = policy.config
  else:
    model_config = get_model_config(config.model.name, **overrides)
    policy = None
  counts = param_count(model_config)
  print(f"model {config.model.name if not config.init.hf_dir else config.init.hf_dir}")
  print(f"  layers {model_config.num_hidden_layers} ({model_config.num_moe_layers} MoE), hidden "
        f"{model_config.hidden_size}, heads {model_config.num_attention_heads}, experts "
        f"{model_config.n_routed_experts} (top-{model_config.num_experts_per_tok}), vocab {model_config.vocab_size}")
  for key in ("total", "active", "embedding", "routed_experts", "mtp"):
    print(f"  {key:15s} {counts[key]:>18,d}  ({counts[key] / 1e9:8.3f} B)")
  report = {"model": config.model.name, "params": counts}

  if counts["total"] > config.forward.max_forward_params:
    print(f"  forward pass skipped: {counts['total']:,} params > max_forward_params")
  else:
    if policy is None:
      policy = r1.Policy(model_config, init_variables(model_config, jax.random.key(config.seed)))
    b, t = config.forward.batch_size, config.forward.seq_len
    tokens = jax.random.randint(jax.random.key(config.seed + 1), (b, t), 0, model_config.vocab_size)
    forward = jax.jit(lambda v, x: Transformer(model_config).apply(v, x))
    start = time.perf_counter()
    out = jax.block_until_ready(forward(policy.variables, tokens))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(forward(policy.variables, tokens))
    step_s = time.perf_counter() - start
    logprobs = jax.nn.log_softmax(out.logits[:, :-1])
    nll = -jnp.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1).mean()
    load = np.asarray(out.expert_load)
    print(f"  forward [{b}, {t}]: first call {compile_s:.2f} s (compile), then {step_s * 1e3:.1f} ms "
          f"({b * t / step_s:,.0f} tokens/s)")
    print(f"  random-token NLL {float(nll):.3f} (uniform would be {np.log(model_config.vocab_size):.3f})")
    if load.size:
      print(f"  expert load per MoE layer (tokens per expert): {load.tolist()}")
    report.update(forward_tokens_per_s=b * t / step_s, compile_seconds=compile_s, nll=float(nll),
                  expert_load=load.tolist())
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "model_report.json"), "w") as f:
      json.dump(report, f, indent=2)
  print(f"  report written to {os.path.join(workdir, 'model_report.json')}")
  return report

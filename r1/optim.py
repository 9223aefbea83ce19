"""The two state updates the train step applies besides the loss: the optimizer (global-norm
clipping + AdamW with warmup and decay) and the aux-loss-free balancing bias (DeepSeek-V3 section
2.1.2), which moves by expert load outside the gradient."""

import jax
import jax.numpy as jnp
import optax

from r1.model import ModelConfig

Array = jax.Array


def make_optimizer(learning_rate: float, *, warmup_steps: int = 0, decay_steps: int | None = None,
                   schedule: str = "cosine", end_factor: float = 0.0, b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8, weight_decay: float = 0.1, max_grad_norm: float | None = 1.0,
                   updates_per_step: int = 1):
  """Global-norm clipping then AdamW with linear warmup and a cosine / linear / constant schedule.

  warmup_steps and decay_steps count training steps of `updates_per_step` optimizer updates each
  (a GRPO rollout step makes mu x M updates: r1.grpo.make_grpo_step): the learning rate is held
  over a step's updates and the schedule spans the run whatever mu and M are (verl steps its
  scheduler once per rollout, likewise). Weight decay applies to matrices only (ndim >= 2).
  Returns (optax.GradientTransformation, schedule: update count -> learning rate).
  """
  if updates_per_step < 1:
    raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
  if schedule not in ("cosine", "linear", "constant"):
    raise ValueError(f"schedule={schedule!r}: expected cosine, linear or constant")
  if schedule == "constant" or decay_steps is None:
    decay = optax.constant_schedule(learning_rate)
  elif schedule == "cosine":
    decay = optax.cosine_decay_schedule(learning_rate, max(decay_steps - warmup_steps, 1), alpha=end_factor)
  else:
    decay = optax.linear_schedule(learning_rate, learning_rate * end_factor, max(decay_steps - warmup_steps, 1))
  # Warmup reaches lr at update warmup_steps - 1 and starts at lr / warmup_steps, not 0 (a wasted update).
  warmup = optax.linear_schedule(learning_rate / max(warmup_steps, 1), learning_rate, max(warmup_steps - 1, 1))
  lr = optax.join_schedules([warmup, decay], [warmup_steps]) if warmup_steps else decay
  if updates_per_step > 1:
    per_step = lr
    lr = lambda count: per_step(count // updates_per_step)  # pylint: disable=unnecessary-lambda-assignment
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.chain(
      optax.clip_by_global_norm(max_grad_norm) if max_grad_norm else optax.identity(),
      optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
  return tx, lr


def moe_bias_paths(config: ModelConfig, with_mtp: bool = False) -> list[tuple[str, ...]]:
  """Paths in moe_bias of the rows of ModelOutput.expert_load (MoE layers, then MTP blocks)."""
  paths = [(f"layers_{i}", "mlp") for i in range(config.num_hidden_layers) if config.is_moe_layer(i)]
  if with_mtp:
    paths += [(f"mtp_{k}", "block", "mlp") for k in range(config.num_nextn_predict_layers)
              if config.is_moe_layer(config.num_hidden_layers + k)]
  return paths


def update_moe_bias(moe_bias: dict, expert_load: Array, config: ModelConfig, rate: float,
                    with_mtp: bool = False) -> dict:
  """V3 section 2.1.2: b_i += rate * sign(mean_load - load_i) per MoE layer, outside the gradient.

  expert_load: int32[L, E] tokens per expert (rows as `moe_bias_paths`). rate 0 (or no bias) is a no-op.
  """
  if not rate or not moe_bias:
    return moe_bias
  paths = moe_bias_paths(config, with_mtp)
  if len(paths) != expert_load.shape[0]:
    raise ValueError(f"expert_load has {expert_load.shape[0]} rows, expected {len(paths)} for {paths}")
  new = jax.tree.map(lambda x: x, moe_bias)
  for row, path in enumerate(paths):
    load = expert_load[row].astype(jnp.float32)
    node = new
    for key in path:
      node = node[key]
    node["e_score_correction_bias"] = node["e_score_correction_bias"] + rate * jnp.sign(load.mean() - load)
  return new


def expert_load_metrics(expert_load: Array, config: ModelConfig, with_mtp: bool = False) -> dict[str, Array]:
  """Per MoE layer: load min and max relative to the mean (1 = balanced) and the load entropy
  normalised by log E (1 = uniform)."""
  metrics = {}
  if expert_load.shape[0] == 0:
    return metrics
  load = expert_load.astype(jnp.float32)
  e = load.shape[1]
  mean = jnp.maximum(load.mean(axis=1), 1e-9)
  p = load / jnp.maximum(load.sum(axis=1, keepdims=True), 1e-9)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=1) / jnp.log(e)
  for row, path in enumerate(moe_bias_paths(config, with_mtp)):
    name = path[0]
    metrics[f"expert_load/{name}/min"] = load[row].min() / mean[row]
    metrics[f"expert_load/{name}/max"] = load[row].max() / mean[row]
    metrics[f"expert_load/{name}/entropy"] = entropy[row]
  return metrics

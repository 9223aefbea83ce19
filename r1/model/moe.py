"""DeepSeekMoE: shared experts + fine-grained routed experts (V3 section 2.1.2).

Routing (`route`) is a pure function of the router logits and the aux-loss-free balancing bias:
the bias shifts which experts are *selected* but never the gate values (V3 eq. 16). Dispatch is
dropless by default and has two kernels with identical numbers (tests check):
  "einsum": tokens are sorted by expert into a padded [E, C, D] buffer and run as one batched
            matmul. C = N (all tokens) when dropless, so it spends E/K times the routed FLOPs; on
            XLA:CPU it is still ~15x faster than ragged_dot, so it is the CPU default.
  "ragged": tokens sorted by expert and `jax.lax.ragged_dot` (grouped GEMM), exact FLOPs; for TPU/GPU.
  "ep":     expert parallelism (r1/model/moe_ep.py): experts sharded over the mesh's `expert`
            axis, tokens sent to their experts' devices and back with all_to_all; "einsum" when
            no mesh with expert > 1 is active (or it cannot split the batch).
Dropless einsum first tries C = 2 N K / E (twice the balanced load) and falls back to C = N only
when an expert got more tokens than that (`lax.cond`: one branch runs). A capacity factor
(optional) bounds C to ceil(cf * N * K / E) and drops the overflow, GShard-style.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1.model import layers
from r1.model import moe_ep
from r1.model.config import ModelConfig
from r1.model.moe_ep import DROPLESS_FAST_CAPACITY_FACTOR

Array = jax.Array


def route(router_logits: Array, bias: Array | None, config: ModelConfig) -> tuple[Array, Array]:
  """Picks K experts per token.

  Args:
    router_logits: f32[N, E].
    bias: f32[E] e_score_correction_bias (noaux_tc only), added for selection only.
    config: the model config (scoring_func, topk_method, n_group, topk_group, ...).
  Returns:
    weights f32[N, K] (normalised if norm_topk_prob, times routed_scaling_factor), experts int32[N, K].
  """
  c = config
  n, e = router_logits.shape
  k = c.num_experts_per_tok
  if c.scoring_func == "sigmoid":
    scores = jax.nn.sigmoid(router_logits)
  else:
    scores = jax.nn.softmax(router_logits, axis=-1)

  if c.topk_method == "greedy":
    weights, experts = jax.lax.top_k(scores, k)
  else:
    choice = scores + bias[None, :] if c.topk_method == "noaux_tc" else scores
    if c.n_group > 1:
      grouped = choice.reshape(n, c.n_group, e // c.n_group)
      if c.topk_method == "noaux_tc":  # V3: a group's score is the sum of its two best experts
        group_scores = jax.lax.top_k(grouped, min(2, e // c.n_group))[0].sum(-1)
      else:  # V2: the group's best expert
        group_scores = grouped.max(-1)
      _, top_groups = jax.lax.top_k(group_scores, c.topk_group)
      group_mask = jnp.zeros((n, c.n_group), bool).at[jnp.arange(n)[:, None], top_groups].set(True)
      expert_mask = jnp.repeat(group_mask, e // c.n_group, axis=1)
      # V3 masks with -inf (bias may make scores negative); V2 with 0 (softmax scores are > 0).
      choice = jnp.where(expert_mask, choice, -jnp.inf if c.topk_method == "noaux_tc" else 0.0)
    _, experts = jax.lax.top_k(choice, k)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
  if c.norm_topk_prob:
    weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
  return weights * c.routed_scaling_factor, experts.astype(jnp.int32)


def expert_capacity(num_tokens: int, config: ModelConfig) -> int:
  """Rows per expert in the einsum buffer: all tokens (dropless) or the capacity-factor bound."""
  if config.capacity_factor is None:
    return num_tokens
  c = math.ceil(config.capacity_factor * num_tokens * config.num_experts_per_tok / config.n_routed_experts)
  return max(1, min(num_tokens, c))


def sort_by_expert(experts: Array, num_experts: int) -> tuple[Array, Array, Array, Array]:
  """Orders the N*K (token, expert) assignments by expert.

  Returns order int[N*K] (index into the flattened [N, K] assignments), the sorted expert ids
  int[N*K], each assignment's rank within its expert int[N*K], and group sizes int32[E].
  """
  flat = experts.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  sorted_experts = flat[order]
  group_sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
  starts = jnp.cumsum(group_sizes) - group_sizes
  rank = jnp.arange(flat.shape[0]) - starts[sorted_experts]
  return order, sorted_experts, rank, group_sizes


class MoE(nn.Module):
  """x: [B, T, D], token_mask bool[B, T] -> (y [B, T, D], expert load int32[E])."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, token_mask: Array) -> tuple[Array, Array]:
    c = self.config
    pd, cd = jnp.dtype(c.param_dtype), jnp.dtype(c.dtype)
    b, t, d = x.shape
    e, k, f = c.n_routed_experts, c.num_experts_per_tok, c.moe_intermediate_size
    # The router stays in float32 (as in the checkpoints): bf16 logits flip near-tied top-k picks.
    router = layers.param_with_axes(self, "gate", (d, e), ("embed", None), dtype=jnp.float32)
    bias = None
    if c.topk_method == "noaux_tc":
      bias = self.variable("moe_bias", "e_score_correction_bias", jnp.zeros, (e,), jnp.float32).value
    wi_gate = layers.param_with_axes(self, "experts_gate_proj", (e, d, f), ("exp", "embed", "mlp"), dtype=pd)
    wi_up = layers.param_with_axes(self, "experts_up_proj", (e, d, f), ("exp", "embed", "mlp"), dtype=pd)
    wo = layers.param_with_axes(self, "experts_down_proj", (e, f, d), ("exp", "mlp", "embed"), dtype=pd)

    tokens = x.reshape(b * t, d)
    weights, experts = route(tokens.astype(jnp.float32) @ router, bias, c)
    load = jnp.zeros((e,), jnp.int32).at[experts.reshape(-1)].add(
        jnp.repeat(token_mask.reshape(-1), k).astype(jnp.int32))
    if c.capacity_factor is not None and c.moe_impl != "ragged":
      # Padding (left-padded prompts, tokens after EOS) takes no expert capacity: its assignments
      # go to no expert (id E, dropped by both kernels), so the real tokens are the ones kept,
      # however much padding a batch has.
      experts = jnp.where(token_mask.reshape(-1, 1), experts, e)
    mesh = moe_ep.expert_parallel_mesh(b) if c.moe_impl == "ep" else None
    if mesh is not None:
      y = moe_ep.expert_parallel_moe(
          x.astype(cd), weights.reshape(b, t, k), experts.reshape(b, t, k), wi_gate.astype(cd),
          wi_up.astype(cd), wo.astype(cd), mesh, None if c.capacity_factor is None else expert_capacity(b * t, c))
    else:
      y = self._routed_single_device(tokens, weights, experts, wi_gate, wi_up, wo)
    y = y.reshape(b, t, d)
    if c.n_shared_experts:
      y = y + layers.SwiGLU(f * c.n_shared_experts, c.dtype, c.param_dtype, name="shared_experts")(x)
    return y, load

  def _routed_single_device(self, tokens, weights, experts, wi_gate, wi_up, wo):
    """The einsum or ragged kernel: tokens [N, D], weights f32[N, K], experts int32[N, K] -> [N, D].
    An expert id of E (padding, with a capacity factor) sorts last and is dropped (output 0)."""
    c = self.config
    cd = jnp.dtype(c.dtype)
    n, d = tokens.shape
    e, k = c.n_routed_experts, c.num_experts_per_tok
    order, sorted_experts, rank, group_sizes = sort_by_expert(experts, e)
    token_of = order // k

    x_sorted = tokens.astype(cd)[token_of]                                     # [N*K, D]
    if c.moe_impl == "ragged":
      h = nn.silu(jax.lax.ragged_dot(x_sorted, wi_gate.astype(cd), group_sizes)) * jax.lax.ragged_dot(
          x_sorted, wi_up.astype(cd), group_sizes)
      y_sorted = jax.lax.ragged_dot(h, wo.astype(cd), group_sizes)              # [N*K, D]
    else:
      def padded_experts(cap):
        buf = jnp.zeros((e, cap, d), cd).at[sorted_experts, rank].set(x_sorted, mode="drop")
        buf = layers.constrain(buf, ("act_exp", None, "act_embed"))
        out = moe_ep.expert_ffn(buf, wi_gate.astype(cd), wi_up.astype(cd), wo.astype(cd))
        return out.at[sorted_experts, rank].get(mode="fill", fill_value=0)   # dropped rows -> 0

      cap = expert_capacity(n, c)
      fast = expert_capacity(n, c.replace(capacity_factor=DROPLESS_FAST_CAPACITY_FACTOR))
      if c.capacity_factor is None and fast < cap:
        # Dropless with a smaller buffer when the load allows it (most steps): the all-tokens
        # buffer costs E/K times the routed FLOPs, the fast one 2x. Only one branch runs.
        y_sorted = jax.lax.cond(group_sizes.max() <= fast, lambda: padded_experts(fast),
                                lambda: padded_experts(cap))
      else:
        y_sorted = padded_experts(cap)
    y = jnp.zeros_like(y_sorted).at[order].set(y_sorted).reshape(n, k, d)
    return jnp.einsum("nkd,nk->nd", y.astype(jnp.float32), weights).astype(cd)

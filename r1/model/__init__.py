"""r1's models. Parameters and the MoE balancing bias are plain pytrees:

  variables = {"params": ..., "moe_bias": ...}   # moe_bias only for noaux_tc routing
  out = Transformer(config).apply(variables, tokens)
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1.model.config import ModelConfig, RopeScaling
from r1.model.presets import get_model_config
from r1.model.transformer import ModelOutput, Transformer

__all__ = ["ModelConfig", "RopeScaling", "ModelOutput", "Transformer", "get_model_config", "init_variables",
           "abstract_variables", "param_count"]


def _init(config: ModelConfig, rng: jax.Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  # return_mtp=True so the MTP modules' parameters exist even though most callers skip them.
  return Transformer(config).init(rng, tokens, return_mtp=True, return_logits=False)


def init_variables(config: ModelConfig, rng: jax.Array) -> dict:
  """Random-initialised, unboxed variables {"params", "moe_bias"?} (normal(0.02) weights, unit norms)."""
  return nn.unbox(jax.jit(lambda r: _init(config, r))(rng))


def abstract_variables(config: ModelConfig) -> dict:
  """The variables' shapes and dtypes (jax.ShapeDtypeStruct), boxed with logical axis names.

  Allocates nothing: a 671B model's tree comes back in milliseconds.
  """
  return jax.eval_shape(lambda rng: _init(config, rng), jax.random.key(0))


def param_count(config: ModelConfig) -> dict[str, int]:
  """Parameter counts by `jax.eval_shape` (no allocation).

  Returns total (main model, MTP excluded), active (per token: everything except the routed
  experts, plus num_experts_per_tok of them in each MoE layer), mtp (the MTP modules, which share
  the main model's embedding and head), embedding (input embedding + LM head) and routed_experts.
  The balancing bias is a buffer, not a parameter.
  """
  params = nn.unbox(abstract_variables(config))["params"]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  total = mtp = routed = embedding = 0
  for path, leaf in flat:
    keys = [getattr(p, "key", str(p)) for p in path]
    n = math.prod(leaf.shape)
    if keys[0].startswith("mtp_"):
      mtp += n
      continue
    total += n
    if keys[-1].startswith("experts_"):
      routed += n
    if keys[0] in ("embed_tokens", "lm_head"):
      embedding += n
  active = total - routed
  if config.n_routed_experts:
    active += routed * config.num_experts_per_tok // config.n_routed_experts
  return {"total": total, "active": active, "mtp": mtp, "embedding": embedding, "routed_experts": routed}

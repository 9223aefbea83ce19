"""The memory planner against measurement: the exact state bytes of a real TrainState, the compiled
GRPO step's memory (XLA's memory_analysis on CPU), the residuals a remat policy saves, and
per-device shard sizes on 8 fake devices."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from r1 import grpo
from r1 import optim
from r1 import train_state
from r1.model import Transformer, init_variables
from r1.tools import plan as plan_lib
from tests.multidevice.test_sharded_model import run_on_8_devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_grpo_config(remat: str = "none"):
  """configs/tiny_r1_zero.py's GRPO stage, small: 2 prompts x G=2, T = 32 + 32."""
  spec = importlib.util.spec_from_file_location("tiny_r1_zero", os.path.join(ROOT, "configs", "tiny_r1_zero.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.stage = "grpo"
  c.data.batch_size, c.rollout.num_samples = 2, 2
  c.data.length_buckets, c.rollout.max_new_tokens = (32,), 32
  c.model.overrides.remat = remat
  return c


def make_optimizer(config):
  o = config.optimizer
  return optim.make_optimizer(o.learning_rate, weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm, b2=o.b2)


def tree_bytes(tree) -> int:
  return sum(x.nbytes for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def tiny():
  config = tiny_grpo_config()
  mc = plan_lib.model_config_of(config)
  optimizer, schedule = make_optimizer(config)
  state = train_state.init_train_state(init_variables(mc, jax.random.key(0)), optimizer, with_reference=True)
  return config, mc, optimizer, schedule, state, plan_lib.plan(config, {"data": 1}, "cpu-1")


def test_state_bytes_equal_a_real_train_state(tiny):
  _, mc, _, _, state, p = tiny
  assert mc.vocab_size == 1000 and mc.hidden_size == 128   # the tokenizer's vocabulary, the config's width
  c = p["components"]
  assert c["params"] == tree_bytes(state.params) + tree_bytes(state.moe_bias)
  assert c["adam"] == tree_bytes(state.opt_state)
  assert c["reference"] == tree_bytes(state.ref_params)
  assert c["gradients"] == tree_bytes(state.params)     # one micro-batch: no separate accumulator


def compiled_step_bytes(config, mc, optimizer, schedule, state, p) -> int:
  """Arguments + outputs - donated aliases + temporaries of the compiled GRPO step."""
  w = p["workload"]
  b, t = w["rows"], w["seq_len"]
  assert (b, t) == (4, 64)
  batch = {"tokens": jnp.ones((b, t), jnp.int32), "positions": jnp.zeros((b, t), jnp.int32),
           "segment_ids": jnp.ones((b, t), jnp.int32), "completion_mask": jnp.ones((b, t), jnp.float32),
           "advantages": jnp.ones((b,), jnp.float32), "ref_logprobs": jnp.zeros((b, t), jnp.float32)}
  step = grpo.make_grpo_step(mc, optimizer, schedule, kl_coef=config.grpo.kl_coef)
  ma = step.lower(state, batch).compile().memory_analysis()
  return ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes


def test_train_step_peak_matches_compiled_memory(tiny):
  p = tiny[-1]
  measured = compiled_step_bytes(*tiny)
  ratio = p["train_peak"] / measured
  print(f"planned {p['train_peak']:,} B, compiled {measured:,} B, ratio {ratio:.3f}")
  assert 0.8 <= ratio <= 1.2, (p["train_peak"], measured)
  # Activations dominate at this size: the estimate is not carried by the (exact) state terms.
  assert p["components"]["activations"] > 0.5 * measured


def test_dense_student_train_step_peak_matches_compiled_memory():
  config = tiny_grpo_config()
  config.model.name = "tiny_qwen2"            # GQA 4/2 heads, q/k/v biases, tied embeddings
  mc = plan_lib.model_config_of(config)
  assert mc.is_gqa and mc.hidden_size == 128
  optimizer, schedule = make_optimizer(config)
  state = train_state.init_train_state(init_variables(mc, jax.random.key(0)), optimizer, with_reference=True)
  p = plan_lib.plan(config, {"data": 1}, "cpu-1")
  assert p["components"]["params"] == tree_bytes(state.params)
  measured = compiled_step_bytes(config, mc, optimizer, schedule, state, p)
  ratio = p["train_peak"] / measured
  print(f"dense: planned {p['train_peak']:,} B, compiled {measured:,} B, ratio {ratio:.3f}")
  assert 0.8 <= ratio <= 1.2, (p["train_peak"], measured)
  # The GQA cache: 2 x 2 K/V heads x 32 x 2 layers x 4 B per token.
  assert p["components"]["kv_cache"] == 2 * (32 + 2 * 32) * 2 * 2 * 32 * 2 * 4


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_saved_bytes_match_the_backward_residuals(tiny, remat):
  # XLA:CPU schedules a remat'd layer's recomputation early, so its memory_analysis barely moves
  # with the policy; what a policy controls, the residuals the forward keeps, is measured instead.
  _, mc, _, _, state, _ = tiny
  mc = mc.replace(remat=remat)
  variables = {"params": state.params, "moe_bias": state.moe_bias}
  tokens = jnp.ones((4, 64), jnp.int32)
  forward = lambda p: Transformer(mc).apply({**variables, "params": p}, tokens, return_logits=False).hidden
  _, vjp_fn = jax.vjp(forward, state.params)
  params = {id(x) for x in jax.tree.leaves(state.params)}
  residuals = sum(x.nbytes for x in jax.tree.leaves(vjp_fn) if id(x) not in params)
  act = plan_lib.activation_bytes(mc, 4, 64, None, tensor=1)
  planned = act["saved_layers"] + act["layer_args"] + act["hidden"]
  assert 0.8 <= planned / residuals <= 1.2, (remat, planned, residuals)


def test_sharded_per_device_bytes_equal_real_shards():
  r = run_on_8_devices(os.path.join(ROOT, "tests", "tools", "sharded_plan.py"))
  assert r["mesh"] == {"data": 2, "fsdp": 2, "expert": 2, "tensor": 1}, r
  for key in ("params", "adam", "reference"):
    assert r["planned"][key] == r["measured"][key], (key, r)
  # Really sharded: a device holds well under the single-device state.
  assert r["measured"]["params"] < 0.6 * r["unsharded_params"], r


def test_topologies():
  assert plan_lib.topology_devices("v5p-1024") == (512, 95 * plan_lib.GiB)   # named by TensorCores
  assert plan_lib.topology_devices("v6e-256") == (256, 32 * plan_lib.GiB)
  assert plan_lib.topology_devices("v5e-16") == (16, 16 * plan_lib.GiB)
  assert plan_lib.topology_devices("v4-32") == (16, 32 * plan_lib.GiB)
  assert plan_lib.topology_devices("cpu-8")[0] == 8
  with pytest.raises(ValueError, match="accelerator type 'v9-8'"):
    plan_lib.topology_devices("v9-8")
  assert plan_lib.resolve_mesh_shape({"data": -1, "fsdp": 32, "expert": 8}, 512) == {
      "data": 2, "fsdp": 32, "expert": 8, "tensor": 1}
  with pytest.raises(ValueError, match="needs 16 devices"):
    plan_lib.resolve_mesh_shape({"data": 2, "fsdp": 8}, 512)


def test_cli_prints_a_verdict_and_writes_json(tmp_path):
  out = tmp_path / "plan.json"
  proc = subprocess.run([sys.executable, "-m", "r1.tools.plan", f"--config={ROOT}/configs/tiny_r1_zero.py",
                         "--topology=cpu-1", "--mesh=data=1", f"--json_out={out}", "--config.stage=grpo"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "fits:" in proc.stdout and "kv_cache" in proc.stdout, proc.stdout
  p = json.loads(out.read_text())
  assert p["fits"] and p["workload"]["seq_len"] == 256 + 112, p["workload"]
  # Latent cache: (kv_lora + rope) x layers x 4 B per token, 8 prompts x (256 + 8 x 112) tokens.
  assert p["components"]["kv_cache"] == 8 * (256 + 8 * 112) * (32 + 8) * 2 * 4

"""A real vocabulary's update either fits the device or is refused with the split to set.

With SmolLM2's 49,152 tokens the [rows, T, V] float32 logits of one GRPO update are GiB: the step
refuses an update one device cannot hold before XLA allocates (naming num_micro_batches and
logits_chunk_size), and the GRPO stage, with grpo.fit_memory, picks that split itself. The device
memory is patched small so that a tiny model shows it; the planner's estimate at these shapes is
checked against XLA's compiled memory, so the refusal is not a guess.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from r1 import grpo
from r1 import optim
from r1 import train_state
from r1.model import get_model_config, init_variables
from r1.tools import plan as plan_lib
from r1.stages import common
from tests.tools.test_plan import tiny_grpo_config

ROWS, T, VOCAB = 16, 256, 49152
LIMIT = 600 << 20   # the patched device: 600 MiB


@pytest.fixture(scope="module")
def big_vocab():
  mc = get_model_config("tiny_qwen2", vocab_size=VOCAB)
  optimizer, schedule = optim.make_optimizer(1e-3)
  state = train_state.init_train_state(init_variables(mc, jax.random.key(0)), optimizer, with_reference=True)
  batch = {"tokens": jnp.ones((ROWS, T), jnp.int32), "positions": jnp.broadcast_to(jnp.arange(T), (ROWS, T)),
           "segment_ids": jnp.ones((ROWS, T), jnp.int32), "completion_mask": jnp.ones((ROWS, T), jnp.float32),
           "advantages": jnp.ones((ROWS,), jnp.float32)}
  return mc, optimizer, schedule, state, batch


def _compiled_bytes(step, state, batch) -> int:
  ma = step.lower(state, batch).compile().memory_analysis()
  return ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes


def test_step_refuses_what_cannot_fit_and_names_a_split_that_does(big_vocab, monkeypatch):
  mc, optimizer, schedule, state, batch = big_vocab
  # At XLA's own count the whole-batch update is over the patched device (the logits alone: 3 x
  # 16 x 256 x 49,152 x 4 B = 2.4 GB), so refusing it is right.
  assert _compiled_bytes(grpo.make_grpo_step(mc, optimizer, schedule, kl_coef=0.001), state, batch) > 2 * LIMIT
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: LIMIT)
  whole = grpo.make_grpo_step(mc, optimizer, schedule, kl_coef=0.001)   # a new jit: traced afresh
  with pytest.raises(train_state.UpdateMemoryError, match=r"16 rows x 256 tokens \(49152-token vocabulary\)") as e:
    jax.eval_shape(whole, state, batch)
  m, c = map(lambda s: None if s == "None" else int(s),
             str(e.value).split("set num_micro_batches=")[1].split(" (")[0].split(", logits_chunk_size="))
  assert ROWS % m == 0 and (m, c) != (1, None), e.value
  split = grpo.make_grpo_step(mc, optimizer, schedule, kl_coef=0.001, num_micro_batches=m, logits_chunk_size=c)
  jax.eval_shape(split, state, batch)   # traces: not refused
  compiled = _compiled_bytes(split, state, batch)
  planned = plan_lib.update_peak_bytes(
      mc, resident=sum(x.nbytes for x in jax.tree.leaves((state.params, state.moe_bias, state.opt_state,
                                                          state.ref_params))),
      params=sum(x.nbytes for x in jax.tree.leaves(state.params)), rows=ROWS, seq_len=T, num_micro_batches=m,
      logits_chunk=c)
  print(f"split {m} x chunk {c}: planned {planned:,} B, compiled {compiled:,} B")
  # The estimate errs high at this shape (1.25x XLA's count: the safe side), never far low.
  assert planned <= plan_lib.FIT_HEADROOM * LIMIT and 0.8 <= planned / compiled <= 1.3, (planned, compiled)
  assert compiled <= LIMIT


def test_fitting_update_split_is_whole_on_a_roomy_device_and_the_refusals_split_on_a_small_one(
    big_vocab, monkeypatch):
  mc, optimizer, schedule, state, batch = big_vocab
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: 64 << 30)
  assert train_state.fitting_update_split(mc, state, ROWS, T) == (1, None)
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: LIMIT)
  split = train_state.fitting_update_split(mc, state, ROWS, T)
  assert split is not None and split != (1, None) and ROWS % split[0] == 0, split
  with pytest.raises(train_state.UpdateMemoryError, match=rf"set num_micro_batches={split[0]}, logits_chunk_size={split[1]}"):
    train_state.refuse_update_that_cannot_fit(mc, state, ROWS, T, 1, None)
  train_state.refuse_update_that_cannot_fit(mc, state, ROWS, T, *split)   # the split it names is not refused
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: 1 << 20)
  assert train_state.fitting_update_split(mc, state, ROWS, T) is None   # 1 MiB holds no split: None, not a guess


def test_fit_update_split_prefers_fewer_micro_batches_then_larger_chunks():
  peak = lambda m, c: 100 // m + (c or 1000) // 8     # pylint: disable=unnecessary-lambda-assignment
  assert plan_lib.fit_update_split(peak, 8, 300) == (1, None)
  assert plan_lib.fit_update_split(peak, 8, 170) == (1, 512)
  assert plan_lib.fit_update_split(peak, 8, 100) == (2, 256)
  assert plan_lib.fit_update_split(peak, 8, 5) is None


def _stage_config(fit_memory: bool):
  config = tiny_grpo_config()
  config.tokenizer.vocab_size = VOCAB   # the planner's model: tiny width, a real vocabulary
  config.data.batch_size, config.rollout.num_samples = 4, 4
  config.data.length_buckets, config.rollout.max_new_tokens = (128,), 128
  config.grpo.fit_memory = fit_memory
  return config


def test_stage_picks_the_split_that_fits_or_says_what_to_set(monkeypatch):
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: LIMIT)
  config = _stage_config(fit_memory=True)
  mc = plan_lib.model_config_of(config)
  assert mc.vocab_size == VOCAB
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *args: warnings.append(msg % args))
  m, c = common.update_split(config, None, mc)
  p = plan_lib.plan(_with_split(config, m, c), {"data": 1}, "cpu-1", device_bytes=LIMIT, model_config=mc)
  assert (m, c) != (1, None) and p["peak"] <= plan_lib.FIT_HEADROOM * LIMIT, (m, c, p["peak"])
  assert "using num_micro_batches" in warnings[-1], warnings
  with pytest.raises(ValueError, match=rf"set --config.grpo.num_micro_batches={m} "
                                       rf"--config.grpo.logits_chunk_size={c}"):
    common.update_split(_stage_config(fit_memory=False), None, mc)
  # A roomy device keeps the configured split.
  monkeypatch.setattr(plan_lib, "device_memory_bytes", lambda device=None: 64 << 30)
  assert common.update_split(config, None, mc) == (1, None)


def _with_split(config, m, c):
  config = config.copy_and_resolve_references()
  config.grpo.num_micro_batches, config.grpo.logits_chunk_size = m, c
  return config

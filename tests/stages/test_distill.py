"""Logit distillation in the SFT step (forward KL at temperature tau, scaled by tau^2): the loss and
its gradient against float64 numpy, weight 0 is the plain SFT step bit for bit, a teacher equal to
the student gives KL 0, chunking and micro-batches change nothing, a vocabulary mismatch is
refused, the step on a mesh with a sharded teacher equals one device, and the SFT stage distils end to
end (a DeepSeek-MoE teacher, a Qwen2 student)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import r1
from configs import tiny_r1_zero
from r1 import sft as sft_lib
from r1 import train_state
from r1.model import Transformer, get_model_config, init_variables
from r1.stages import common, distill, pipeline, sft
from tests.child_env import child_env

# Different architectures, one vocabulary (512): a two-layer DeepSeek-V3 (MLA + MoE) and a Qwen2.
TEACHER = get_model_config("tiny_v3", num_hidden_layers=2)
STUDENT = get_model_config("tiny_qwen2")
TAU, WEIGHT = 2.0, 0.5
B, T = 4, 10


@pytest.fixture(scope="module")
def teacher_variables():
  # A confident teacher (its head scaled up) so that KL and its gradient are far from 0 at tau = 2.
  variables = init_variables(TEACHER, jax.random.key(0))
  params = dict(variables["params"], lm_head=variables["params"]["lm_head"] * 40.0)
  return dict(variables, params=params)


@pytest.fixture(scope="module")
def student_variables():
  return init_variables(STUDENT, jax.random.key(1))


def make_batch(seed=0, b=B):
  """Packed SFT rows: two examples per row, padding in row 0, responses in the second half."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(1, STUDENT.vocab_size, (b, T)).astype(np.int32)
  seg = np.ones((b, T), np.int32)
  seg[:, 6:] = 2
  seg[0, 8:] = 0
  positions = np.concatenate([np.arange(6), np.arange(4)])[None].repeat(b, 0).astype(np.int32)
  targets = np.roll(inputs, -1, 1)
  loss_mask = ((np.arange(T)[None] % 6 >= 2) & (seg > 0)).astype(np.int32)
  loss_mask[:, 5] = loss_mask[:, -1] = 0
  loss_mask[1, 2:4] = 0     # rows with different numbers of response tokens
  return {k: jnp.asarray(v) for k, v in dict(inputs=inputs, targets=targets, loss_mask=loss_mask,
                                             segment_ids=seg, positions=positions).items()}


# SGD with learning rate 1 and no clipping: the update is minus the gradient.
SGD = optax.sgd(1.0)
CONST = lambda step: jnp.float32(1.0)


def run_step(student_variables, batch, teacher_variables=None, *, optimizer=SGD, **kwargs):
  """One SFT step from a fresh copy of the student -> (params before, new state, metrics as floats)."""
  step = sft_lib.make_sft_step(STUDENT, optimizer, CONST, bias_update_rate=0.0, **kwargs)
  state = train_state.init_train_state(jax.tree.map(jnp.copy, student_variables), optimizer, with_reference=False)
  before = jax.tree.map(np.asarray, state.params)
  args = () if teacher_variables is None else (teacher_variables,)
  state, m = step(state, batch, *args)
  return before, state, {k: float(v) for k, v in m.items()}


def logits_of(config, variables, batch):
  return Transformer(config).apply(variables, batch["inputs"], batch["positions"], batch["segment_ids"]).logits


def log_softmax64(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_loss_and_logit_grad(student_logits, teacher_logits, batch, tau, weight):
  """float64: (nll, kl token mean, d(nll + weight tau^2 kl)/d student logits [B, T, V])."""
  m = np.asarray(batch["loss_mask"], np.float64)
  w = m / m.sum()  # grpo.loss_weights(..., "token-mean") on every response token
  logp = log_softmax64(student_logits)
  targets = np.asarray(batch["targets"])
  nll = -(w * np.take_along_axis(logp, targets[..., None], -1)[..., 0]).sum()
  log_pt, log_ps = log_softmax64(np.asarray(teacher_logits) / tau), log_softmax64(np.asarray(student_logits) / tau)
  kl_tok = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
  kl = (w * kl_tok).sum()
  onehot = np.eye(logp.shape[-1])[targets]
  # d nll / dz = w (softmax(z) - onehot); d tau^2 KL / dz = tau (p_S - p_T) at temperature tau.
  grad = w[..., None] * ((np.exp(logp) - onehot) + weight * tau * (np.exp(log_ps) - np.exp(log_pt)))
  return nll, kl, grad


def test_forward_kl_and_its_gradient_match_numpy():
  rng = np.random.default_rng(0)
  zt, zs = rng.normal(size=(2, 3, 7, 50)) * 3
  w = rng.uniform(size=(3, 7))
  kl = lambda s: TAU ** 2 * jnp.sum(jnp.asarray(w, jnp.float32) * sft_lib.forward_kl(jnp.asarray(zt, jnp.float32), s, TAU))
  value, grad = jax.value_and_grad(kl)(jnp.asarray(zs, jnp.float32))
  log_pt, log_ps = log_softmax64(zt / TAU), log_softmax64(zs / TAU)
  expected = TAU ** 2 * (w * (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)).sum()
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), TAU * w[..., None] * (np.exp(log_ps) - np.exp(log_pt)),
                             rtol=1e-4, atol=1e-7)


def test_step_loss_and_gradient_match_float64_numpy(student_variables, teacher_variables):
  batch = make_batch()
  before, state, m = run_step(student_variables, batch, teacher_variables, teacher_config=TEACHER,
                              distill_weight=WEIGHT, distill_temperature=TAU, logits_chunk_size=4,
                              num_micro_batches=2)
  student_logits, vjp = jax.vjp(lambda p: logits_of(STUDENT, {"params": p}, batch), student_variables["params"])
  teacher_logits = logits_of(TEACHER, teacher_variables, batch)
  nll, kl, logit_grad = numpy_loss_and_logit_grad(student_logits, teacher_logits, batch, TAU, WEIGHT)
  assert kl > 0.1  # the models disagree: the check below is not 0 == 0
  np.testing.assert_allclose(m["distill_kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(m["nll"], nll, rtol=1e-5)
  np.testing.assert_allclose(m["loss"], nll + WEIGHT * TAU ** 2 * kl, rtol=1e-5)
  # The step's gradient (SGD, lr 1: params before - after) is the model's vjp of the numpy logit
  # gradient: d loss / d params = (d logits / d params)^T d loss / d logits.
  (expected,) = vjp(jnp.asarray(logit_grad, jnp.float32))
  got = jax.tree.map(lambda a, b: a - np.asarray(b), before, state.params)
  for (path, g), e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    e = np.asarray(e)
    np.testing.assert_allclose(g, e, rtol=2e-3, atol=2e-3 * np.abs(e).max() + 1e-8, err_msg=str(path))
  np.testing.assert_allclose(m["grad_norm"], np.sqrt(sum((np.asarray(e, np.float64) ** 2).sum()
                                                         for e in jax.tree.leaves(expected))), rtol=1e-4)


def test_weight_zero_is_the_plain_sft_step_bit_for_bit(student_variables, teacher_variables):
  batch = make_batch(1)
  adam = optax.adamw(1e-3)
  _, plain, m_plain = run_step(student_variables, batch, optimizer=adam, logits_chunk_size=4)
  _, zero, m_zero = run_step(student_variables, batch, teacher_variables, optimizer=adam, teacher_config=TEACHER,
                             distill_weight=0.0, logits_chunk_size=4)
  assert m_plain == m_zero and "distill_kl" not in m_zero
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(zero)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_teacher_equal_to_the_student_gives_zero_kl_and_the_sft_gradient(student_variables):
  batch = make_batch(2)
  before, plain, m_plain = run_step(student_variables, batch)
  _, same, m_same = run_step(student_variables, batch, student_variables, teacher_config=STUDENT,
                             distill_weight=1.0, distill_temperature=TAU)
  assert abs(m_same["distill_kl"]) < 1e-6
  np.testing.assert_allclose(m_same["loss"], m_plain["loss"], rtol=1e-6)
  for p, a, b in zip(jax.tree.leaves(before), jax.tree.leaves(plain.params), jax.tree.leaves(same.params)):
    np.testing.assert_allclose(p - np.asarray(b), p - np.asarray(a), atol=1e-6)


def test_chunked_and_micro_batched_equal_one_pass(student_variables, teacher_variables):
  batch = make_batch(3)
  kwargs = dict(teacher_config=TEACHER, distill_weight=WEIGHT, distill_temperature=TAU)
  _, one, m_one = run_step(student_variables, batch, teacher_variables, **kwargs)
  for extra in ({"logits_chunk_size": 3}, {"num_micro_batches": 4}):
    _, other, m_other = run_step(student_variables, batch, teacher_variables, **kwargs, **extra)
    for k in ("loss", "nll", "distill_kl", "grad_norm", "entropy"):
      np.testing.assert_allclose(m_other[k], m_one[k], rtol=1e-5, err_msg=f"{k} with {extra}")
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(other.params)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, err_msg=str(extra))


def test_vocabulary_mismatch_and_bad_settings_raise():
  other_vocab = get_model_config("tiny_v3", num_hidden_layers=2, vocab_size=640)
  with pytest.raises(ValueError, match="teacher vocab_size 640 != student vocab_size 512"):
    sft_lib.make_sft_step(STUDENT, SGD, CONST, teacher_config=other_vocab, distill_weight=1.0)
  with pytest.raises(ValueError, match="needs a teacher_config"):
    sft_lib.make_sft_step(STUDENT, SGD, CONST, distill_weight=1.0)
  with pytest.raises(ValueError, match="distill_temperature=0"):
    sft_lib.make_sft_step(STUDENT, SGD, CONST, teacher_config=TEACHER, distill_weight=1.0, distill_temperature=0)


# --- The SFT stage ----------------------------------------------------------------------------------


def stage_config(tmp_path, **distill_section):
  """The quick tiny pipeline's SFT stage, cut down, with a Qwen2 student."""
  c = tiny_r1_zero.get_config("quick")
  c.tokenizer.corpus_size = 300
  c = pipeline.stage_config(c, 0, None)
  c.total_steps = 2
  c.eval.at_start = c.eval.at_end = False
  c.checkpoint.save_every = 100  # only the final step
  c.sft.batch_size = 4
  c.sft.seq_len = 192
  c.sft.logits_chunk_size = 64
  c.model.name = "tiny_qwen2"
  if distill_section:
    c.sft.distill.update(distill_section)   # the fields given; the rest keep their defaults
  return c


def test_sft_stage_distils_from_an_exported_teacher(tmp_path):
  # The teacher: a DeepSeek-MoE policy exported in the stage layout (<dir>/policy + <dir>/tokenizer)
  # with the tokenizer the student will use.
  base = stage_config(tmp_path)
  tokenizer, tokenizer_path = common.build_tokenizer(base, str(tmp_path / "teacher"))
  teacher_config = get_model_config("tiny_v3", num_hidden_layers=2, hidden_size=64, vocab_size=tokenizer.vocab_size)
  common.export_policy(r1.Policy(teacher_config, init_variables(teacher_config, jax.random.key(3))),
                       tokenizer_path, str(tmp_path / "teacher"))
  teacher_dir = str(tmp_path / "teacher" / "policy")

  config = stage_config(tmp_path, teacher_dir=teacher_dir, weight=0.5, temperature=2.0)
  config.tokenizer.path = str(tmp_path / "teacher" / "tokenizer")
  sft.run(config, str(tmp_path / "student"))
  with open(tmp_path / "student" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  kls = [r["distill_kl"] for r in rows if "distill_kl" in r]
  assert len(kls) == 2 and all(np.isfinite(kls)) and min(kls) > 0, rows
  # loss = nll + weight * tau^2 * distill_kl, as written.
  for r in rows:
    if "distill_kl" in r:
      np.testing.assert_allclose(r["loss"], r["nll"] + 0.5 * 4.0 * r["distill_kl"], rtol=1e-5)
  # The student kept its architecture; distillation off (the section missing, or weight 0) loads nothing.
  assert json.load(open(tmp_path / "student" / "policy" / "config.json"))["model_type"] == "qwen2"
  assert distill.load_teacher(base, None) is None
  assert distill.load_teacher(stage_config(tmp_path, teacher_dir=teacher_dir, weight=0.0), None) is None


def test_load_teacher_refuses_another_vocabulary_before_reading_weights(tmp_path):
  teacher_config = get_model_config("tiny_v3", num_hidden_layers=1, hidden_size=32)
  r1.save_hf_checkpoint(r1.Policy(teacher_config, init_variables(teacher_config, jax.random.key(0))),
                        str(tmp_path / "t"))
  config = stage_config(tmp_path, teacher_dir=str(tmp_path / "t"), weight=1.0)
  with pytest.raises(ValueError, match=r"teacher vocab_size 512 != student vocab_size 640"):
    distill.load_teacher(config, get_model_config("tiny_qwen2", vocab_size=640))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    distill.load_teacher(stage_config(tmp_path, teacher_dir=str(tmp_path), weight=1.0), STUDENT)


# --- On a mesh --------------------------------------------------------------------------------------

# Run in a subprocess with 8 fake CPU devices: the distilling step with the student's state and the
# teacher's variables sharded (data=2, fsdp=2, expert=2) equals the one-device step.
SHARDED_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import PartitionSpec
from r1 import sharding
from r1 import sft as sft_lib
from r1 import train_state
from r1.model import init_variables
from tests.stages import test_distill as td

assert jax.device_count() == 8
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "expert": 2})
teacher = init_variables(td.TEACHER, jax.random.key(0))
student = init_variables(td.STUDENT, jax.random.key(1))
batch = {k: np.asarray(v) for k, v in td.make_batch(b=16).items()}  # 8 shards x 2 micro-batches
opt = optax.adamw(1e-3, eps=1e-3)  # large eps: updates linear in small gradients (see grpo_sharded.py)
kw = dict(teacher_config=td.TEACHER, distill_weight=td.WEIGHT, distill_temperature=td.TAU, logits_chunk_size=4,
          num_micro_batches=2, bias_update_rate=0.0)

def run(mesh):
  state = train_state.init_train_state(jax.tree.map(jnp.copy, student), opt, with_reference=False)
  shardings, t, b = None, teacher, batch
  if mesh is not None:
    shardings = train_state.train_state_shardings(td.STUDENT, opt, mesh, with_reference=False)
    state = jax.device_put(state, shardings)
    t = jax.device_put(teacher, sft_lib.teacher_shardings(td.TEACHER, mesh))
    b = {k: jax.device_put(v, sharding.logical_to_sharding(PartitionSpec("batch", "length"), mesh))
         for k, v in batch.items()}
  step = sft_lib.make_sft_step(td.STUDENT, opt, td.CONST, **kw, state_shardings=shardings, mesh=mesh)
  state, m = step(state, b, t)
  return state, {k: float(v) for k, v in m.items()}, t

one, m1, _ = run(None)
eight, m8, t8 = run(mesh)
rel = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max() / max(np.abs(np.asarray(y)).max(), 1e-30))
                       for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
experts = t8["params"]["layers_1"]["mlp"]["experts_gate_proj"]
print("RESULT " + json.dumps({
    "metrics": {k: abs(m8[k] - m1[k]) / max(abs(m1[k]), 1e-6) for k in ("loss", "nll", "distill_kl", "grad_norm")},
    "params_rel": rel(eight.params, one.params),
    "teacher_experts_sharded": experts.sharding.shard_shape(experts.shape) != experts.shape}))
"""


def test_sharded_step_with_a_sharded_teacher_equals_one_device():
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], cwd=root, env=child_env(8), capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
  assert result["teacher_experts_sharded"], result
  assert all(v < 1e-4 for v in result["metrics"].values()), result
  assert result["params_rel"] < 1e-4, result

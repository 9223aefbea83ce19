"""What every training stage builds from its config: tokenizer, prompt sources, policy, optimizer.

Stages hand over through the workdir: each stage writes `<workdir>/policy/` (a Hugging Face
checkpoint: config.json + safetensors) and `<workdir>/tokenizer/` when it finishes, and the
next stage starts from them (`config.init.hf_dir`, `config.tokenizer.path`). A stage can also start
from the weights of any saved train state, finished or not (`config.init.checkpoint_dir`, a stage's
`<workdir>/checkpoints`, at `config.init.checkpoint_step` or the latest).
"""

import dataclasses
import os
import shutil
from typing import Any

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np

import r1
from r1 import metrics as metrics_lib
from r1 import optim
from r1 import sharding
from r1 import train_state
from r1.checkpoints.hf import CheckpointError
from r1.checkpoints.manager import TrainCheckpointer, restore_variables
from r1.data import splits, templates
from r1.model import abstract_variables, get_model_config, init_variables
from r1.tokenizer import load_tokenizer, train_sentencepiece

POLICY_DIR = "policy"
TOKENIZER_DIR = "tokenizer"
# What a tokenizer directory may hold: a SentencePiece model, or Hugging Face's files.
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


def _checkpoint_tokenizer_dir(checkpoint_dir: str) -> str:
  """The tokenizer of the stage whose checkpoints are in `checkpoint_dir` ("" if it has none):
  <stage workdir>/tokenizer, where a stage writes the tokenizer it trained."""
  path = os.path.join(os.path.dirname(os.path.normpath(checkpoint_dir)), TOKENIZER_DIR)
  return path if any(os.path.exists(os.path.join(path, n)) for n in _TOKENIZER_FILES) else ""


def build_tokenizer(config, workdir: str):
  """The stage's tokenizer and its file: config.tokenizer.path if set, else the tokenizer files of
  config.init.hf_dir, else those of the stage that wrote config.init.checkpoint_dir (its
  <workdir>/tokenizer), else a SentencePiece model trained on the task's templated prompts and
  worked solutions.

  The trained model is written to <workdir>/tokenizer/tokenizer.model once and reused, so a
  resumed run tokenises exactly as before.
  """
  # A real checkpoint ships its tokenizer: tokenizer.path, else the init checkpoint directory.
  path = config.tokenizer.path or config.init.hf_dir
  if not path and config.init.checkpoint_dir:
    path = _checkpoint_tokenizer_dir(config.init.checkpoint_dir)
  if path:
    return load_tokenizer(path), path
  target = os.path.join(workdir, TOKENIZER_DIR, "tokenizer.model")
  if is_chief() and not os.path.exists(target):
    template = templates.get_template(config.data.template)
    task = splits.make_task(config.data)
    corpus = []
    for i in range(config.tokenizer.corpus_size):
      ex = task.example(config.data.seed + 20_000, i)
      corpus.append(template.render_prompt(ex.prompt) + template.render_response(*task.worked_solution(ex)))
    train_sentencepiece(corpus, target[:-len(".model")], vocab_size=config.tokenizer.vocab_size)
  if jax.process_count() > 1:
    # Multi-host: process 0 trains, the others read its file (the workdir is shared, as multi-host
    # orbax checkpoints need), so every process tokenises alike. Unconditional: a process that
    # found the file already written must not skip the barrier the others wait at.
    multihost_utils.sync_global_devices("r1 tokenizer written")
  return load_tokenizer(target), target


def stop_tokens(config, tokenizer) -> list[int]:
  """EOS, plus `</answer>` when config.rollout.stop_at_answer (R1 templates end there)."""
  stops = [tokenizer.eos_id]
  if config.rollout.stop_at_answer:
    answer_end = tokenizer.token_to_id("</answer>")
    if answer_end is None:
      raise ValueError(f"rollout.stop_at_answer: '</answer>' is {len(tokenizer.encode('</answer>'))} tokens in this "
                       "vocabulary, and the sampler stops on single tokens: set --config.rollout.stop_at_answer=false "
                       "(a chat model ends its turn with its eos token)")
    stops.append(answer_end)
  return stops


def prompt_template(config, tokenizer_path: str | None) -> templates.Template:
  """config.data.template; "hf_chat" reads the chat template of the stage's tokenizer directory
  (a Qwen2.5 / R1-Distill student's own format)."""
  return templates.get_template(config.data.template, tokenizer_path=tokenizer_path)


def build_mesh(config):
  """The device mesh of config.mesh.shape (e.g. {"data": 2, "fsdp": 2, "expert": 2}; -1 takes the
  remaining devices) times config.mesh.dcn_data slices; None (one device, no sharding annotations)
  when every axis is 1."""
  shape = {k: int(v) for k, v in config.mesh.shape.items()}
  # Multi-slice: `data` spans mesh.dcn_data slices over the data-center network (sharding.make_mesh).
  dcn_data = int(config.mesh.dcn_data)
  if dcn_data == 1 and not any(v != 1 for v in shape.values()):
    if jax.process_count() > 1:
      raise ValueError(f"config.mesh.shape={shape} is one device, but this job has {jax.process_count()} processes "
                       f"and {jax.device_count()} devices: give a mesh over all of them, e.g. "
                       "--config.mesh.shape.data=-1")
    return None
  return sharding.make_mesh(shape, dcn_data=dcn_data)


def update_split(config, mesh, model_config) -> tuple[int, int | None]:
  """(num_micro_batches, logits_chunk_size) for the GRPO update: config.grpo's, unless the memory
  planner (r1.tools.plan: `model_config`, these devices' memory, this mesh) finds that its peak exceeds
  FIT_HEADROOM of a device. Then, with grpo.fit_memory, the fastest split that fits (logged);
  without it, or when no split fits, a ValueError that says what to set."""
  from r1.tools import plan as plan_lib  # pylint: disable=g-import-not-at-top  (the planner imports the library)
  gc = config.grpo
  configured = (gc.num_micro_batches, gc.logits_chunk_size)
  mesh_shape = {k: int(v) for k, v in mesh.shape.items()} if mesh is not None else {"data": 1}
  p = plan_lib.plan(config, mesh_shape, f"cpu-{jax.device_count()}", device_bytes=plan_lib.device_memory_bytes(),
                    model_config=model_config)
  limit = plan_lib.FIT_HEADROOM * p["device_bytes"]
  if p["peak"] <= limit:
    return configured
  planned = (f"the planned peak {plan_lib.format_bytes(p['peak'])} per device (train "
             f"{plan_lib.format_bytes(p['train_peak'])}, rollout {plan_lib.format_bytes(p['rollout_peak'])}) at "
             f"num_micro_batches={configured[0]}, logits_chunk_size={configured[1]} is over "
             f"{plan_lib.FIT_HEADROOM:.0%} of the {plan_lib.format_bytes(p['device_bytes'])} a device has")
  split = p["fitting_split"]
  if split is None:
    if p["peak"] <= p["device_bytes"]:
      logging.warning("%s; no split has more room: it may not fit", planned)
      return configured
    raise ValueError(f"{planned}, and no micro-batch / logits-chunk split fits: shard the model over more "
                     "devices (mesh fsdp/tensor), or use fewer prompts, samples or tokens")
  if not gc.fit_memory:
    if p["peak"] <= p["device_bytes"]:
      return configured
    raise ValueError(f"{planned}: set --config.grpo.num_micro_batches={split[0]} "
                     f"--config.grpo.logits_chunk_size={split[1]} (or --config.grpo.fit_memory=true)")
  logging.warning("%s: using num_micro_batches=%d, logits_chunk_size=%s instead (grpo.fit_memory)", planned, *split)
  return split


def data_shard(global_batch: int, mesh) -> dict:
  """The data pipeline's batch_size / process_index / process_count for this process's share of
  global batches of `global_batch` rows: the block of rows its devices hold
  (sharding.host_batch_rows). With one process, {"batch_size": global_batch}."""
  if jax.process_count() == 1:
    return {"batch_size": global_batch}
  start, stop = sharding.host_batch_rows(global_batch, mesh)
  rows = stop - start
  return {"batch_size": rows, "process_index": start // rows, "process_count": global_batch // rows}


def place_batch(batch: dict, mesh) -> dict:
  """Numpy batch arrays onto the mesh, split over the batch axes (unchanged without a mesh).

  Multi-host: `batch` holds this process's rows only (see data_shard); the arrays returned are
  the global batch (sharding.place_host_batch).
  """
  if mesh is None:
    return batch
  placed = {k: jax.device_put(v, sharding.logical_to_sharding(
      jax.sharding.PartitionSpec(*("batch", "length")[:np.ndim(v)]), mesh))
            for k, v in batch.items() if jax.process_count() == 1 or isinstance(v, jax.Array)}
  # Multi-host: host values are this process's rows; arrays already global (the overlapped
  # reference logprobs) were only moved to the batch layout above.
  placed.update(sharding.place_host_batch({k: v for k, v in batch.items() if k not in placed}, mesh))
  return {k: placed[k] for k in batch}


def host_rows(x, mesh) -> np.ndarray:
  """This process's rows of a global per-row array (all of it with one process), as numpy."""
  return np.asarray(x) if mesh is None else sharding.host_local_rows(x, mesh)


def gather_rows(x, mesh) -> np.ndarray:
  """Every process's rows of per-row host values, in global batch order (x with one process)."""
  return np.asarray(x) if mesh is None else sharding.gather_host_rows(x, mesh)


def is_chief() -> bool:
  """Whether this process writes the stage's files (reports, the exported policy, plots)."""
  return jax.process_index() == 0


def build_policy(config, tokenizer, mesh=None) -> r1.Policy:
  """The stage's starting policy, per config.init: hf_dir (a Hugging Face checkpoint directory),
  else checkpoint_dir (a stage's <workdir>/checkpoints: the params and balancing bias of its state
  at checkpoint_step, None for the latest), else random init of config.model.

  The model of a checkpoint_dir or random init is config.model with the tokenizer's vocabulary;
  with a mesh the weights are placed sharded by r1.sharding's rules.
  """
  overrides = dict(config.model.overrides)
  hf_dir, checkpoint_dir = config.init.hf_dir, config.init.checkpoint_dir
  if hf_dir and checkpoint_dir:
    raise ValueError(f"config.init.hf_dir={hf_dir!r} and config.init.checkpoint_dir={checkpoint_dir!r}: "
                     "set one of them (or neither, for random init)")
  if hf_dir:
    return r1.load_hf_checkpoint(hf_dir, mesh=mesh, **overrides)
  model_config = get_model_config(config.model.name, vocab_size=tokenizer.vocab_size, **overrides)
  if checkpoint_dir:
    return r1.Policy(model_config, restore_policy_variables(model_config, checkpoint_dir,
                                                            config.init.checkpoint_step, mesh))
  variables = init_variables(model_config, jax.random.key(config.seed))
  if mesh is not None:
    variables = jax.device_put(variables, sharding.variable_shardings(abstract_variables(model_config), mesh))
  return r1.Policy(model_config, variables)


def restore_policy_variables(model_config, checkpoint_dir: str, step: int | None = None, mesh=None) -> dict:
  """{"params", "moe_bias"?} of `model_config` from the train state a TrainCheckpointer saved in
  `checkpoint_dir` at `step` (None: the latest), on one device or sharded over `mesh`.

  Raises FileNotFoundError (no directory or checkpoint) or r1.checkpoints.hf.CheckpointError (a
  parameter missing or of another shape: the checkpoint is of another model or vocabulary).
  """
  abstract = abstract_variables(model_config)
  if mesh is not None:
    shardings = sharding.variable_shardings(abstract, mesh)
  else:
    shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]), nn.unbox(abstract))
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(abstract), shardings)
  try:
    return restore_variables(checkpoint_dir, target, step=step)
  except CheckpointError as e:
    raise CheckpointError(f"{e}. config.model and the tokenizer (vocab_size {model_config.vocab_size}) must be those "
                          "of the run that saved it (config.tokenizer.path: its tokenizer)") from e


def init_description(config) -> str:
  """Where the stage's starting policy comes from, for reports and provenance."""
  if config.init.hf_dir:
    return config.init.hf_dir
  checkpoint_dir = config.init.checkpoint_dir
  if checkpoint_dir:
    step = config.init.checkpoint_step
    if step is None and os.path.isdir(checkpoint_dir):  # The latest, as restore picks it.
      step = max((int(n) for n in os.listdir(checkpoint_dir) if n.isdigit()), default=None)
    return f"{checkpoint_dir}@step{step}"
  return f"random_init(model={config.model.name}, seed={config.seed})"


def export_policy(policy: r1.Policy, tokenizer_path: str | None, workdir: str) -> str:
  """Writes the stage's output: <workdir>/policy (HF format) and <workdir>/tokenizer/ (a copy of
  the tokenizer's files: a SentencePiece .model, or tokenizer.json + tokenizer_config.json).

  Multi-host: a collective. The weights are gathered to every process (safetensors are written
  whole) and process 0 writes; all return once the files exist.
  """
  out = os.path.join(workdir, POLICY_DIR)
  if jax.process_count() > 1:
    # One program replicates every leaf (process_allgather would compile one per leaf shape).
    mesh = jax.tree.leaves(policy.variables)[0].sharding.mesh
    replicated = jax.jit(lambda v: v, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    policy = r1.Policy(policy.config, jax.device_get(replicated(policy.variables)))
    if is_chief():
      _write_policy(policy, tokenizer_path, workdir, out)
    multihost_utils.sync_global_devices("r1 policy exported")
    return out
  _write_policy(policy, tokenizer_path, workdir, out)
  return out


def _write_policy(policy: r1.Policy, tokenizer_path: str | None, workdir: str, out: str) -> None:
  r1.save_hf_checkpoint(policy, out)
  if tokenizer_path:
    src_dir = tokenizer_path if os.path.isdir(tokenizer_path) else os.path.dirname(tokenizer_path)
    names = ([n for n in _TOKENIZER_FILES if os.path.exists(os.path.join(src_dir, n))]
             if os.path.isdir(tokenizer_path) else [os.path.basename(tokenizer_path)])
    dst_dir = os.path.join(workdir, TOKENIZER_DIR)
    os.makedirs(dst_dir, exist_ok=True)
    for name in names:
      src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
      if os.path.abspath(src) != os.path.abspath(dst):
        shutil.copyfile(src, dst)


def policy_of(model_config, state) -> r1.Policy:
  """The policy a train state holds (its own buffers: valid until the next donating update)."""
  variables = {"params": state.params, "moe_bias": state.moe_bias} if state.moe_bias else {"params": state.params}
  return r1.Policy(model_config, variables)


class StopRequested(Exception):
  """A stop (SIGTERM: TPU preemption) was requested while a phase of a step ran; the message says
  where. A stage raises it between phases and saves what it has finished."""


class _StopCheckedPolicy:
  """A policy whose `generate` first calls `check` (which raises StopRequested); everything else is
  the policy's own."""

  def __init__(self, policy: r1.Policy, check):
    self._policy, self._check = policy, check

  def generate(self, *args, **kwargs):
    self._check()
    return self._policy.generate(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._policy, name)


def stop_checked(policy: r1.Policy, check):
  """`policy`, with `check()` called before each `generate`: an evaluation samples batch by batch
  through it, so a stop requested during a long evaluation is seen at its next batch."""
  return _StopCheckedPolicy(policy, check)


def resume(config, workdir: str, state, batches):
  """Opens the stage's checkpoints and metrics; restores state and data position if a checkpoint
  exists. Returns (checkpointer, state, start step, metrics writer)."""
  ckpt = TrainCheckpointer(os.path.join(workdir, "checkpoints"), save_every=config.checkpoint.save_every,
                           keep=config.checkpoint.keep)
  ckpt.install_preemption_handler()
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(start, target_state=state, iterator=batches)
    print(f"resumed from step {start} ({ckpt.directory})")  # progress, not a library log: on the terminal
  # Lines up to `start` belong to the checkpointed run (metrics of step s are written before
  # checkpoint s); anything after it is dropped and written again.
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start + 1 if start else 0)
  return ckpt, state, start, writer


@dataclasses.dataclass
class TrainingSetup:
  """What a training stage (sft, grpo) builds before its step: see `training_setup`."""
  tokenizer: Any
  tokenizer_path: str
  template: templates.Template
  mesh: Any                   # None: one device
  policy: r1.Policy           # the starting policy (its variables now belong to `state`)
  optimizer: Any
  schedule: Any
  state: train_state.TrainState
  state_shardings: Any        # None without a mesh


def training_setup(config, workdir: str, *, with_reference: bool, updates_per_step: int = 1) -> TrainingSetup:
  """The tokenizer, prompt template, mesh and starting policy of a training stage, its optimizer
  (config.optimizer; warmup and schedule count the stage's steps, config.total_steps of them, of
  `updates_per_step` optimizer updates each) and its train state, placed by the mesh's shardings
  (with a frozen reference copy when `with_reference`)."""
  os.makedirs(workdir, exist_ok=True)
  tokenizer, tokenizer_path = build_tokenizer(config, workdir)
  mesh = build_mesh(config)
  policy = build_policy(config, tokenizer, mesh)
  o = config.optimizer
  optimizer, schedule = optim.make_optimizer(
      o.learning_rate, warmup_steps=o.warmup_steps, decay_steps=config.total_steps, schedule=o.schedule,
      weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm, b2=o.b2, updates_per_step=updates_per_step)
  state = train_state.init_train_state(policy.variables, optimizer, with_reference=with_reference)
  state_shardings = None
  if mesh is not None:
    state_shardings = train_state.train_state_shardings(policy.config, optimizer, mesh, with_reference=with_reference)
    state = jax.device_put(state, state_shardings)
  return TrainingSetup(tokenizer=tokenizer, tokenizer_path=tokenizer_path,
                       template=prompt_template(config, tokenizer_path), mesh=mesh, policy=policy, optimizer=optimizer,
                       schedule=schedule, state=state, state_shardings=state_shardings)


def stage_done(workdir: str) -> bool:
  """A stage whose exported policy exists has finished; the pipeline skips it."""
  return os.path.exists(os.path.join(workdir, POLICY_DIR, "config.json"))

"""Train-state checkpoints: an orbax `CheckpointManager` with the policies a long RL run needs.

What is saved, per step, under `directory/<step>/`:

  state/      the train state pytree (`ocp.args.StandardSave`): params, opt_state, reference params,
              MoE balancing bias, PRNG keys, step... Any pytree of jax/numpy arrays and Python
              scalars. Typed PRNG keys (`jax.random.key`) are stored as `jax.random.key_data(key)`
              (uint32[..., 2] for threefry) and re-wrapped on restore with the implementation of the
              key in the restore target, so a target with a key leaf gets a key leaf back.
  data/       the grain iterator position, one JSON file per process (`grain.checkpoint`), if an
              iterator was given to `save`.
  metadata/   a small JSON dict (config, eval metrics, anything JSON-serialisable), if given.
  metrics/    orbax's own record of `{best_metric: value}`, only on steps whose eval produced it.

Retention: the last `keep` checkpoints, plus (with `keep_best`) the one with the best `best_metric`
among the steps that recorded it, however old it is.

Starting a new stage from another run's checkpoint needs only its weights:
`restore_variables(directory, target)` reads the params and MoE balancing bias of a saved state
(orbax partial restore: optimizer state, reference, data position and keys are not read, so the
checkpoint may come from any optimizer) onto the target's shardings.

Preemption protocol (TPU VMs receive SIGTERM some seconds before they are taken away):

  ckpt = TrainCheckpointer(workdir / "checkpoints", save_every=100)
  ckpt.install_preemption_handler()         # SIGTERM now only sets a flag
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(start, target_state=state, iterator=it)  # target: fresh or abstract
  for step in range(start, total_steps):
    state, metrics = train_step(state, next(it))
    stop = ckpt.should_stop(step + 1)           # SIGTERM seen (on any host) or orbax's sync point
    # Every `save_every` steps, plus the last step and the step at which preemption was noticed.
    ckpt.save(step + 1, state, iterator=it, force=stop or step + 1 == total_steps)
    if stop:
      break
  ckpt.close()                                  # waits for the async write; exit 0 after this

The step saved is the number of updates already applied, so a resumed run starts its loop at
`latest_step()`. A step longer than the grace period can check `should_stop(step)` between its
phases too (r1.stages.grpo: after generation, after scoring, before each eval batch); stopped before
its update, it saves the previous step with the iterator set back to where that step left it
(`it.set_state(position)`, the position taken before the step drew its batch).

A second SIGTERM restores the previous handler and re-delivers the signal, so a stuck save can
still be killed. On several hosts `should_stop` all-gathers the flag, so all hosts stop at the
same step (a host that stopped alone would hang the others in the next collective); it also
honours `CheckpointManager.reached_preemption`, JAX's own preemption sync point, which is live
when `jax.distributed` runs with the preemption service.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Mapping, Sequence

from etils import epath
import flax.traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from r1.checkpoints.hf import CheckpointError

PyTree = Any

STATE, DATA, METADATA = "state", "data", "metadata"


class _SavesWithoutMetricsFilter(logging.Filter):
  """Drops orbax's warning that a save gave no metrics: most steps have no eval, and those saves
  are meant to carry none (only eval steps compete for `keep_best`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Requested `tracked_metric`; did not provide metrics")


# orbax logs through absl, whose records go to the "absl" Python logger.
logging.getLogger("absl").addFilter(_SavesWithoutMetricsFilter())


def _is_prng_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(x):
  """The PRNG implementation of a typed key array or of its `ShapeDtypeStruct`."""
  if isinstance(x, jax.Array):
    return jax.random.key_impl(x)
  impl = []  # `key_impl` only accepts arrays; a tracer of the abstract key is one.
  jax.eval_shape(lambda k: impl.append(jax.random.key_impl(k)) or (), x)
  return impl[0]


def _keys_to_data(state: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_prng_key(x) else x, state)


def _abstract_target(target: PyTree) -> PyTree:
  """Restore target: jax arrays -> `ShapeDtypeStruct` with their sharding, keys -> key data."""

  def leaf(x):
    if _is_prng_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  return jax.tree.map(leaf, target)


def _rewrap_keys(restored: PyTree, target: PyTree) -> PyTree:
  return jax.tree.map(
      lambda r, t: jax.random.wrap_key_data(r, impl=_key_impl(t)) if _is_prng_key(t) else r,
      restored, target)


class TrainCheckpointer:
  """Saves and restores train state, data-iterator position and metadata with orbax.

  Attributes:
    directory: where the step folders live.
    save_every: `save(step, ...)` writes when `step % save_every == 0` (or `force=True`).
  """

  def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int = 3,
               keep_best: bool = True, best_metric: str = "eval/pass@1",
               best_mode: str = "max", async_save: bool = True):
    """Opens (or creates) `directory`; existing checkpoints there are found, for resuming.

    Args:
      directory: checkpoint root (local path or any path orbax/etils understands, e.g. gs://).
      save_every: save period in steps, >= 1.
      keep: how many of the most recent checkpoints to keep, >= 1.
      keep_best: also keep the checkpoint with the best `best_metric`, however old.
      best_metric: key of `eval_metrics` (given to `save`) that ranks checkpoints.
      best_mode: "max" (accuracy, pass@1) or "min" (loss).
      async_save: write in a background thread; `save` returns once arrays are copied to host.
    """
    if save_every < 1:
      raise ValueError(f"save_every={save_every}: expected a period of at least 1 step")
    if keep < 1:
      raise ValueError(f"keep={keep}: expected to keep at least the latest checkpoint")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode={best_mode!r}: expected 'max' or 'min'")
    self.directory = os.fspath(directory)
    self.save_every = save_every
    self.best_metric = best_metric
    self._stop = threading.Event()
    self._previous_handlers: dict[int, Any] = {}

    policies = ocp.checkpoint_managers
    best_fn = lambda metrics: float(metrics[best_metric])
    preserve = [policies.LatestN(n=keep)]
    if keep_best:
      # BestN sorts ascending and keeps the tail, so "min" sorts in reverse.
      preserve.append(policies.BestN(get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                                     keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        # best_fn makes orbax record per-step metrics (and gives `best_step`); what is deleted is
        # decided by the preservation policy alone.
        best_fn=best_fn, best_mode=best_mode,
        preservation_policy=policies.AnyPreservationPolicy(preserve),
        enable_async_checkpointing=async_save, create=True)
    # grain's handler is imported lazily so that restoring only the state does not need grain.
    import grain  # pylint: disable=g-import-not-at-top
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler(),
                       METADATA: ocp.JsonCheckpointHandler()})
    self._grain_checkpoint = grain.checkpoint

  # --- Saving ---------------------------------------------------------------------------------

  def save(self, step: int, state: PyTree, *, iterator=None, metadata: Mapping | None = None,
           eval_metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
    """Saves `state` at `step` if `step % save_every == 0` or `force`; returns whether it did.

    Args:
      step: number of updates applied to `state` (the step a resumed run starts from).
      state: train-state pytree; typed PRNG keys are stored as their key data.
      iterator: a grain `DatasetIterator` whose position is saved with the state.
      metadata: small JSON-serialisable dict (config, eval results...).
      eval_metrics: eval results of this step; if `best_metric` is among them the step competes
        for "best" (see `keep_best`).
      force: save regardless of `save_every` (end of training, preemption).
    Returns:
      True if a save was started; False if not due or `step` is already saved (so a final
      forced save right after a periodic one is harmless).
    """
    if not force and step % self.save_every:
      return False
    if step in self._manager.all_steps():
      return False
    items = {STATE: ocp.args.StandardSave(_keys_to_data(state))}
    if iterator is not None:
      items[DATA] = self._grain_checkpoint.CheckpointSave(iterator)
    if metadata is not None:
      items[METADATA] = ocp.args.JsonSave(dict(metadata))
    metrics = None
    if eval_metrics is not None and self.best_metric in eval_metrics:
      metrics = {self.best_metric: float(eval_metrics[self.best_metric])}
    # force=True: the save period is ours (above), not orbax's save-decision policy.
    return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

  # --- Restoring ------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest saved step, or None if the directory holds no checkpoint."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric` (latest step if none recorded it)."""
    return self._manager.best_step()

  def all_steps(self) -> Sequence[int]:
    """Saved steps, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int | None = None, *, target_state: PyTree, iterator=None) -> PyTree:
    """Restores the state saved at `step` (default: latest) into the structure of `target_state`.

    Args:
      step: which checkpoint; None for `latest_step()`.
      target_state: a pytree like the saved one, concrete or abstract (`jax.ShapeDtypeStruct`,
        e.g. from `jax.eval_shape`). Each restored leaf gets the target leaf's dtype and sharding,
        so a sharded target restores sharded, reading only each host's shards.
      iterator: a grain iterator of the same pipeline; its position is set to the saved one.
    Returns:
      The restored state, with the tree structure of `target_state` (typed keys re-wrapped).
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint for step {step} in {self.directory}; saved steps: {self.all_steps()}")
    items = {STATE: ocp.args.StandardRestore(_abstract_target(target_state))}
    if iterator is not None:
      if not os.path.isdir(os.path.join(self.directory, str(step), DATA)):
        raise FileNotFoundError(
            f"checkpoint step {step} in {self.directory} has no data-iterator state; it was saved "
            "without `iterator=`")
      items[DATA] = self._grain_checkpoint.CheckpointRestore(iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return _rewrap_keys(restored[STATE], target_state)

  def metadata(self, step: int | None = None) -> dict | None:
    """The JSON metadata saved at `step` (default: latest), or None if there was none."""
    step = self.latest_step() if step is None else step
    if step is None or not os.path.isdir(os.path.join(self.directory, str(step), METADATA)):
      return None
    return dict(self._manager.restore(step, args=ocp.args.Composite(
        **{METADATA: ocp.args.JsonRestore()}))[METADATA])

  # --- Preemption -----------------------------------------------------------------------------

  def install_preemption_handler(self, signums: Sequence[int] = (signal.SIGTERM,)) -> None:
    """Makes `signums` set the stop flag instead of killing the process (main thread only)."""

    def handler(signum, frame):
      del frame
      if self._stop.is_set():  # Second signal: give up on a clean stop.
        signal.signal(signum, self._previous_handlers.get(signum, signal.SIG_DFL))
        os.kill(os.getpid(), signum)
        return
      self._stop.set()

    for signum in signums:
      self._previous_handlers[signum] = signal.signal(signum, handler)

  def uninstall_preemption_handler(self) -> None:
    """Puts back the handlers that `install_preemption_handler` replaced."""
    for signum, previous in self._previous_handlers.items():
      signal.signal(signum, previous)
    self._previous_handlers.clear()

  def request_stop(self) -> None:
    """Sets the stop flag, as the signal handler does (for loops with their own triggers)."""
    self._stop.set()

  def should_stop(self, step: int) -> bool:
    """Whether to save and exit now: a handled signal on any host, or orbax's preemption point.

    Call it at the same step on every host: with several processes it is a collective.
    """
    stop = self._stop.is_set()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      stop = bool(np.any(multihost_utils.process_allgather(np.int32(stop))))
    return stop or self._manager.reached_preemption(step)

  # --- Lifetime -------------------------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until pending async saves (and the deletions they trigger) are finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, releases orbax's threads and uninstalls signal handlers."""
    self._manager.wait_until_finished()
    self._manager.close()
    self.uninstall_preemption_handler()

  def __enter__(self) -> "TrainCheckpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def restore_variables(directory: str | os.PathLike, target: Mapping[str, PyTree], step: int | None = None
                      ) -> dict:
  """The `target` entries (e.g. params, moe_bias) of the train state saved by a TrainCheckpointer.

  Only those entries are read (orbax partial restore), so a checkpoint written with any optimizer,
  with or without a reference copy, gives the same policy weights.

  Args:
    directory: the TrainCheckpointer's directory (`<stage workdir>/checkpoints`).
    target: {state field: pytree of `jax.ShapeDtypeStruct` with a sharding}; each restored array
      gets its target's dtype and sharding (a sharded target restores sharded, reading only each
      host's shards). An empty field (a model without a balancing bias) is skipped.
    step: which checkpoint; None for the latest.
  Returns:
    {field: the restored pytree} for the non-empty fields of `target`.
  Raises:
    FileNotFoundError: no such directory, no checkpoint in it, or no checkpoint for `step`.
    CheckpointError: a target array missing from the checkpoint or saved with another shape.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"checkpoint directory {directory} does not exist (expected a stage's "
                            "<workdir>/checkpoints written by TrainCheckpointer)")
  target = {name: tree for name, tree in target.items() if jax.tree.leaves(tree)}
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_handlers={STATE: ocp.PyTreeCheckpointHandler()})
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; saved steps: {steps}")
    path = epath.Path(directory) / str(step) / STATE
    saved = flax.traverse_util.flatten_dict(ocp.PyTreeCheckpointHandler().metadata(path).tree, sep=".")
    problems = []
    for key, leaf in flax.traverse_util.flatten_dict(target, sep=".").items():
      if key not in saved:
        problems.append(f"{key}: missing")
      elif tuple(saved[key].shape) != tuple(leaf.shape):
        problems.append(f"{key}: shape {tuple(saved[key].shape)} != expected {tuple(leaf.shape)}")
    if problems:
      raise CheckpointError(f"checkpoint {path} does not match the model: " + "; ".join(problems[:8]) +
                            (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))
    restore = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                     partial_restore=True)
    return dict(manager.restore(step, args=ocp.args.Composite(**{STATE: restore}))[STATE])
  finally:
    manager.close()

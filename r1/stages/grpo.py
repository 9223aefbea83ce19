"""The GRPO stage: rollout -> reward -> group advantages -> fused update, with eval, checkpoints
and metrics.

The loop (`run`) is a short list of periodic actions over functions that return records:
`rollout` (generate, decode and score one batch of prompts: a round), `update` (the rounds of a
step, their rewards and the fused update: the new state and the step's metrics),
`periodic_eval`, `log_step` and `checkpoint`. They read the stage's fixed parts from a `Stage`
built once by `build`; the train state is passed to them and returned, never held.

Per step: draw B prompts; the sampler generates G completions each with the current params (the
train state's own buffers, no host copy); completions are decoded and scored by the configured
rewards; `grpo.make_grpo_step` normalises them within each group (`grpo.group_advantages`) and
makes the rollout's mu x M updates in one jitted program, at the rollout temperature. A run killed
at any point (SIGTERM included) resumes from its last checkpoint with the same next batch and the
same sampling seeds.

Preemption (SIGTERM sets the checkpointer's stop flag): the flag is checked after each rollout
round's generation and scoring, before each batch of an evaluation, and at the end of the step, so
a stop is seen within one phase rather than one step. Stopped before its update, the step is
dropped: the state of the previous step is saved with the data position from before the step
drew its prompts, and the resumed run draws them again. Stopped in the periodic eval, the updated
state is saved with the step's metrics (checkpoint metadata) and the resumed run evaluates it
first. The evaluation of the starting policy is kept in eval_before.json, so a resumed run
reports the same before/after as an uninterrupted one.

A NaN or inf reward is set to 0 and counted (`rewards/nonfinite`, with a warning naming the reward
and row: r1.rewards.registry). A step whose updates are all skipped by the train step (a
non-finite loss or gradient) counts towards grpo.max_skipped_updates: that many in a row stop the
run with an error.

Multi-host (every process runs this loop): each process reads its own rows of the global prompt
batch (common.data_shard), the sampler runs on the global batch, and each process decodes and
scores the completions on its own devices, which are those of its own prompts: a prompt's G
samples are rows b * G .. b * G + G - 1, so splitting [B * G] rows over the devices as the [B]
prompts were split keeps each group on the devices that scored it. Group advantages are then
computed inside the step where the rewards are, with no exchange of rewards or texts; only the step's
metrics gather every process's per-row rewards and lengths (a few numbers per row). Files are
written by process 0; checkpoints are multi-host orbax.
"""

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from absl import logging
import jax
import numpy as np

from r1 import grpo, metrics as metrics_lib, sampling, train_state
from r1 import reward_model as reward_model_lib
from r1.data import pipeline, splits
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.rewards import reflection as reflection_lib
from r1.stages import common, rollout

# Checkpoint metadata: the step's metrics and samples when it was saved before its periodic eval
# ran (a stop requested then), and the count of consecutive skipped updates.
PENDING_EVAL = "pending_eval"
SKIPPED_RUN = "consecutive_skipped_updates"


@dataclasses.dataclass
class Stage:
  """The GRPO stage's fixed parts, built once by `build`: what the loop's functions read."""
  config: Any
  workdir: str
  tokenizer: Any
  tokenizer_path: str
  template: Any
  stops: list[int]
  mesh: Any
  model_config: Any
  update: Callable            # grpo.make_grpo_step: (state, batch) -> (state, metrics), state donated
  reference_fn: Callable | None   # the reference forward alone, dispatched before the rewards
  reward_model: Any           # r1.reward_model.RewardModel or None (rules only)
  batches: Any                # the prompt iterator (grain; its position is checkpointed)
  shard: dict                 # this process's share of each global batch (common.data_shard)
  ckpt: Any                   # r1.checkpoints.manager.TrainCheckpointer
  writer: Any                 # r1.metrics.MetricsWriter
  progress: Any               # r1.metrics.Progress

  def check_stop(self, step: int, where: str) -> None:
    """Raises common.StopRequested(where) if a stop was requested; `step`: updates applied. With
    several processes a collective: every process checks at the same points."""
    if self.ckpt.should_stop(step):
      raise common.StopRequested(where)


def build(config, workdir: str) -> tuple[Stage, train_state.TrainState, int, dict]:
  """The stage and its train state, resumed from the last checkpoint if there is one. Returns
  (stage, state, start step, the checkpoint's metadata: {} for a fresh run)."""
  gc = config.grpo
  # Warmup, decay and the reference refresh count rollout steps (mu x M updates each).
  setup = common.training_setup(config, workdir, with_reference=gc.kl_coef > 0,
                                updates_per_step=gc.num_iterations * gc.num_mini_batches)
  tokenizer, template, mesh, state = setup.tokenizer, setup.template, setup.mesh, setup.state
  mc = setup.policy.config
  num_micro_batches, logits_chunk_size = common.update_split(config, mesh, mc)
  temperature = config.rollout.temperature
  update = grpo.make_grpo_step(
      mc, setup.optimizer, setup.schedule, clip_eps=gc.clip_eps, clip_eps_high=gc.clip_eps_high, kl_coef=gc.kl_coef,
      loss_agg=gc.loss_agg, max_completion_length=config.rollout.max_new_tokens, temperature=temperature,
      group_size=config.rollout.num_samples, scale_by_std=gc.scale_by_std, num_iterations=gc.num_iterations,
      num_mini_batches=gc.num_mini_batches, num_micro_batches=num_micro_batches, shuffle_seed=config.seed,
      tis_cap=gc.tis_cap, ref_update_every=gc.ref_update_every, bias_update_rate=gc.bias_update_rate,
      logits_chunk_size=logits_chunk_size, state_shardings=setup.state_shardings, mesh=mesh)

  # This process's rows of each global batch of config.data.batch_size prompts (all of them with
  # one process).
  shard = common.data_shard(config.data.batch_size, mesh)
  data = pipeline.rl_prompt_dataset(splits.prompt_source(config.data, "train"), tokenizer, template,
                                    seed=config.seed, length_buckets=tuple(config.data.length_buckets), **shard)
  batches = iter(data)

  # R1 2.3.4: a model-based reward on top of the rules ("RL for all scenarios"); None: rules only.
  reward_model = reward_model_lib.from_stage_config(config, mc, mesh)

  ckpt, state, start, writer = common.resume(config, workdir, state, batches)
  saved = (ckpt.metadata(start) if start else None) or {}
  if saved.get(PENDING_EVAL) is not None:
    # Step `start` was saved before its periodic eval ran: its metrics line is written (with the
    # eval) by `run`, so the line the writer kept is dropped too.
    writer.close()
    writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  # The reference forward is dispatched right after generation and runs on the device while the
  # host decodes and scores (JAX dispatch is asynchronous); the step then skips it.
  # Same temperature and pieces as the step's own reference forward: the same bits.
  reference_fn = grpo.make_reference_logprobs_fn(
      mc, temperature=temperature, num_micro_batches=num_micro_batches * gc.num_mini_batches,
      logits_chunk_size=logits_chunk_size, mesh=mesh) if gc.kl_coef else None
  stage = Stage(config=config, workdir=workdir, tokenizer=tokenizer, tokenizer_path=setup.tokenizer_path,
                template=template, stops=common.stop_tokens(config, tokenizer), mesh=mesh, model_config=mc, update=update,
                reference_fn=reference_fn, reward_model=reward_model, batches=batches, shard=shard, ckpt=ckpt,
                writer=writer, progress=metrics_lib.Progress(config.total_steps,
                                                             every_seconds=config.log.progress_seconds))
  return stage, state, start, saved


def evaluate(stage: Stage, state, step: int) -> dict:
  """The held-out evaluation of the state's policy (config.eval); a stop requested during it is
  seen before its next batch (common.StopRequested)."""
  policy = common.stop_checked(common.policy_of(stage.model_config, state),
                               lambda: stage.check_stop(step, f"eval at step {step}"))
  return protocol.evaluate_config(stage.config, policy, stage.tokenizer, stage.template, stage.stops, mesh=stage.mesh)


def update(stage: Stage, state, rounds: list[dict]) -> tuple[Any, dict, dict, float]:
  """The step's batch from its rounds (rewards, the sampler's logprobs, the reference), and the
  fused update (which computes the group advantages and pi_old). Returns (new state, the step's
  device metrics, the kept round, the update's seconds)."""
  config, g = stage.config, stage.config.rollout.num_samples
  rnd, ref_logprobs = rollout.take_groups_and_reference(rounds, stage.shard["batch_size"], g,
                                                        config.rollout.dynamic_sampling)
  prompt_tokens, prompt_mask = rollout.pad_host_prompts(rnd["prompts"])
  # The sampler's logprobs go in as what they are: the train/inference mismatch is measured
  # against them; pi_old is the training forward's (the step's first forward).
  gb = rollout.grpo_batch(prompt_tokens, prompt_mask, rnd["completions"],
                          rollout.loss_mask(config, rnd["mask"], rnd["stopped"]), rnd["logprobs"], g)
  if ref_logprobs is not None:
    gb["ref_logprobs"] = ref_logprobs
  gb["rewards"] = np.asarray(rnd["total"], np.float32)
  t = time.perf_counter()
  state, step_metrics = stage.update(state, common.place_batch(gb, stage.mesh))
  step_metrics = jax.device_get(step_metrics)
  return state, step_metrics, rnd, time.perf_counter() - t


def step_metrics(stage: Stage, rounds: list[dict], rnd: dict, device_metrics: dict, times: dict) -> dict:
  """The step's metrics line, over the global batch (every process's rows; a no-op with one
  process): rewards and lengths (TRL's names), reflection words, the update's, timings (`times`:
  seconds of generate, reward, update and the step), compile counts."""
  config, mesh, g = stage.config, stage.mesh, stage.config.rollout.num_samples
  components = {k: common.gather_rows(v, mesh) for k, v in rnd["components"].items()}
  total, lengths, stopped = (common.gather_rows(rnd[k], mesh) for k in ("total", "lengths", "stopped"))
  m = metrics_lib.rollout_metrics(components, total, g, lengths, config.rollout.max_new_tokens, stopped)
  if "accuracy" in components:
    m["accuracy"] = float(components["accuracy"].mean())
  # R1's "aha" signal over training: the share of completions with a reflective word (wait,
  # verify, ...) and each word's mean count, as the eval reports them.
  reflective = {w: common.gather_rows(c, mesh) for w, c in reflection_lib.reflection_counts(rnd["texts"]).items()}
  m["reflection/any"] = float((reflective.pop("total") > 0).mean())
  m.update({f"reflection/{w}": float(c.mean()) for w, c in reflective.items()})
  m.update({k: float(v) for k, v in device_metrics.items()})
  m.update({"time/generate": times["generate"], "time/reward": times["reward"],
            "time/update": times["update"], "time/step": times["step"], "rollout/rounds": len(rounds),
            # Rows of every round whose reward had a NaN or inf (set to 0): registry.zero_nonfinite.
            "rewards/nonfinite": float(sum(common.gather_rows(r["nonfinite"], mesh).sum() for r in rounds)),
            "sampler/tokens_per_s": float(sum(common.gather_rows(r["lengths"], mesh).sum() for r in rounds))
                                    / max(times["generate"], 1e-9),
            "compiles/prefill": sampling.compile_count()["prefill"],
            "compiles/decode": sampling.compile_count()["decode"]})
  return m


def train_step(stage: Stage, state, step: int) -> tuple[Any, dict, list[str]]:
  """One GRPO step: rollouts, rewards, the update. Returns (state, metrics, sample texts); raises
  common.StopRequested before the update (the state is then that of `step` updates)."""
  t0 = time.perf_counter()
  rounds, times = rollout.rollout_rounds(stage, state, step)
  state, device_metrics, rnd, times["update"] = update(stage, state, rounds)
  times["step"] = time.perf_counter() - t0
  m = step_metrics(stage, rounds, rnd, device_metrics, times)
  return state, m, rnd["texts"][:stage.config.log.num_samples]


def periodic_eval(stage: Stage, state, done: int) -> dict | None:
  """The eval due after `done` steps (config.eval.every_steps; not the last step, whose eval is the
  final one) as scalars, or None; may raise common.StopRequested."""
  config = stage.config
  if config.eval.every_steps and done % config.eval.every_steps == 0 and done < config.total_steps:
    return report_lib.eval_scalars(evaluate(stage, state, done))
  return None


def log_step(stage: Stage, done: int, m: dict, texts, eval_metrics: dict | None) -> None:
  """Writes the step's metrics (with its eval's) and, every log.samples_every steps, its samples."""
  m = dict(m, **eval_metrics) if eval_metrics else m
  stage.writer.write(done, m)
  if stage.config.log.samples_every and done % stage.config.log.samples_every == 0:
    # Process 0's texts (the writer writes on process 0 only): the first rows of the batch.
    stage.writer.write_texts(done, "samples", texts)
  stage.progress.update(done, m)


def checkpoint(stage: Stage, state, step: int, skipped_run: int, *, force: bool, eval_metrics=None,
               pending_eval=None) -> None:
  """Saves `state` as step `step` (every checkpoint.save_every steps, or `force`), with the data
  position, the skipped-update count and, for a step stopped in its eval, what its log still owes."""
  metadata = {SKIPPED_RUN: skipped_run}
  if pending_eval is not None:
    metadata[PENDING_EVAL] = pending_eval
  stage.ckpt.save(step, state, iterator=stage.batches, metadata=metadata, eval_metrics=eval_metrics, force=force)


def _too_many_skipped(stage: Stage, done: int, m: dict, skipped_run: int) -> RuntimeError:
  gc = stage.config.grpo
  return RuntimeError(
      f"GRPO step {done}: the update was skipped for {skipped_run} steps in a row (a non-finite loss or "
      f"gradient: loss {m['loss']}, grad_norm {m['grad_norm']}; rewards/nonfinite {m['rewards/nonfinite']}), "
      f"so the policy has not changed since step {done - skipped_run}; stopping "
      f"(grpo.max_skipped_updates={gc.max_skipped_updates}). The steps' metrics are in "
      f"{os.path.join(stage.workdir, metrics_lib.METRICS_FILE)}; the last checkpoint is step "
      f"{stage.ckpt.latest_step()}.")


def run(config, workdir: str) -> dict:
  """Trains config.total_steps GRPO steps in `workdir`; returns {"before": report, "after": report}
  ("after" only when the run finished: a preempted run returns what it had)."""
  stage, state, start, saved = build(config, workdir)
  pending = saved.get(PENDING_EVAL)
  # Consecutive steps whose update was skipped (non-finite loss or gradient), across restarts.
  skipped_run = int(saved.get(SKIPPED_RUN, 0))
  max_skipped = config.grpo.max_skipped_updates

  reports = {}
  try:
    if config.eval.at_start:
      before, reused = _start_evaluation(
          workdir, start, len(protocol.load_dataset(config, "held_out")), config.eval.k,
          lambda: evaluate(stage, state, 0), lambda: _previous_evaluation(stage, state))
      if before is not None:
        reports["before"] = before
        if start == 0:  # A resumed run kept this line; a run from step 0 starts its metrics afresh.
          stage.writer.write(0, report_lib.eval_scalars(before))
        if not reused:  # The previous stage printed it.
          print(report_lib.format_table(before))
  except common.StopRequested as stop:
    logging.warning("preemption requested during the %s: nothing to save yet, exiting", stop)
    stage.ckpt.close()
    stage.writer.close()
    return reports

  stopped_early = False
  try:
    if pending is not None:
      log_step(stage, start, pending["metrics"], pending["texts"], periodic_eval(stage, state, start))
    for step in range(start, config.total_steps):
      # Where the data stood before this step drew its prompts: a step stopped before its update
      # is saved as the previous one, and its resumed run must draw the same prompts again.
      position = stage.batches.get_state()
      try:
        state, m, texts = train_step(stage, state, step)
      except common.StopRequested as stop:
        stage.batches.set_state(position)
        if step > 0:  # At step 0 there is nothing to save: a rerun starts afresh, identically.
          checkpoint(stage, state, step, skipped_run, force=True)
        logging.warning("preemption requested during the %s: saved step %d, exiting", stop, step)
        stopped_early = True
        break
      done = step + 1
      # A step whose every update was skipped left the policy as it was; many in a row mean it
      # will not move again (a diverged policy, a broken loss): stop and say so.
      skipped_run = skipped_run + 1 if m["skipped"] >= config.grpo.num_iterations else 0
      if max_skipped and skipped_run >= max_skipped:
        stage.writer.write(done, m)
        stage.writer.close()
        raise _too_many_skipped(stage, done, m, skipped_run)
      try:
        eval_metrics = periodic_eval(stage, state, done)
      except common.StopRequested as stop:
        # The update is applied: save it, with what the step still owes its log.
        checkpoint(stage, state, done, skipped_run, force=True, pending_eval={"metrics": m, "texts": list(texts)})
        logging.warning("preemption requested during the %s: saved step %d, exiting", stop, done)
        stopped_early = True
        break
      log_step(stage, done, m, texts, eval_metrics)
      stop = stage.ckpt.should_stop(done)
      checkpoint(stage, state, done, skipped_run, eval_metrics=eval_metrics, force=stop or done == config.total_steps)
      if stop:
        logging.warning("preemption requested: saved step %d, exiting", done)
        stopped_early = True
        break
    if not stopped_early:
      reports["after"] = evaluate(stage, state, config.total_steps)
  except common.StopRequested as stop:
    # In the deferred eval of a resumed step or the final eval: their step is already saved.
    logging.warning("preemption requested during the %s: exiting (the last checkpoint is step %s)", stop,
                    stage.ckpt.latest_step())
    stopped_early = True
  finally:
    stage.ckpt.close()

  if not stopped_early:
    stage.writer.write(config.total_steps, report_lib.eval_scalars(reports["after"], prefix="final_eval/"))
    print(report_lib.format_table(reports["after"]))
    if common.is_chief():
      report_lib.write_report(os.path.join(workdir, report_lib.REPORT_FILE), reports)
    common.export_policy(common.policy_of(stage.model_config, state), stage.tokenizer_path, workdir)
  stage.writer.close()
  if common.is_chief():
    metrics_lib.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"))
  return reports


def _previous_evaluation(stage: Stage, state) -> dict | None:
  """The final evaluation the stage that exported config.init.hf_dir made of that policy, when it is
  this stage's evaluation of its starting policy (`state`'s, at step 0): the same bits, prompts and
  protocol (protocol.reuse_key). None otherwise."""
  config = stage.config
  hf_dir = config.init.hf_dir
  path = os.path.join(os.path.dirname(os.path.normpath(hf_dir)), report_lib.REPORT_FILE) if hf_dir else ""
  report = report_lib.read_report_if_any(path) if path else None
  if report is None:
    return None
  key = report.pop(report_lib.REUSE_KEY, None)
  policy = common.policy_of(stage.model_config, state)
  if key is None or key != protocol.reuse_key(config, policy, stage.tokenizer, stage.template, stage.stops):
    return None
  print(f"eval: the starting policy is the one {path} evaluated, with the same protocol: not evaluating it again")
  return report


def _start_evaluation(workdir: str, start: int, n_eval: int, k: int, evaluate, reuse) -> tuple[dict | None, bool]:
  """The evaluation of the stage's starting policy and whether it is another stage's: read from
  <workdir>/eval_before.json, where the first process to run it wrote it, else the previous stage's
  evaluation of the same policy (`reuse()`, None when there is none), else run now (`evaluate()`),
  and written there; None for a run resumed past step 0 without that file (the starting policy is
  gone: the report will lack it).

  A preempted run resumes with this file, so its report compares the same 'before' as an
  uninterrupted run's. A file of another protocol (n_eval, k) is evaluated again at step 0, and
  past it raises ValueError (before and after would not compare).
  """
  path = os.path.join(workdir, report_lib.BEFORE_FILE)
  report = report_lib.read_report_if_any(path)   # A damaged file counts as missing.
  if report is not None:
    metrics = report["datasets"]["held_out"]
    if (metrics["n_eval"], metrics["k"]) == (n_eval, k):
      return report, False
    problem = (f"{path}: evaluated {metrics['n_eval']} problems x k={metrics['k']}, this run's eval is {n_eval} x "
               f"k={k} (config.eval.num_examples, config.eval.k)")
    if start:
      raise ValueError(f"{problem}; resumed at step {start}, the starting policy cannot be evaluated again: "
                       "resume with the eval config it was made with")
    logging.warning("%s: evaluating the starting policy again", problem)
  elif start:
    logging.warning("%s: no (readable) evaluation of the starting policy, and the run resumes at step %d: its "
                    "report will have no 'before' (rerun the stage from step 0 for one)", path, start)
    return None, False
  report = reuse()
  reused = report is not None
  if not reused:
    report = evaluate()
  if common.is_chief():
    report_lib.write_report(path, report)
  return report, reused

"""The GRPO stage: rollout -> reward -> group advantages -> fused update, with eval, checkpoints
and metrics.

Per step: draw B prompts; the sampler generates G completions each with the current params (the
train state's own buffers, no host copy); completions are decoded and scored by the configured
rewards; `grpo.group_advantages` normalises within each group; `train_step.make_grpo_step` runs
the paper's mu updates. A run killed at any point (SIGTERM included) resumes from its last
checkpoint with the same next batch and the same sampling seeds.

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
prompts were split keeps each group on the process that read its prompt. Group advantages are
then computed where the rewards are, with no exchange of rewards or texts; only the step's
metrics gather every process's per-row rewards and lengths (a few numbers per row). Files are
written by process 0; checkpoints are multi-host orbax.
"""

import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from r1 import grpo, metrics as metrics_lib, optim, sampling, sharding, train_step
from r1.data import pipeline, splits
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.rewards import reflection as reflection_lib
from r1.rewards import registry
from r1.rewards import reward_model as reward_model_lib
from r1.train import common, rollout

# Checkpoint metadata: the step's metrics and samples when it was saved before its periodic eval
# ran (a stop requested then), and the count of consecutive skipped updates.
PENDING_EVAL = "pending_eval"
SKIPPED_RUN = "consecutive_skipped_updates"


def sampling_seed(config, step: int) -> int:
  """The rollout seed of `step`: a function of (seed, step) so a resumed run samples the same."""
  return (int(config.seed) * 1_000_003 + step) % (2**31 - 1)


def pad_host_prompts(prompts) -> tuple[np.ndarray, np.ndarray]:
  """sampling.pad_prompts of this process's prompts, at the width of the global batch: the widest
  process's bucket (with one process, sampling.pad_prompts itself)."""
  return sharding.pad_to_widest_process(*sampling.pad_prompts(prompts))


def run(config, workdir: str) -> dict:
  """Trains config.total_steps GRPO steps in `workdir`; returns {"before": report, "after": report}
  ("after" only when the run finished: a preempted run returns what it had)."""
  os.makedirs(workdir, exist_ok=True)
  tokenizer, tokenizer_path = common.build_tokenizer(config, workdir)
  template = common.prompt_template(config, tokenizer_path)
  stops = common.stop_tokens(config, tokenizer)
  mesh = common.build_mesh(config)
  policy = common.build_policy(config, tokenizer, mesh)
  mc = policy.config
  g, n = config.rollout.num_samples, config.rollout.max_new_tokens
  o, gc = config.optimizer, config.grpo
  max_skipped = gc.max_skipped_updates

  optimizer, schedule = optim.make_optimizer(
      o.learning_rate, warmup_steps=o.warmup_steps, decay_steps=config.total_steps, schedule=o.schedule,
      weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm, b2=o.b2)
  state = train_step.init_train_state(policy.variables, optimizer, with_reference=gc.kl_coef > 0)
  state_shardings = None
  if mesh is not None:
    state_shardings = train_step.train_state_shardings(mc, optimizer, mesh, with_reference=gc.kl_coef > 0)
    state = jax.device_put(state, state_shardings)
  num_micro_batches, logits_chunk_size = common.update_split(config, mesh, mc)
  update = train_step.make_grpo_step(
      mc, optimizer, schedule, clip_eps=gc.clip_eps, clip_eps_high=gc.get("clip_eps_high"), kl_coef=gc.kl_coef,
      loss_agg=gc.loss_agg, num_iterations=gc.num_iterations, num_micro_batches=num_micro_batches,
      ref_update_every=gc.ref_update_every, bias_update_rate=gc.bias_update_rate, group_size=g,
      logits_chunk_size=logits_chunk_size, state_shardings=state_shardings, mesh=mesh)

  # This process's rows of each global batch of config.data.batch_size prompts (all of them with
  # one process).
  shard = common.data_shard(config.data.batch_size, mesh)
  data = pipeline.rl_prompt_dataset(splits.prompt_source(config.data, "train"), tokenizer, template,
                                    seed=config.seed, length_buckets=tuple(config.data.length_buckets), **shard)
  batches = iter(data)

  # R1 2.3.4: a model-based reward on top of the rules ("RL for all scenarios"); None: rules only.
  reward_model = reward_model_lib.from_stage_config(config, mc, mesh)
  rm_config = config.get("reward_model") or {}

  ckpt, state, start, writer = common.resume(config, workdir, state, batches)
  saved = (ckpt.metadata(start) if start else None) or {}
  pending = saved.get(PENDING_EVAL)
  if pending is not None:
    # Step `start` was saved before its periodic eval ran: its metrics line is written (with the
    # eval) below, so the line the writer kept is dropped too.
    writer.close()
    writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  # Consecutive steps whose update was skipped (non-finite loss or gradient), across restarts.
  skipped_run = int(saved.get(SKIPPED_RUN, 0))
  progress = metrics_lib.Progress(config.total_steps, every_seconds=config.log.progress_seconds)

  def current_policy():
    return common.policy_of(mc, state)

  def check_stop(step: int, where: str) -> None:
    """Raises common.StopRequested(where) if a stop was requested; `step`: updates applied. With
    several processes a collective: every process checks at the same points."""
    if ckpt.should_stop(step):
      raise common.StopRequested(where)

  def evaluate(step: int) -> dict:
    # Checked before each eval batch, so a stop requested in a long eval is seen within a batch.
    stoppable = common.stop_checked(current_policy(), lambda: check_stop(step, f"eval at step {step}"))
    return protocol.evaluate_config(config, stoppable, tokenizer, template, stops, mesh=mesh)

  def save(step: int, *, force: bool, eval_metrics=None, pending_eval=None) -> None:
    metadata = {SKIPPED_RUN: skipped_run}
    if pending_eval is not None:
      metadata[PENDING_EVAL] = pending_eval
    ckpt.save(step, state, iterator=batches, metadata=metadata, eval_metrics=eval_metrics, force=force)

  reports = {}
  try:
    n_eval = len(protocol.load_dataset(config, "held_out"))
    before, reused = (_start_evaluation(workdir, start, n_eval, config.eval.k, lambda: evaluate(0),
                                        lambda: _previous_evaluation(config, policy, tokenizer, template, stops))
                      if config.eval.at_start else (None, False))
    if before is not None:
      reports["before"] = before
      if start == 0:  # A resumed run kept this line; a run from step 0 starts its metrics afresh.
        writer.write(0, report_lib.eval_scalars(before))
      if not reused:  # The previous stage printed it.
        print(report_lib.format_table(before))
  except common.StopRequested as stop:
    logging.warning("preemption requested during the %s: nothing to save yet, exiting", stop)
    ckpt.close()
    writer.close()
    return reports

  timing = {}
  # The reference forward is dispatched right after generation and runs on the device while the
  # host decodes and scores (JAX dispatch is asynchronous); the step then skips it.
  reference_fn = train_step.make_reference_logprobs_fn(
      mc, num_micro_batches=num_micro_batches, logits_chunk_size=logits_chunk_size,
      mesh=mesh) if gc.kl_coef else None

  def loss_mask_of(mask, stopped):
    # DAPO overlong filtering: truncated completions keep their reward in the group statistics but
    # contribute no loss.
    return mask & stopped[:, None] if config.rollout.overlong == "mask" else mask

  def rollout_round(step, batch, seed, dispatch_reference=False):
    """G completions for each prompt of `batch`, decoded and scored (host-side numpy); with
    dispatch_reference, also the (asynchronous) reference logprobs of the round's GRPO layout.
    Raises common.StopRequested after generation or scoring when a stop was requested."""
    t = time.perf_counter()
    # Multi-host: this process's prompts; the sampler places them as its rows of the global batch,
    # and host_rows reads back the completions of exactly those prompts (module docstring).
    prompts = [list(row[m]) for row, m in zip(batch["prompt_tokens"], batch["prompt_mask"])]
    out = sampling.generate(mc, current_policy().variables, prompts, num_samples=g, max_new_tokens=n,
                            temperature=config.rollout.temperature, top_p=config.rollout.top_p,
                            top_k=config.rollout.top_k, stop_tokens=stops, seed=seed, mesh=mesh)
    rows = lambda x: common.host_rows(x, mesh)  # pylint: disable=unnecessary-lambda-assignment
    rnd = {"prompts": prompts, "examples": list(batch["examples"]), "completions": rows(out.tokens),
           "mask": rows(out.mask), "lengths": rows(out.lengths), "stopped": rows(out.stopped),
           "logprobs": rows(out.logprobs)}
    timing["generate"] = timing.get("generate", 0.0) + time.perf_counter() - t
    check_stop(step, f"rollout of step {step + 1}")
    if dispatch_reference and reference_fn is not None:
      layout = rollout.grpo_batch(*pad_host_prompts(prompts), rnd["completions"],
                                  loss_mask_of(rnd["mask"], rnd["stopped"]), None, g)
      layout = {k: layout[k] for k in ("tokens", "positions", "segment_ids")}
      rnd["ref_logprobs"] = reference_fn(state.ref_params, state.moe_bias, common.place_batch(layout, mesh))
    t = time.perf_counter()
    rnd["texts"] = rollout.decode_completions(tokenizer, rnd["completions"], rnd["lengths"],
                                              drop_final=[tokenizer.eos_id])
    rnd["total"], rnd["components"], rnd["nonfinite"] = rollout.score(config.rewards, rnd["texts"], rnd["examples"],
                                                                      g, return_nonfinite=True)
    if reward_model is not None:
      # Multi-host: a collective over this process's rows, laid out as one process would lay out
      # the global batch (the widest process's prompt bucket).
      rm_scores = rollout.reward_model_scores(reward_model, *pad_host_prompts(prompts), rnd["completions"],
                                              rnd["mask"], g, batch_size=rm_config.get("batch_size", 0))
      rm_scores, bad = registry.zero_nonfinite("reward_model", rm_scores,
                                               [ex for ex in rnd["examples"] for _ in range(g)])
      rnd["nonfinite"] = rnd["nonfinite"] | bad
      rnd["components"]["reward_model"] = rm_scores
      rnd["total"] = rnd["total"] + np.float32(rm_config.get("weight", 0.0)) * rm_scores
    if config.rollout.overlong == "penalty":  # DAPO 3.4: soft punishment in the last tokens
      rnd["components"]["overlong"] = rollout.overlong_penalty(rnd["lengths"], n, config.rollout.overlong_buffer)
      rnd["total"] = rnd["total"] + rnd["components"]["overlong"]
    timing["reward"] = timing.get("reward", 0.0) + time.perf_counter() - t
    check_stop(step, f"rewards of step {step + 1}")
    return rnd

  def rollout_and_update(step):
    """One GRPO step: rollouts, rewards, the update. Returns (metrics, texts); raises
    common.StopRequested before the update (the state is then that of `step` updates)."""
    nonlocal state
    t0 = time.perf_counter()
    timing.clear()
    rounds = [rollout_round(step, next(batches), sampling_seed(config, step), dispatch_reference=True)]
    # DAPO dynamic sampling: groups whose G rewards are equal teach nothing; draw more prompts
    # (at most max_extra_rounds batches) and keep informative groups first. Multi-host: the count
    # is global (every process must draw the same rounds), each process then keeps its own
    # groups, informative first.
    while (config.rollout.dynamic_sampling and len(rounds) <= config.rollout.max_extra_rounds
           and common.gather_rows(np.concatenate([rollout.informative_groups(r["total"], g) for r in rounds]),
                                  mesh).sum() < config.data.batch_size):
      rounds.append(rollout_round(step, next(batches), sampling_seed(config, step) + 7919 * len(rounds)))
    # The overlapped reference logprobs fit the batch when it is the first round as is.
    ref_logprobs = rounds[0].pop("ref_logprobs", None) if len(rounds) == 1 else None
    for r in rounds:
      r.pop("ref_logprobs", None)
    rnd = rollout.take_groups(rounds, shard["batch_size"], g, config.rollout.dynamic_sampling)
    total, components, lengths, stopped = rnd["total"], rnd["components"], rnd["lengths"], rnd["stopped"]
    prompt_tokens, prompt_mask = pad_host_prompts(rnd["prompts"])
    # With mu > 1 the later iterations need pi_old: the sampler's logprobs are exactly that at
    # temperature 1 (the paper's rollouts). At mu = 1, or another temperature, the first
    # iteration's own logprobs serve, which makes the ratio exactly 1 (as in TRL).
    use_sampler_logprobs = gc.num_iterations > 1 and config.rollout.temperature == 1.0
    old = rnd["logprobs"] if use_sampler_logprobs else None
    gb = rollout.grpo_batch(prompt_tokens, prompt_mask, rnd["completions"], loss_mask_of(rnd["mask"], stopped), old,
                            g)
    if ref_logprobs is not None:
      gb["ref_logprobs"] = ref_logprobs
    gb["advantages"] = np.asarray(grpo.group_advantages(jnp.asarray(total), g, scale_by_std=gc.scale_by_std))
    t2 = time.perf_counter()
    state, step_metrics = update(state, common.place_batch(gb, mesh))
    step_metrics = jax.device_get(step_metrics)
    t3 = time.perf_counter()

    # Metrics of the global batch: every process's rows (a no-op with one process).
    components = {k: common.gather_rows(v, mesh) for k, v in components.items()}
    total, lengths, stopped = (common.gather_rows(x, mesh) for x in (total, lengths, stopped))
    m = metrics_lib.rollout_metrics(components, total, g, lengths, n, stopped)
    if "accuracy" in components:
      m["accuracy"] = float(components["accuracy"].mean())
    # R1's "aha" signal over training: the share of completions with a reflective word (wait,
    # verify, ...) and each word's mean count, as the eval reports them.
    reflective = {w: common.gather_rows(c, mesh) for w, c in reflection_lib.reflection_counts(rnd["texts"]).items()}
    m["reflection/any"] = float((reflective.pop("total") > 0).mean())
    m.update({f"reflection/{w}": float(c.mean()) for w, c in reflective.items()})
    m.update({k: float(v) for k, v in step_metrics.items()})
    m.update({"time/generate": timing["generate"], "time/reward": timing["reward"], "time/update": t3 - t2,
              "time/step": t3 - t0, "rollout/rounds": len(rounds),
              # Rows of every round whose reward had a NaN or inf (set to 0): registry.zero_nonfinite.
              "rewards/nonfinite": float(sum(common.gather_rows(r["nonfinite"], mesh).sum() for r in rounds)),
              "sampler/tokens_per_s": float(sum(common.gather_rows(r["lengths"], mesh).sum() for r in rounds))
                                      / max(timing["generate"], 1e-9),
              "compiles/prefill": sampling.compile_count()["prefill"],
              "compiles/decode": sampling.compile_count()["decode"]})
    return m, rnd["texts"][:config.log.num_samples]

  def log_step(done, m, texts):
    """Runs the periodic eval due at step `done` (it may raise common.StopRequested), then logs the
    step's metrics and samples. Returns the eval's scalars, or None when none was due."""
    eval_metrics = None
    if config.eval.every_steps and done % config.eval.every_steps == 0 and done < config.total_steps:
      eval_metrics = report_lib.eval_scalars(evaluate(done))
      m = dict(m, **eval_metrics)
    writer.write(done, m)
    if config.log.samples_every and done % config.log.samples_every == 0:
      # Process 0's texts (the writer writes on process 0 only): the first rows of the batch.
      writer.write_texts(done, "samples", texts)
    progress.update(done, m)
    return eval_metrics

  stopped_early = False
  try:
    if pending is not None:
      log_step(start, pending["metrics"], pending["texts"])
    for step in range(start, config.total_steps):
      # Where the data stood before this step drew its prompts: a step stopped before its update
      # is saved as the previous one, and its resumed run must draw the same prompts again.
      position = batches.get_state()
      try:
        m, texts = rollout_and_update(step)
      except common.StopRequested as stop:
        batches.set_state(position)
        if step > 0:  # At step 0 there is nothing to save: a rerun starts afresh, identically.
          save(step, force=True)
        logging.warning("preemption requested during the %s: saved step %d, exiting", stop, step)
        stopped_early = True
        break
      done = step + 1
      # A step whose every update was skipped left the policy as it was; many in a row mean it
      # will not move again (a diverged policy, a broken loss): stop and say so.
      skipped_run = skipped_run + 1 if m["skipped"] >= gc.num_iterations else 0
      if max_skipped and skipped_run >= max_skipped:
        writer.write(done, m)
        writer.close()
        raise RuntimeError(
            f"GRPO step {done}: the update was skipped for {skipped_run} steps in a row (a non-finite loss or "
            f"gradient: loss {m['loss']}, grad_norm {m['grad_norm']}; rewards/nonfinite {m['rewards/nonfinite']}), "
            f"so the policy has not changed since step {done - skipped_run}; stopping "
            f"(grpo.max_skipped_updates={max_skipped}). The steps' metrics are in "
            f"{os.path.join(workdir, metrics_lib.METRICS_FILE)}; the last checkpoint is step {ckpt.latest_step()}.")
      try:
        eval_metrics = log_step(done, m, texts)
      except common.StopRequested as stop:
        # The update is applied: save it, with what the step still owes its log.
        save(done, force=True, pending_eval={"metrics": m, "texts": list(texts)})
        logging.warning("preemption requested during the %s: saved step %d, exiting", stop, done)
        stopped_early = True
        break
      stop = ckpt.should_stop(done)
      save(done, eval_metrics=eval_metrics, force=stop or done == config.total_steps)
      if stop:
        logging.warning("preemption requested: saved step %d, exiting", done)
        stopped_early = True
        break
    if not stopped_early:
      reports["after"] = evaluate(config.total_steps)
  except common.StopRequested as stop:
    # In the deferred eval of a resumed step or the final eval: their step is already saved.
    logging.warning("preemption requested during the %s: exiting (the last checkpoint is step %s)", stop,
                    ckpt.latest_step())
    stopped_early = True
  finally:
    ckpt.close()

  if not stopped_early:
    writer.write(config.total_steps, report_lib.eval_scalars(reports["after"], prefix="final_eval/"))
    print(report_lib.format_table(reports["after"]))
    if common.is_chief():
      report_lib.write_report(os.path.join(workdir, report_lib.REPORT_FILE), reports)
    common.export_policy(current_policy(), tokenizer_path, workdir)
  writer.close()
  if common.is_chief():
    metrics_lib.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"))
  return reports


def _previous_evaluation(config, policy, tokenizer, template, stops) -> dict | None:
  """The final evaluation the stage that exported config.init.hf_dir made of that policy, when it is
  this stage's evaluation of its starting policy: the same bits, prompts and protocol
  (protocol.reuse_key). None otherwise."""
  hf_dir = config.init.get("hf_dir", "")
  path = os.path.join(os.path.dirname(os.path.normpath(hf_dir)), report_lib.REPORT_FILE) if hf_dir else ""
  if not path or not os.path.exists(path):
    return None
  report = report_lib.read_report(path)
  key = report.pop(report_lib.REUSE_KEY, None)
  if key is None or key != protocol.reuse_key(config, policy, tokenizer, template, stops):
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
  if os.path.exists(path):
    report = report_lib.read_report(path)
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
    logging.warning("%s: no evaluation of the starting policy, and the run resumes at step %d: its report will "
                    "have no 'before' (rerun the stage from step 0 for one)", path, start)
    return None, False
  report = reuse()
  reused = report is not None
  if not reused:
    report = evaluate()
  if common.is_chief():
    report_lib.write_report(path, report)
  return report, reused

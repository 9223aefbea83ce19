"""The SFT stage: cold start, post-RL SFT on rejection-sampled data, and distillation.

Masked next-token cross-entropy on response tokens of packed (prompt, response) rows, with the
same sharding, checkpointing, metrics and hand-over as the GRPO stage (r1/stages/grpo.py).

Multi-host: each process takes its rows of every global batch of config.sft.batch_size packed rows
(common.data_shard; r1.data.pipeline packs the one-host stream, so the global batches are those of
one process) and places them with common.place_batch; process 0 writes the files.
"""

import os

import jax

from r1 import metrics as metrics_lib
from r1 import sft as sft_lib
from r1.data import pipeline, sources, splits, tasks
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.stages import common, distill


def sft_source(config, template):
  """(prompt, response) pairs: the task's worked solutions (cold start) or a JSONL file."""
  s = config.sft
  if s.source == "synthetic":
    return tasks.SyntheticSFTSource(splits.make_task(config.data), s.num_examples, template, seed=s.seed)
  if s.source == "jsonl":
    return sources.load_sft(s.path)
  raise ValueError(f"sft.source={s.source!r}: expected synthetic or jsonl")


def run(config, workdir: str) -> dict:
  """Trains config.total_steps SFT steps in `workdir`; returns the final eval report ({} if none)."""
  setup = common.training_setup(config, workdir, with_reference=False)
  tokenizer, tokenizer_path, template, mesh, state = (setup.tokenizer, setup.tokenizer_path, setup.template, setup.mesh,
                                                      setup.state)
  mc = setup.policy.config
  teacher = distill.load_teacher(config, mc, tokenizer, mesh)  # None unless config.sft.distill is on
  update = sft_lib.make_sft_step(mc, setup.optimizer, setup.schedule, mtp_weight=config.sft.mtp_weight,
                                 num_micro_batches=config.sft.num_micro_batches,
                                 bias_update_rate=config.sft.bias_update_rate,
                                 logits_chunk_size=config.sft.logits_chunk_size,
                                 state_shardings=setup.state_shardings, mesh=mesh,
                                 **distill.sft_step_kwargs(config, teacher))
  update = distill.with_teacher(update, teacher)
  data = pipeline.sft_dataset(sft_source(config, template), tokenizer, template, seq_len=config.sft.seq_len,
                              seed=config.seed, **common.data_shard(config.sft.batch_size, mesh))
  batches = iter(data)

  ckpt, state, start, writer = common.resume(config, workdir, state, batches)
  progress = metrics_lib.Progress(config.total_steps, every_seconds=config.log.progress_seconds,
                                  keys=("loss", "nll", "grad_norm"))
  stopped_early = False
  for step in range(start, config.total_steps):
    state, m = update(state, common.place_batch(next(batches), mesh))
    done = step + 1
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    writer.write(done, m)
    progress.update(done, m)
    stop = ckpt.should_stop(done)
    ckpt.save(done, state, iterator=batches, force=stop or done == config.total_steps)
    if stop:
      stopped_early = True
      break
  ckpt.close()

  report = {}
  if not stopped_early:
    final = common.policy_of(mc, state)
    if config.eval.at_end:
      stops = common.stop_tokens(config, tokenizer)
      report = protocol.evaluate_config(config, final, tokenizer, template, stops, mesh=mesh)
      writer.write(config.total_steps, report_lib.eval_scalars(report, prefix="final_eval/"))
      print(report_lib.format_table(report))
      key = protocol.reuse_key(config, final, tokenizer, template, stops)  # a collective (multi-host)
      if common.is_chief():
        report_lib.write_report(os.path.join(workdir, report_lib.REPORT_FILE),
                                dict(report, **{report_lib.REUSE_KEY: key}))
    common.export_policy(final, tokenizer_path, workdir)
  writer.close()
  return report

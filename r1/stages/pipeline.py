"""Chains stages in one workdir: each stage runs in <workdir>/<i>_<stage>/, starts from the
previous stage's exported policy and tokenizer, and is skipped when its output already exists
(so re-running the same command after a crash resumes the unfinished stage, which itself resumes
from its last checkpoint).

config.pipeline.stages: e.g. ("sft", "grpo") for the tiny R1-Zero repro, or R1's four stages
("sft", "grpo", "sample", "sft", "grpo"); config.pipeline.<stage>_overrides (one ConfigDict per
stage position, `stage_overrides[i]`) changes fields for that stage only (steps, optimizer...).

Pipelines that branch (distillation: a teacher's stages, then a student's) say where each stage's
starting policy comes from with config.pipeline.policy_from, one entry per stage position (missing
or "previous": the previous stage's policy, the first stage's config.init):
  "init"   config.init as configured (random init of config.model, or init.hf_dir): a new model;
  j (int)  stage j's exported policy (e.g. two students' arms from one cold start);
  a path   an exported policy directory (its sibling tokenizer/ is used when there is one).
config.pipeline.teacher_from[i] = j makes stage j's policy the logit-distillation teacher of SFT
stage i (sft.distill.teacher_dir). config.pipeline.compare lists (title, stage, "before" | "after")
evaluations to put side by side in <workdir>/comparison.md (r1.eval.run_report.write_comparison).
"""

import json
import os
import time

import ml_collections

from r1.eval import run_report
from r1.stages import common, sample


# Stages that export <stage dir>/policy when they finish (stage_done); `eval` writes a report only.
_EXPORTING_STAGES = ("sft", "grpo", "sample")


def stage_config(config, index: int, previous_workdir: str | None, pinned=(),
                 stage_dirs=None) -> ml_collections.ConfigDict:
  """The config of stage `index`: the base config, its overrides, and the hand-over paths.

  `pinned`: config paths set on the command line (e.g. "optimizer.learning_rate"); a stage
  override of such a path (or of a section containing it) is not applied, so flags win.
  `stage_dirs`: every stage's workdir, needed when pipeline.policy_from / teacher_from name stages.
  """
  stage = config.pipeline.stages[index]
  c = ml_collections.ConfigDict(config.to_dict())
  c.unlock()
  c.stage = stage
  overrides = config.pipeline.stage_overrides[index] if index < len(config.pipeline.stage_overrides) else None
  if overrides:
    flat = _flatten(ml_collections.ConfigDict(overrides).to_dict())
    flat = {k: v for k, v in flat.items()
            if not any(k == p or k.startswith(p + ".") or p.startswith(k + ".") for p in pinned)}
    c.update_from_flattened_dict(flat)
  source = _entry(config, "policy_from", index)
  source = "previous" if source is None else source
  if previous_workdir is not None:
    # One tokenizer runs through a pipeline: the previous stage's copy.
    c.tokenizer.path = os.path.join(previous_workdir, common.TOKENIZER_DIR)
    if stage == "sft" and config.pipeline.stages[index - 1] == "sample":
      # R1 stage 3: SFT on what rejection sampling kept.
      c.sft.source = "jsonl"
      c.sft.path = os.path.join(previous_workdir, sample.SFT_DATA_FILE)
  teacher = _entry(config, "teacher_from", index)
  if teacher is not None:
    c.sft.distill.teacher_dir = os.path.join(_stage_dir(stage_dirs, teacher, index), common.POLICY_DIR)
  if source == "init":
    return c
  if isinstance(source, int):
    policy_dir = os.path.join(_stage_dir(stage_dirs, source, index), common.POLICY_DIR)
  elif source == "previous":
    if previous_workdir is None:
      return c
    policy_dir = os.path.join(previous_workdir, common.POLICY_DIR)
  else:
    policy_dir = str(source)
    tokenizer_dir = os.path.join(os.path.dirname(os.path.abspath(policy_dir)), common.TOKENIZER_DIR)
    if os.path.isdir(tokenizer_dir):
      c.tokenizer.path = tokenizer_dir
  c.init.hf_dir = policy_dir
  if "checkpoint_dir" in c.init:  # Where the first stage started from; this one starts from hf_dir.
    c.init.checkpoint_dir = ""
  return c


def _entry(config, field: str, index: int):
  """config.pipeline.<field>[index], or None past the end of that tuple (it may list fewer stages)."""
  entries = tuple(config.pipeline[field])
  return entries[index] if index < len(entries) else None


def _stage_dir(stage_dirs, j: int, index: int) -> str:
  if stage_dirs is None:
    raise ValueError("stage_config: pipeline.policy_from / teacher_from name a stage; pass stage_dirs")
  if not 0 <= j < index:
    raise ValueError(f"stage {index} cannot start from stage {j}: only an earlier stage's policy exists")
  return stage_dirs[j]


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and k not in ("rewards",):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def run(config, workdir: str, stages: dict, pinned=()) -> dict:
  """Runs config.pipeline.stages with the stage functions in `stages` (name -> run(config, dir)).

  `pinned`: config paths given on the command line; they override every stage's stage_overrides.

  Each stage's wall time is recorded in <workdir>/pipeline.json (kept across re-runs, so a resumed
  pipeline reports the time its stages really took). When a GRPO stage evaluated its start and
  end, the last one's before/after summary goes to <workdir>/report.json (r1.eval.run_report).

  A stage that returns without its exported policy was preempted (it saved a checkpoint): the
  pipeline stops there, with results["stopped_at"] = "<i>_<stage>" and no report; the same
  command resumes it, and the run that finishes writes the report.
  """
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  record_path = os.path.join(workdir, "pipeline.json")
  seconds = {}
  if os.path.exists(record_path):
    with open(record_path) as f:
      seconds = json.load(f).get("stage_seconds", {})
  previous, results = None, {}
  stage_dirs = [os.path.join(workdir, f"{i}_{name}") for i, name in enumerate(config.pipeline.stages)]
  for i, name in enumerate(config.pipeline.stages):
    key = f"{i}_{name}"
    stage_dir = stage_dirs[i]
    if common.stage_done(stage_dir):
      print(f"stage {i} ({name}): done, skipping ({stage_dir})")
    else:
      print(f"stage {i} ({name}): running in {stage_dir}")
      t = time.time()
      results[key] = stages[name](stage_config(config, i, previous, pinned, stage_dirs), stage_dir)
      seconds[key] = seconds.get(key, 0.0) + time.time() - t
      if name in _EXPORTING_STAGES and not common.stage_done(stage_dir):
        # Preempted: the next stages start from its policy, which does not exist yet.
        print(f"stage {i} ({name}): stopped before its end; run the same command again to resume it")
        results["stopped_at"] = key
        break
    previous = stage_dir
  results["wall_seconds"] = time.time() - start
  total = sum(seconds.values())
  if common.is_chief():  # Multi-host: one writer (the workdir is shared); each process times alike.
    with open(record_path, "w") as f:
      json.dump({"stages": list(config.pipeline.stages), "stage_seconds": seconds, "wall_seconds": total}, f,
                indent=2)
  if "stopped_at" in results:
    return results  # The report and comparison are written by the run that finishes.
  grpo_dirs = [os.path.join(workdir, f"{i}_{name}") for i, name in enumerate(config.pipeline.stages)
               if name == "grpo"]
  summary = run_report.write(workdir, grpo_dirs[-1], wall_seconds=total,
                         extra={"seed": int(config.seed), "stage_seconds": seconds}) if grpo_dirs else None
  if summary is not None:
    print(run_report.format_results(summary))
    print(f"report: {os.path.join(workdir, run_report.RUN_REPORT_FILE)}")
    results["report"] = summary
  compare = tuple(config.pipeline.compare)
  if compare:
    rows = [(title, stage_dirs[int(stage)], when) for title, stage, when in compare]
    comparison = run_report.write_comparison(workdir, rows)
    print(run_report.format_comparison(comparison))
    results["comparison"] = comparison
  return results


"""The eval stage: the R1 evaluation protocol (r1.eval.protocol) on the stage's policy, over the
datasets named in config.eval.datasets; writes <workdir>/eval_report.json and prints the table.

Dataset names (r1.eval.protocol.load_dataset): "held_out" (the config's own eval split: for
synthetic data the fixed held-out seed the GRPO stage reports on), "train" (its train split),
"gsm8k" (test), "math500". Each is cut to its first config.eval.num_examples problems.

The stage exports no policy, so `common.stage_done` never marks it done and a pipeline re-runs it;
the rerun is cheap: it returns the existing eval_report.json without sampling when that report was
made with the same policy, datasets and settings (its "stage" entry), and evaluates again otherwise.

Multi-host: the policy is sharded over config.mesh (which must span every process's devices),
each process samples its rows of every eval batch and grades the whole set; process 0 writes.
"""

import json
import os

import jax

from r1.eval import protocol
from r1.eval import report as report_lib
from r1.stages import common


def stage_settings(config) -> dict:
  """What the report depends on: the policy, datasets and sampling settings (JSON types only)."""
  hf_dir = config.init.hf_dir
  policy_file = os.path.join(hf_dir, "config.json")
  settings = {
      "policy": common.init_description(config),  # hf_dir, checkpoint_dir@step, or random init
      # A policy re-exported to the same directory is a different policy.
      "policy_mtime_ns": os.stat(policy_file).st_mtime_ns if hf_dir and os.path.exists(policy_file) else None,
      "tokenizer": config.tokenizer.path, "data": config.data.to_dict(), "datasets": list(config.eval.datasets),
      "num_examples": config.eval.num_examples, **protocol.protocol_settings(config),
      "stop_at_answer": config.rollout.stop_at_answer}
  return json.loads(json.dumps(settings))  # As it reads back from the report (tuples are lists).


def run(config, workdir: str) -> dict:
  """Evaluates the stage's policy into <workdir>/eval_report.json (reused if up to date); returns it."""
  path = os.path.join(workdir, report_lib.REPORT_FILE)
  settings = stage_settings(config)
  report = report_lib.read_report_if_any(path)
  if report is not None and report.get("stage") == settings:
    print(f"eval: {path} is up to date, not re-evaluating")
    print(report_lib.format_table(report))
    return report
  os.makedirs(workdir, exist_ok=True)
  tokenizer, tokenizer_path = common.build_tokenizer(config, workdir)
  # One process evaluates on one device, as it always has; several need the policy on a mesh over
  # all of their devices.
  mesh = common.build_mesh(config) if jax.process_count() > 1 else None
  policy = common.build_policy(config, tokenizer, mesh)
  report = protocol.evaluate_config(config, policy, tokenizer, common.prompt_template(config, tokenizer_path),
                                    common.stop_tokens(config, tokenizer),
                                    datasets=config.eval.datasets, mesh=mesh)
  report["stage"] = settings
  if common.is_chief():
    report_lib.write_report(path, report)
  print(report_lib.format_table(report))
  return report

"""The config sections every experiment shares, each built with all of its fields and their defaults.

As big_vision's configs/common.py: a config file says what its recipe changes, e.g.
`c.rollout = common.rollout(num_samples=16, max_new_tokens=32_768)`, and the builder supplies the
rest. Every field the stages read is therefore in every config, so the stages read
`config.section.field` with no hidden default, and any field can be set on the command line
(config_flags only overrides fields that exist). A builder refuses a field it does not define.

Fields that may be None are `placeholder`s of their type, so that `--config.eval.max_new_tokens=64`
parses as an int. Config files import this module (and each other) as `from configs import ...`,
so commands run from the repository root, as every command in README does (`--config=configs/...`).
"""

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder


def _section(name: str, defaults: dict[str, Any], changes: dict[str, Any]) -> ml_collections.ConfigDict:
  """ConfigDict of `defaults` updated with `changes`; ValueError on a field not in `defaults`."""
  unknown = sorted(set(changes) - set(defaults))
  if unknown:
    raise ValueError(f"configs/common.py: config.{name} has no field(s) {unknown}; its fields: {sorted(defaults)}")
  section = ml_collections.ConfigDict(defaults)
  for key, value in changes.items():
    # Nested sections (mesh.shape, data.task_knobs, model.overrides) are replaced whole, so a
    # recipe's dict is exactly what it says.
    setattr(section, key, ml_collections.ConfigDict(value) if isinstance(value, dict) else value)
  return section


def model(name: str, **overrides) -> ml_collections.ConfigDict:
  """config.model: a name in r1/model/presets.py plus ModelConfig field overrides (dtype, remat,
  moe_impl, sizes...). With init.hf_dir set, the checkpoint's config.json wins over the name."""
  return ml_collections.ConfigDict({"name": name, "overrides": ml_collections.ConfigDict(overrides)})


def init(**changes) -> ml_collections.ConfigDict:
  """config.init: where the starting weights come from. hf_dir: a local HF checkpoint directory;
  checkpoint_dir: a stage's <workdir>/checkpoints (at checkpoint_step, None: the latest); both
  empty: random init."""
  return _section("init", {"hf_dir": "", "checkpoint_dir": "", "checkpoint_step": placeholder(int)}, changes)


def tokenizer(**changes) -> ml_collections.ConfigDict:
  """config.tokenizer: path of a tokenizer file/directory; "" takes init.hf_dir's (or the init
  checkpoint's stage tokenizer), else a SentencePiece model of vocab_size pieces is trained on
  corpus_size templated task texts."""
  return _section("tokenizer", {"path": "", "vocab_size": 0, "corpus_size": 0}, changes)


def synthetic_data(task: str, task_knobs: dict, **changes) -> ml_collections.ConfigDict:
  """config.data for a generated task (r1/data/tasks): `task` with its keyword knobs; train and eval
  splits are disjoint seeded streams of train_size / eval_size problems."""
  return _section("data", {"source": "synthetic", "task": task, "task_knobs": ml_collections.ConfigDict(task_knobs),
                           "template": "r1_zero", "seed": 0, "train_size": 100_000, "eval_size": 10_000,
                           "batch_size": 8, "length_buckets": (128, 256)}, changes)


def jsonl_data(**changes) -> ml_collections.ConfigDict:
  """config.data for prompts in JSONL files (one {question_field, answer_field} object per line):
  path for training, eval_path for the held-out split ("" holds out part of path)."""
  return _section("data", {"source": "jsonl", "path": "", "eval_path": "", "question_field": "question",
                           "answer_field": "answer", "template": "r1_zero", "seed": 0, "batch_size": 32,
                           "length_buckets": (512, 1024, 2048)}, changes)


def dataset_data(source: str, **changes) -> ml_collections.ConfigDict:
  """config.data for a bundled dataset (`source`: "gsm8k"): its train split for RL, its test split
  for evaluation."""
  return _section("data", {"source": source, "template": "r1_zero", "seed": 0, "batch_size": 16,
                           "length_buckets": (256, 512)}, changes)


def sft(**changes) -> ml_collections.ConfigDict:
  """config.sft: the SFT stage's data (synthetic worked solutions, or a JSONL of prompt/response,
  packed into rows of seq_len tokens) and step settings. distill: forward-KL logit distillation
  against a teacher (off at weight 0; a pipeline sets teacher_dir from pipeline.teacher_from)."""
  distill = {"teacher_dir": "", "weight": 0.0, "temperature": 1.0, "dtype": placeholder(str)}
  section = _section("sft", {
      "source": "synthetic", "path": "", "num_examples": 20_000, "seed": 1, "seq_len": 256, "batch_size": 8,
      "mtp_weight": 0.0,                        # V3's multi-token-prediction loss weight
      "num_micro_batches": 1, "bias_update_rate": 0.001,
      "logits_chunk_size": placeholder(int),    # the LM head in time chunks; None: whole
      "distill": distill}, {k: v for k, v in changes.items() if k != "distill"})
  section.distill = _section("sft.distill", distill, changes.get("distill", {}))
  return section


def sample(**changes) -> ml_collections.ConfigDict:
  """config.sample: the rejection-sampling stage. k completions for each of num_prompts training
  prompts; a completion is kept when correct, well formatted, finished and (min_language) in
  language_target, at most max_per_prompt per prompt. The stage fails below min_kept.
  max_new_tokens / seed None: rollout.max_new_tokens / the config's seed."""
  return _section("sample", {
      "k": 16, "num_prompts": 512, "batch_size": 8, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
      "max_new_tokens": placeholder(int), "seed": placeholder(int), "max_per_prompt": 4,
      "min_language": placeholder(float),      # e.g. 0.95 with rewards.language for R1 stage 3
      "language_target": "en", "min_kept": 1}, changes)


def rollout(**changes) -> ml_collections.ConfigDict:
  """config.rollout: how the GRPO stage samples its G completions per prompt."""
  return _section("rollout", {
      "num_samples": 8,                         # G
      "max_new_tokens": 1024,
      "temperature": 1.0,                       # R1: rollouts at temperature 1
      "top_p": 1.0, "top_k": 0,
      "stop_at_answer": False,                  # stop at </answer> (one token of the vocabulary) as well as EOS
      "dynamic_sampling": False,                # DAPO: refill groups whose rewards are all equal
      "max_extra_rounds": 2,
      "overlong": "none",                       # "mask" (DAPO filtering) or "penalty" (soft punishment)
      "overlong_buffer": 512}, changes)


def grpo(**changes) -> ml_collections.ConfigDict:
  """config.grpo: the GRPO objective and its update."""
  return _section("grpo", {
      "kl_coef": 0.001,                         # R1's beta
      "clip_eps": 0.2,
      "clip_eps_high": placeholder(float),      # None: symmetric
      "loss_agg": "seq-mean-token-mean",
      "num_iterations": 1,                      # mu: passes over each rollout
      "num_mini_batches": 1,                    # M: sequential updates per pass (R1-Zero: 16)
      "num_micro_batches": 1,                   # gradient accumulation within an update
      "ref_update_every": 400,                  # rollout steps
      "bias_update_rate": 0.0,                  # MoE balancing bias; 0 keeps a pretrained balance fixed
      "scale_by_std": True,
      # Truncated importance sampling of the sampler/trainer mismatch, min(pi_old / pi_sampler, C); 0: off.
      "tis_cap": 0.0,
      # Steps in a row with every update skipped (non-finite) that stop the run; 0: never.
      "max_skipped_updates": 10,
      # When the planned update (r1.tools.plan) does not fit 80% of a device at the split above, use
      # the fastest num_micro_batches / logits_chunk_size that does (logged); False: refuse with that advice.
      "fit_memory": True,
      "logits_chunk_size": placeholder(int),    # the LM head in time chunks of this many tokens; None: whole
  }, changes)


def rewards(**weights) -> ml_collections.ConfigDict:
  """config.rewards: rule-based reward name -> weight (r1/rewards: accuracy, format, language, code...)."""
  return ml_collections.ConfigDict(weights)


def reward_model(**changes) -> ml_collections.ConfigDict:
  """config.reward_model: a learned reward (an r1.reward_model checkpoint directory) added to the
  rules with `weight`; path "" runs the rules alone. batch_size: rows per forward (0: all)."""
  return _section("reward_model", {"path": "", "weight": 0.0, "batch_size": 0}, changes)


def optimizer(**changes) -> ml_collections.ConfigDict:
  """config.optimizer: AdamW (b1 0.9) with a warmup + cosine|constant schedule and gradient clipping."""
  return _section("optimizer", {"learning_rate": 3e-6, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0,
                                "max_grad_norm": 1.0, "b2": 0.95}, changes)


def eval(**changes) -> ml_collections.ConfigDict:  # pylint: disable=redefined-builtin
  """config.eval: when a training stage evaluates, and the protocol (R1's: k samples per problem at
  T=0.6 / top-p 0.95, pass@1 averaged over them). max_new_tokens None: rollout.max_new_tokens.
  datasets: what the `eval` stage scores ("held_out", "train", "gsm8k", "math500")."""
  return _section("eval", {
      "at_start": True, "at_end": True, "every_steps": 0,
      "num_examples": 256, "k": 4, "temperature": 0.6, "top_p": 0.95, "top_k": 0,
      "max_new_tokens": placeholder(int), "batch_size": 32, "seed": 0, "datasets": ("held_out",),
      "num_report_samples": 3,                  # completions per dataset kept in the report
  }, changes)


def mesh(dcn_data: int = 1, **shape) -> ml_collections.ConfigDict:
  """config.mesh: logical device axes (data, fsdp, expert, tensor; -1 takes the remaining devices;
  all 1: one device) times dcn_data slices over the data-center network."""
  axes = _section("mesh.shape", {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1}, shape)
  return ml_collections.ConfigDict({"shape": axes, "dcn_data": dcn_data})


def checkpoint(**changes) -> ml_collections.ConfigDict:
  """config.checkpoint: a train-state checkpoint every save_every steps, the last `keep` kept."""
  return _section("checkpoint", {"save_every": 100, "keep": 2}, changes)


def log(**changes) -> ml_collections.ConfigDict:
  """config.log: a progress line at most every progress_seconds; num_samples completions written
  every samples_every steps."""
  return _section("log", {"progress_seconds": 30, "samples_every": 20, "num_samples": 4}, changes)


def pipeline(stages: tuple, stage_overrides: tuple, **changes) -> ml_collections.ConfigDict:
  """config.pipeline: stages run in one workdir (r1/stages/pipeline.py). stage_overrides: one dict
  of config changes per stage; policy_from / teacher_from: where each stage's policy and
  distillation teacher come from (empty: the previous stage's policy, no teacher); compare: rows
  (title, stage, "before" | "after") of the run's comparison table."""
  return _section("pipeline", {"stages": stages, "stage_overrides": stage_overrides, "policy_from": (),
                               "teacher_from": (), "compare": ()}, changes)

"""Tiny R1-Zero on a 2-core CPU: cold-start SFT, then GRPO, on synthetic arithmetic.

Reproduces the R1-Zero recipe at toy scale: a DeepSeek-architecture policy (MLA, 8 routed experts
top-2 + 1 shared, sigmoid routing with the balancing bias) learns `a + b` / `a - b` answers in the
R1-Zero `<think> </think> <answer> </answer>` template from accuracy + format rewards alone. A
policy this small cannot discover the format from random init, so stage 1 is a short cold-start
SFT on generated worked solutions, stopped early on purpose; stage 2 is GRPO with the paper's
recipe scaled down (G=8, k3 KL, clip 0.2, temperature 1 rollouts). Held-out pass@1 (k samples at
temperature 0.6 / top-p 0.95) is measured before and after GRPO.

  python -m r1.main --config=configs/tiny_r1_zero.py --workdir=/tmp/tiny_r1_zero
  python -m r1.main --config=configs/tiny_r1_zero.py:quick --workdir=/tmp/tiny_quick   # CI smoke run

Outputs: <workdir>/0_sft and 1_grpo (metrics.jsonl, tensorboard events, checkpoints, curves.png,
eval_report.json, the exported policy), and <workdir>/report.json.
Try next: --config.data.task_knobs.max_digits=3 or --config.rollout.num_samples=16.
"""

import ml_collections


def get_config(arg: str | None = None):
  quick = arg == "quick"
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.seed = 0
  c.quick = quick

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.stages = ("sft", "grpo")
  # Per-stage changes to the shared sections below.
  c.pipeline.stage_overrides = (
      {"total_steps": 6 if quick else 200, "optimizer": {"learning_rate": 3e-3, "warmup_steps": 2 if quick else 20},
       "eval": {"at_end": True}},
      {"total_steps": 2 if quick else 60, "optimizer": {"learning_rate": 1e-3, "warmup_steps": 0,
                                                        "schedule": "constant"}},
  )
  c.total_steps = 1  # set per stage above

  # Model: a DeepSeek-V3-architecture policy sized for a CPU (vocab set by the tokenizer).
  c.model = ml_collections.ConfigDict()
  c.model.name = "tiny_v3"
  c.model.overrides = ml_collections.ConfigDict({"hidden_size": 64 if quick else 128, "num_hidden_layers": 2})
  # Start from a HF checkpoint (hf_dir), or from the weights of a stage's train-state checkpoints
  # (checkpoint_dir: <stage workdir>/checkpoints, at checkpoint_step or the latest), or random init.
  c.init = ml_collections.ConfigDict({"hf_dir": "", "checkpoint_dir": "",
                                      "checkpoint_step": ml_collections.config_dict.placeholder(int)})

  # A SentencePiece tokenizer trained on the fly on the task's templated text.
  c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 1000, "corpus_size": 2000})

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"
  c.data.task = "arithmetic"
  c.data.task_knobs = ml_collections.ConfigDict({"min_digits": 1, "max_digits": 2, "ops": "+-"})
  c.data.template = "r1_zero"
  c.data.seed = 0
  c.data.train_size = 100_000
  c.data.eval_size = 10_000
  c.data.batch_size = 4 if quick else 8        # prompts per GRPO step
  c.data.length_buckets = (128, 256)          # the templated prompt is ~92 tokens

  c.sft = ml_collections.ConfigDict()
  c.sft.source = "synthetic"                  # or "jsonl" with sft.path (set by a pipeline after `sample`)
  c.sft.path = ""
  c.sft.num_examples = 20_000
  c.sft.seed = 1
  c.sft.seq_len = 256
  c.sft.batch_size = 8
  c.sft.mtp_weight = 0.0
  c.sft.num_micro_batches = 1
  c.sft.bias_update_rate = 0.001
  c.sft.logits_chunk_size = ml_collections.config_dict.placeholder(int)  # None: a small vocab needs no chunking

  # Rejection sampling (the `sample` stage of longer pipelines): k completions per prompt, kept
  # when correct, well formatted and finished.
  c.sample = ml_collections.ConfigDict()
  c.sample.k = 4 if quick else 16
  c.sample.num_prompts = 8 if quick else 512
  c.sample.batch_size = 8
  c.sample.temperature = 1.0
  c.sample.top_p = 1.0
  c.sample.max_per_prompt = 4
  c.sample.min_language = ml_collections.config_dict.placeholder(float)  # e.g. 0.95 with rewards.language for R1 stage 3
  c.sample.min_kept = 1

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_samples = 4 if quick else 8    # G
  c.rollout.max_new_tokens = 112             # worked solutions are ~90 tokens
  c.rollout.temperature = 1.0                  # R1: rollouts at temperature 1
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.stop_at_answer = True              # stop at </answer> as well as EOS
  c.rollout.dynamic_sampling = False           # DAPO: refill groups whose rewards are all equal
  c.rollout.max_extra_rounds = 2
  c.rollout.overlong = "none"                  # "mask" (DAPO filtering) or "penalty" (soft punishment)
  c.rollout.overlong_buffer = 16

  c.grpo = ml_collections.ConfigDict()
  c.grpo.kl_coef = 0.001                       # R1's beta
  c.grpo.clip_eps = 0.2
  c.grpo.clip_eps_high = ml_collections.config_dict.placeholder(float)  # None: symmetric
  c.grpo.loss_agg = "seq-mean-token-mean"
  c.grpo.num_iterations = 1                    # mu
  c.grpo.num_micro_batches = 1
  c.grpo.ref_update_every = 400
  c.grpo.bias_update_rate = 0.001
  c.grpo.scale_by_std = True
  # The LM head in time chunks of this many tokens ([B, chunk, V] logits at a time); None: whole.
  c.grpo.logits_chunk_size = ml_collections.config_dict.placeholder(int)

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5})
  # A learned reward (r1.rewards.reward_model checkpoint dir) added to the rules with this weight;
  # "" runs rule-based rewards only.
  c.reward_model = ml_collections.ConfigDict({"path": "", "weight": 0.0})

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "cosine"
  c.optimizer.weight_decay = 0.0
  c.optimizer.max_grad_norm = 1.0
  c.optimizer.b2 = 0.99

  c.eval = ml_collections.ConfigDict()
  c.eval.at_start = True
  c.eval.at_end = False
  c.eval.every_steps = 0
  c.eval.num_examples = 16 if quick else 128
  c.eval.k = 2 if quick else 4
  c.eval.temperature = 0.6                     # R1 eval protocol
  c.eval.top_p = 0.95
  c.eval.batch_size = 8
  c.eval.seed = 0
  c.eval.datasets = ("held_out",)              # the `eval` stage: also "gsm8k", "math500"

  # Devices: all 1 runs on one device; e.g. --config.mesh.shape.data=2 --config.mesh.shape.fsdp=2.
  c.mesh = ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1}})

  c.checkpoint = ml_collections.ConfigDict({"save_every": 2 if quick else 25, "keep": 2})
  c.log = ml_collections.ConfigDict({"progress_seconds": 10, "samples_every": 5, "num_samples": 4})
  return c

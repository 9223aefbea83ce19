"""Tiny R1-Zero on a 2-core CPU: cold-start SFT, then GRPO, on synthetic two-digit addition.

Reproduces the R1-Zero recipe at toy scale: a DeepSeek-architecture policy (MLA, 8 routed experts
top-2 + 1 shared, sigmoid routing with the balancing bias; 0.38M parameters) answers `a + b` in
the R1-Zero `<think> </think> <answer> </answer>` template, rewarded for accuracy and format only.

Stage 1, cold start: a policy this small cannot discover the format from random init, so it is
fine-tuned from scratch on generated column-addition working, 3000 steps and no more. The working
is imperfect on purpose, as human cold-start data is: each carry is forgotten with probability 0.5
(`data.task_knobs.slip_rate`), the working then going on consistently to a wrong answer. The SFT
policy learns the procedure and the carelessness with it.
Stage 2, GRPO with the paper's recipe scaled down (G=8 samples per problem at temperature 1, k3 KL
0.001 against the SFT policy, clip 0.2, lr 1e-4): the verifiable reward separates the completions
that carry from those that forget, which imitation cannot.
Held-out pass@1 (k=4 samples at temperature 0.6 / top-p 0.95, R1's protocol) is measured on the
same 256 problems before and after GRPO. Measured on a 2-core CPU: see the README.

  python -m r1.main --config=configs/tiny_r1_zero.py --workdir=/tmp/tiny_r1_zero
  python -m r1.main --config=configs/tiny_r1_zero.py:quick --workdir=/tmp/tiny_quick   # CI smoke run

Outputs: <workdir>/0_sft and 1_grpo (metrics.jsonl, tensorboard events, checkpoints, curves.png,
eval_report.json, the exported policy), and in <workdir>: report.json (pass@1/cons@k before and
after, format reward, k, n_eval, wall_seconds), results.md, samples.md and curves.png.
Try next: --config.data.task_knobs.slip_rate=0 (exact cold-start data), --config.rollout.num_samples=16
(the paper's G), or --config.data.task_knobs.max_digits=3 with longer stages.
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
      {"total_steps": 6 if quick else 3000, "optimizer": {"learning_rate": 3e-3, "warmup_steps": 2 if quick else 50},
       "eval": {"at_end": True}},
      {"total_steps": 2 if quick else 80, "eval": {"every_steps": 0 if quick else 20},
       "optimizer": {"learning_rate": 1e-4, "warmup_steps": 0, "schedule": "constant"}},
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
  # Two-digit addition; cold-start working forgets each carry with probability slip_rate.
  c.data.task_knobs = ml_collections.ConfigDict({"min_digits": 2, "max_digits": 2, "ops": "+", "slip_rate": 0.5})
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
  c.grpo.max_skipped_updates = 10               # Steps in a row with every update skipped (non-finite) that stop the run; 0: never
  # When the planned update (r1.tools.plan) does not fit 80% of a device at the split below, use the
  # fastest num_micro_batches / logits_chunk_size that does (logged); False: refuse with that advice.
  c.grpo.fit_memory = True
  # The LM head in time chunks of this many tokens ([B, chunk, V] logits at a time); None: whole.
  c.grpo.logits_chunk_size = ml_collections.config_dict.placeholder(int)

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5})
  # A learned reward (r1.reward_model checkpoint dir) added to the rules with this weight;
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
  c.eval.num_examples = 16 if quick else 256
  c.eval.k = 2 if quick else 4
  c.eval.temperature = 0.6                     # R1 eval protocol
  c.eval.top_p = 0.95
  c.eval.batch_size = 8
  c.eval.seed = 0
  c.eval.datasets = ("held_out",)              # the `eval` stage: also "gsm8k", "math500"

  # Devices: all 1 runs on one device; e.g. --config.mesh.shape.data=2 --config.mesh.shape.fsdp=2.
  c.mesh = ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1}, "dcn_data": 1})

  c.checkpoint = ml_collections.ConfigDict({"save_every": 2 if quick else 25, "keep": 2})
  c.log = ml_collections.ConfigDict({"progress_seconds": 10, "samples_every": 5, "num_samples": 4})
  return c

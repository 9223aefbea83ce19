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

from configs import common


def get_config(arg: str | None = None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"configs/tiny_r1_zero.py: argument {arg!r}; expected nothing or quick")
  quick = arg == "quick"
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.seed = 0
  c.quick = quick
  c.total_steps = 1  # set per stage below
  # Per-stage changes to the shared sections below.
  c.pipeline = common.pipeline(stages=("sft", "grpo"), stage_overrides=(
      {"total_steps": 6 if quick else 3000, "optimizer": {"learning_rate": 3e-3, "warmup_steps": 2 if quick else 50},
       "eval": {"at_end": True}},
      {"total_steps": 2 if quick else 80, "eval": {"every_steps": 0 if quick else 20},
       "optimizer": {"learning_rate": 1e-4, "warmup_steps": 0, "schedule": "constant"}},
  ))

  # Model: a DeepSeek-V3-architecture policy sized for a CPU (vocab set by the tokenizer), from
  # random init (or --config.init.hf_dir / checkpoint_dir).
  c.model = common.model("tiny_v3", hidden_size=64 if quick else 128, num_hidden_layers=2)
  c.init = common.init()
  # A SentencePiece tokenizer trained on the fly on the task's templated text.
  c.tokenizer = common.tokenizer(vocab_size=1000, corpus_size=2000)

  # Two-digit addition; cold-start working forgets each carry with probability slip_rate.
  c.data = common.synthetic_data("arithmetic", {"min_digits": 2, "max_digits": 2, "ops": "+", "slip_rate": 0.5},
                                 batch_size=4 if quick else 8,    # prompts per GRPO step
                                 length_buckets=(128, 256))       # the templated prompt is ~92 tokens

  # Cold start: generated worked solutions (or "jsonl" with sft.path, set by a pipeline after `sample`).
  c.sft = common.sft(source="synthetic", num_examples=20_000, seq_len=256, batch_size=8, bias_update_rate=0.001)

  # Rejection sampling (the `sample` stage of longer pipelines): k completions per prompt, kept
  # when correct, well formatted and finished.
  c.sample = common.sample(k=4 if quick else 16, num_prompts=8 if quick else 512, batch_size=8, max_per_prompt=4)

  c.rollout = common.rollout(num_samples=4 if quick else 8,   # G
                             max_new_tokens=112,             # worked solutions are ~90 tokens
                             stop_at_answer=True,            # stop at </answer> as well as EOS
                             overlong_buffer=16)
  c.grpo = common.grpo(kl_coef=0.001, clip_eps=0.2, bias_update_rate=0.001)
  c.rewards = common.rewards(accuracy=1.0, format=0.5)
  c.reward_model = common.reward_model()
  c.optimizer = common.optimizer(learning_rate=1e-3, schedule="cosine", b2=0.99)   # per stage above

  # Held-out pass@1 before and after GRPO with R1's protocol; the `eval` stage also takes "gsm8k", "math500".
  c.eval = common.eval(at_start=True, at_end=False, every_steps=0, num_examples=16 if quick else 256,
                       k=2 if quick else 4, batch_size=8)

  # Devices: all 1 runs on one device; e.g. --config.mesh.shape.data=2 --config.mesh.shape.fsdp=2.
  c.mesh = common.mesh()
  c.checkpoint = common.checkpoint(save_every=2 if quick else 25, keep=2)
  c.log = common.log(progress_seconds=10, samples_every=5, num_samples=4)
  return c

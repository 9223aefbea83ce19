"""Distillation vs RL on a small dense student, at toy scale (R1 paper section 4.1, Table 6).

The teacher is the tiny R1-Zero policy (configs/tiny_r1_zero.py: a DeepSeek-V3-architecture MoE,
cold-start SFT then GRPO on two-digit addition). The student is a dense Qwen2-architecture model
(GQA, q/k/v biases, tied embeddings) with the same tokenizer. Like R1's students, which start from
a pretrained base, it first gets the same careless cold start as the teacher (its "base"); then
two arms start from that base and are evaluated on the same held-out problems with R1's protocol:

  distilled   the teacher's correct, well-formed completions (rejection sampling, `sample`) -> SFT
  RL only     GRPO with the teacher's recipe (the paper's "RL on the small model" comparison)

Stages (config.pipeline.policy_from says where each starts):
  0_sft     teacher cold start (MoE)                  random init
  1_grpo    teacher R1-Zero GRPO                      0
  2_sft     student cold start (dense Qwen2)          random init ("init")
  3_sample  teacher rejection sampling                1
  4_sft     student SFT on the teacher's samples      2     (:logits adds forward-KL logit distillation)
  5_grpo    student GRPO                              2
<workdir>/comparison.md puts teacher, student base, distilled and RL-only student side by side.

  python -m r1.main --config=configs/distill_tiny.py --workdir=/tmp/distill_tiny
  python -m r1.main --config=configs/distill_tiny.py:quick --workdir=/tmp/distill_quick   # smoke run

Stages 0 and 1 are configs/tiny_r1_zero.py's: pointing --workdir at a finished tiny_r1_zero run
reuses its teacher (finished stages are skipped). Arguments (comma-separated): quick, logits.
"""

from configs import common
from configs import tiny_r1_zero


def get_config(arg: str | None = None):
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"quick", "logits"}
  if unknown:
    raise ValueError(f"configs/distill_tiny.py: unknown arguments {sorted(unknown)}; expected quick, logits")
  quick = "quick" in args
  c = tiny_r1_zero.get_config("quick" if quick else None)
  teacher_sft, teacher_grpo = c.pipeline.stage_overrides
  if quick:
    # A smoke run whose teacher must still get some problems right for rejection sampling to keep
    # anything: one-digit additions, a 200-step cold start at a high rate (~7% correct), and one
    # sampler shape (8 prompts x 2 samples x 64 tokens) for every stage, compiled once per model.
    c.data.task_knobs.update(min_digits=1, max_digits=1)
    c.tokenizer.corpus_size = 300
    c.sft.seq_len, c.sft.batch_size = 160, 4
    c.data.batch_size = c.eval.batch_size = c.sample.batch_size = 8
    c.rollout.num_samples = c.eval.k = 2
    c.rollout.max_new_tokens = 64
    c.eval.num_examples = 8
    c.checkpoint.save_every = 1000
    teacher_sft = dict(teacher_sft, total_steps=200, optimizer={"learning_rate": 1e-2, "warmup_steps": 2})
    teacher_grpo = dict(teacher_grpo, total_steps=1)

  # The student: a dense Qwen2-architecture decoder, 2 layers, GQA 4 query / 2 K/V heads.
  student = {"name": "tiny_qwen2", "overrides": {"hidden_size": 64 if quick else 128, "num_hidden_layers": 2,
                                                 "intermediate_size": 128 if quick else 256}}
  student_sft = dict(teacher_sft, model=student, total_steps=6 if quick else teacher_sft["total_steps"])
  distill = {
      "total_steps": 6 if quick else 600,
      "optimizer": {"learning_rate": 1e-3, "warmup_steps": 2 if quick else 20},
      "eval": {"at_end": True},
  }
  if "logits" in args:
    distill["sft"] = {"distill": {"weight": 1.0}}

  c.pipeline = common.pipeline(
      stages=("sft", "grpo", "sft", "sample", "sft", "grpo"),
      stage_overrides=(teacher_sft, teacher_grpo, student_sft, {}, distill, teacher_grpo),
      policy_from=("previous", "previous", "init", 1, 2, 2),
      # Logit distillation (":logits"): stage 4 also matches the teacher's token distributions.
      teacher_from=(None, None, None, None, 1 if "logits" in args else None, None),
      compare=(
          ("teacher: MoE cold start", 1, "before"),
          ("teacher: MoE after GRPO", 1, "after"),
          ("student: dense cold start (base)", 5, "before"),
          ("student: distilled (teacher samples -> SFT)", 4, "after"),
          ("student: GRPO only", 5, "after"),
      ))

  # Rejection sampling from the teacher on training prompts: k completions each, at most
  # max_per_prompt correct, well-formed ones kept (about 2000 examples for the full run).
  c.sample.num_prompts = 64 if quick else 512
  c.sample.k = 2 if quick else 8
  c.sample.max_per_prompt = 4
  c.sample.temperature = 1.0
  # Forward-KL logit distillation against the teacher (stage 4 with ":logits", weight 1 there):
  # config.sft.distill, whose teacher_dir the pipeline sets from pipeline.teacher_from.
  return c

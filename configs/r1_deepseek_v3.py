"""DeepSeek-R1: the four training stages on DeepSeek-V3-Base, chained in one workdir.

Reproduces the R1 pipeline (arXiv:2501.12948, section 2.3): (1) cold-start SFT on a few thousand
long chain-of-thought examples; (2) reasoning-oriented GRPO with accuracy, format and
language-consistency rewards; (3) rejection sampling from the stage-2 policy (correct, well
formatted, no language mixing), then SFT on that data (plus any non-reasoning SFT data you merge
into the JSONL); (4) GRPO for all scenarios; then evaluation. Each stage starts from the previous
stage's exported policy and skips itself when its output exists, so the same command resumes.

Stage 4 in the paper adds model-based rewards for helpfulness/harmlessness (section 2.3.4). Point
config.reward_model.path at a reward model written by r1.reward_model.save_reward_model
(the DeepSeek backbone plus a value head, on the policy's tokenizer) and its score is added to the
rule-based rewards with config.reward_model.weight, in stage 4 only; the stage-2 overrides keep
reasoning RL on rules. Without a path, stage 4 runs with the rule-based rewards alone and says so
in its log.

Hardware: a TPU v5p-1024 slice or larger (see configs/r1_zero_deepseek_v3.py for the mesh).

  python -m r1.main --config=configs/r1_deepseek_v3.py --workdir=gs://bucket/r1 \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-V3-Base --config.sft.path=/mnt/data/cold_start.jsonl \\
    --config.data.path=/mnt/data/reasoning_prompts.jsonl \\
    --config.reward_model.path=/mnt/ckpt/helpfulness_rm        # optional: stage 4's reward model
"""

from configs import common
from configs import r1_zero_deepseek_v3


def get_config(arg: str | None = None):
  del arg
  c = r1_zero_deepseek_v3.get_config()          # model, data, rollout, GRPO and eval of R1-Zero
  c.stage = "pipeline"
  c.pipeline = common.pipeline(stages=("sft", "grpo", "sample", "sft", "grpo", "eval"), stage_overrides=(
      # 1. Cold start: thousands of long-CoT examples, a couple of epochs.
      {"total_steps": 1000, "optimizer": {"learning_rate": 5e-6, "warmup_steps": 50, "schedule": "cosine"}},
      # 2. Reasoning RL: rule-based rewards plus language consistency against language mixing.
      # No reward model here (the paper's reasoning RL is rule-based).
      # Steps are R1-Zero's rollouts of 16 updates (8,192 outputs): 250 = 4,000 updates. The arXiv
      # paper gives no step counts or mini-batch schedule for R1's RL stages: R1-Zero's are kept.
      {"total_steps": 250, "rewards": {"accuracy": 1.0, "format": 1.0, "language": 0.1},
       "reward_model": {"path": ""}},
      # 3a. Rejection sampling from the stage-2 policy (defaults in c.sample below).
      {},
      # 3b. SFT on the kept samples (the pipeline points sft.path at them), two epochs.
      {"total_steps": 2000, "optimizer": {"learning_rate": 5e-6, "warmup_steps": 50, "schedule": "cosine"}},
      # 4. RL for all scenarios: the rules plus config.reward_model (set it on the command line; an
      # empty path leaves rules only). Setting it here would shadow --config.reward_model.*.
      {"total_steps": 125, "grpo": {"clip_eps": 0.2}},   # 2,000 updates
      # Evaluation of the final policy.
      {},
  ))
  c.sft = common.sft(source="jsonl",            # cold-start data: prompt, response
                     num_examples=0, seed=0, seq_len=32_768, batch_size=64,
                     mtp_weight=0.3,               # V3's MTP objective during SFT
                     num_micro_batches=16, bias_update_rate=0.0, logits_chunk_size=256)
  c.sample = common.sample(k=16,
                           num_prompts=40_000,     # ~600k reasoning samples kept in the paper
                           batch_size=32, temperature=1.0, top_p=0.95, max_per_prompt=4,
                           min_language=0.95)      # R1: filter chains of thought with mixed languages
  c.rewards = common.rewards(accuracy=1.0, format=1.0)
  # Stage 4's reward model (stage 2 overrides the path to ""): a score of O(1) next to the 0/1 rules.
  c.reward_model.weight = 1.0
  return c

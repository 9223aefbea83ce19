"""DeepSeek-R1-Zero: GRPO from the DeepSeek-V3 base model with rule-based rewards only.

Reproduces the R1-Zero recipe of the R1 paper (arXiv:2501.12948, section 2.2 and the Nature
version's training details): learning rate 3e-6, KL coefficient 0.001, clip ratio 10,
temperature 1, max length 32,768, accuracy + format rewards on the R1-Zero template. A paper
"training step" is 32 questions x G=16 samples (512 outputs); each rollout generates 8,192
outputs, randomly split into 16 mini-batches, one update each, in a single inner epoch. Here a
step is a rollout (r1.grpo.make_grpo_step): 512 questions x 16 samples, num_mini_batches=16, so
the paper's 10,400 training steps are 650 steps and its "reference replaced every 400 steps" is
every 25.

Hardware: the 671B model needs a pod; as a starting point a TPU v5p-1024 slice (512 chips) with
the mesh below (FSDP within a slice, experts over 8 chips, data over the rest). Use
`python -m r1.tools.plan` (scale-out issue) to check the memory plan before launching. The
checkpoint and its tokenizer must be on local (or GCS-fuse mounted) disk.

  python -m r1.main --config=configs/r1_zero_deepseek_v3.py --workdir=gs://bucket/r1_zero \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-V3-Base --config.data.path=/mnt/data/math_prompts.jsonl

Try next: --config.rollout.max_new_tokens=65536 after ~8k steps (the paper's second phase).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  del arg
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 650                            # rollouts: the paper's 10,400 training steps / 16

  c.model = common.model("deepseek_v3", dtype="bfloat16", moe_impl="ragged", remat="full")
  # The V3 base checkpoint (required), or an r1 run's <stage workdir>/checkpoints.
  c.init = common.init()
  c.tokenizer = common.tokenizer()               # "" -> hf_dir's

  # Verifiable math/code prompts (question, answer); 512 questions per rollout, 32 per update (per
  # host: divide by hosts).
  c.data = common.jsonl_data(template="r1_zero", batch_size=512, length_buckets=(512, 1024, 2048))

  c.rollout = common.rollout(num_samples=16,    # G
                             max_new_tokens=32_768, temperature=1.0, stop_at_answer=False, overlong_buffer=512)
  c.grpo = common.grpo(
      kl_coef=0.001,
      clip_eps=10.0,                             # "clip ratio 10" in the first RL stage
      num_iterations=1,                          # "a single inner epoch"
      num_mini_batches=16,                       # 8,192 outputs in 16 mini-batches, one update each
      num_micro_batches=16,                      # memory: 32 of an update's 512 rows at a time
      ref_update_every=25,                       # rollouts: the paper's every 400 training steps
      bias_update_rate=0.0,                      # keep the pretrained expert balance fixed in RL
      logits_chunk_size=256)                     # LM head in time chunks: [B, chunk, V] logits at a time

  c.rewards = common.rewards(accuracy=1.0, format=1.0)
  # No reward model in R1-Zero: neural rewards invite reward hacking at scale (R1 2.2.2). A path to
  # an r1.reward_model checkpoint adds weight * its score to the rules (R1 stage 4).
  c.reward_model = common.reward_model(batch_size=32)   # rows per reward-model forward pass
  c.optimizer = common.optimizer(learning_rate=3e-6, schedule="constant", weight_decay=0.1, b2=0.95)

  # pass@1 averaged over k=16 samples on e.g. MATH-500 (the data source's eval split).
  c.eval = common.eval(at_start=True, at_end=True, every_steps=25, num_examples=500, k=16, batch_size=32)

  c.mesh = common.mesh(data=-1, fsdp=32, expert=8)
  c.checkpoint = common.checkpoint(save_every=5, keep=3)   # a rollout of 8,192 outputs is costly
  c.log = common.log(progress_seconds=60, samples_every=50, num_samples=4)
  return c

"""GRPO on GSM8K from DeepSeek-V2-Lite (16B total, 2.4B active): a real job for one TPU host.

R1-Zero-style RL at a size one v5p-8 / v6e-8 host holds in bf16 (params, Adam moments, the
reference copy and the rollouts' latent cache): accuracy + format rewards on the R1-Zero
template, G=8, clip 0.2, KL 0.04 (TRL's default), 512 new tokens. Expect GSM8K test pass@1 to move
within a few hundred steps; an epoch of GSM8K train at 16 prompts per step is ~470 steps.

  python -m r1.main --config=configs/grpo_deepseek_v2_lite_gsm8k.py --workdir=/tmp/v2lite_gsm8k \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-V2-Lite

Try next: --config.grpo.loss_agg=token-mean --config.grpo.clip_eps_high=0.28 (DAPO).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  del arg
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 500

  c.model = common.model("deepseek_v2_lite", dtype="bfloat16", moe_impl="ragged", remat="full")
  c.init = common.init()                         # hf_dir: the local DeepSeek-V2-Lite checkpoint
  c.tokenizer = common.tokenizer()               # "" -> hf_dir's
  c.data = common.dataset_data("gsm8k", template="r1_zero", batch_size=16, length_buckets=(256, 512))

  c.rollout = common.rollout(num_samples=8, max_new_tokens=512, temperature=1.0, stop_at_answer=True)
  c.grpo = common.grpo(kl_coef=0.04,             # TRL's default
                       clip_eps=0.2, num_micro_batches=4, bias_update_rate=0.0, logits_chunk_size=256)
  c.rewards = common.rewards(accuracy=1.0, format=0.2)
  c.reward_model = common.reward_model()
  c.optimizer = common.optimizer(learning_rate=1e-6, warmup_steps=10, schedule="constant", b2=0.95)
  # The defaults: pass@1 over k=4 samples on 256 GSM8K test problems (the data source's eval
  # split), before, after and every 100 steps.
  c.eval = common.eval(every_steps=100)
  c.mesh = common.mesh(fsdp=-1)                  # FSDP over the host's chips
  c.checkpoint = common.checkpoint(save_every=50)
  c.log = common.log()
  return c

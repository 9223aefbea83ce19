"""GRPO on GSM8K from a dense Qwen2.5 student on one TPU host: R1's "RL on a small model".

The R1 paper (section 4.1) compares distilling R1 into Qwen2.5 with running RL on the small model
itself. This is the RL arm on a real checkpoint: Qwen2.5-Math-1.5B (the base of
R1-Distill-Qwen-1.5B) with the R1-Zero template, accuracy + format rewards, G=16 at temperature 1,
KL 0.001 against the starting policy, 1024 new tokens, bf16 with FSDP over the host's chips
(1.5B params: params + Adam + reference are ~25 GiB before sharding, see r1.tools.plan). With
`:distill` it starts from DeepSeek-R1-Distill-Qwen-1.5B instead, prompted with that checkpoint's own
chat template (tokenizer_config.json's chat_template); R1-Distill answers in `\\boxed{}` after
`</think>`, so only the accuracy reward is used there.

  # one v5p-8 / v6e-8 host; checkpoints downloaded to the VM's disk beforehand
  python -m r1.main --config=configs/grpo_qwen2_5_math_gsm8k.py --workdir=/tmp/qwen_gsm8k \\
    --config.init.hf_dir=/mnt/ckpt/Qwen2.5-Math-1.5B
  python -m r1.main --config=configs/grpo_qwen2_5_math_gsm8k.py:distill --workdir=/tmp/r1distill_gsm8k \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  python -m r1.tools.plan --config=configs/grpo_qwen2_5_math_gsm8k.py --topology=v5p-8   # memory

Try next: --config.grpo.loss_agg=token-mean --config.grpo.clip_eps_high=0.28 (DAPO).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  if arg not in (None, "", "distill"):
    raise ValueError(f"configs/grpo_qwen2_5_math_gsm8k.py: argument {arg!r}; expected nothing or distill")
  distill = arg == "distill"
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 500

  # The checkpoint's config.json wins when init.hf_dir is set (Qwen2.5-Math-1.5B / R1-Distill).
  c.model = common.model("qwen2_5_math_1_5b", dtype="bfloat16", remat="full")
  c.init = common.init()
  c.tokenizer = common.tokenizer()               # "" -> hf_dir's
  # R1-Zero's template for the base model; the distilled model's own chat template otherwise.
  c.data = common.dataset_data("gsm8k", template="hf_chat" if distill else "r1_zero", batch_size=32,
                               length_buckets=(256, 512))

  c.rollout = common.rollout(num_samples=16,    # R1's G
                             max_new_tokens=4096 if distill else 1024,   # R1-Distill thinks at length
                             temperature=1.0, stop_at_answer=not distill)
  c.grpo = common.grpo(kl_coef=0.001, clip_eps=0.2, num_micro_batches=16, bias_update_rate=0.0,
                       logits_chunk_size=256)
  c.rewards = common.rewards(accuracy=1.0, format=0.0 if distill else 0.2)
  c.reward_model = common.reward_model()
  # R1 used 3e-6 at 671B; small dense models like ~1e-6.
  c.optimizer = common.optimizer(learning_rate=1e-6, warmup_steps=10, schedule="constant", b2=0.99)
  # The defaults: pass@1 over k=4 samples on 256 GSM8K test problems (the data source's eval
  # split), before, after and every 100 steps.
  c.eval = common.eval(every_steps=100)
  c.mesh = common.mesh(fsdp=-1)                  # FSDP over the host's chips
  c.checkpoint = common.checkpoint(save_every=50)
  c.log = common.log()
  return c

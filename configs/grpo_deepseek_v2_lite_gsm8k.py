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


def get_config(arg: str | None = None):
  del arg
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 500

  c.model = ml_collections.ConfigDict()
  c.model.name = "deepseek_v2_lite"
  c.model.overrides = ml_collections.ConfigDict({"dtype": "bfloat16", "moe_impl": "ragged", "remat": "full"})
  c.init = ml_collections.ConfigDict({"hf_dir": "",        # local DeepSeek-V2-Lite checkpoint
                                      # or an r1 run's <stage workdir>/checkpoints (None step: latest)
                                      "checkpoint_dir": "",
                                      "checkpoint_step": ml_collections.config_dict.placeholder(int)})
  c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 0, "corpus_size": 0})  # "" -> hf_dir

  c.data = ml_collections.ConfigDict()
  c.data.source = "gsm8k"                        # train split for RL, test split for eval
  c.data.template = "r1_zero"
  c.data.seed = 0
  c.data.batch_size = 16
  c.data.length_buckets = (256, 512)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_samples = 8
  c.rollout.max_new_tokens = 512
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.stop_at_answer = True

  c.rollout.dynamic_sampling = False
  c.rollout.max_extra_rounds = 2
  c.rollout.overlong = "none"
  c.rollout.overlong_buffer = 512

  c.grpo = ml_collections.ConfigDict()
  c.grpo.kl_coef = 0.04
  c.grpo.clip_eps = 0.2
  c.grpo.clip_eps_high = ml_collections.config_dict.placeholder(float)  # None: symmetric
  c.grpo.loss_agg = "seq-mean-token-mean"
  c.grpo.num_iterations = 1
  c.grpo.num_micro_batches = 4
  c.grpo.ref_update_every = 400
  c.grpo.bias_update_rate = 0.0
  c.grpo.scale_by_std = True
  c.grpo.max_skipped_updates = 10               # Steps in a row with every update skipped (non-finite) that stop the run; 0: never
  # When the planned update (r1.tools.plan) does not fit 80% of a device at the split below, use the
  # fastest num_micro_batches / logits_chunk_size that does (logged); False: refuse with that advice.
  c.grpo.fit_memory = True
  c.grpo.logits_chunk_size = 256                # LM head in time chunks: [B, chunk, V] logits at a time

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.2})

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-6
  c.optimizer.warmup_steps = 10
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  c.optimizer.max_grad_norm = 1.0
  c.optimizer.b2 = 0.95

  c.eval = ml_collections.ConfigDict()
  c.eval.at_start = True
  c.eval.at_end = True
  c.eval.every_steps = 100
  c.eval.num_examples = 256
  c.eval.k = 4
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.batch_size = 32
  c.eval.seed = 0
  c.eval.datasets = ("held_out",)              # the data source's eval split

  c.mesh = ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 1}, "dcn_data": 1})
  c.checkpoint = ml_collections.ConfigDict({"save_every": 50, "keep": 2})
  c.log = ml_collections.ConfigDict({"progress_seconds": 30, "samples_every": 20, "num_samples": 4})
  return c

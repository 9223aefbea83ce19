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


def get_config(arg: str | None = None):
  if arg not in (None, "", "distill"):
    raise ValueError(f"configs/grpo_qwen2_5_math_gsm8k.py: argument {arg!r}; expected nothing or distill")
  distill = arg == "distill"
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 500

  c.model = ml_collections.ConfigDict()
  c.model.name = "qwen2_5_math_1_5b"            # the checkpoint's config.json wins when init.hf_dir is set
  c.model.overrides = ml_collections.ConfigDict({"dtype": "bfloat16", "remat": "full"})
  c.init = ml_collections.ConfigDict({"hf_dir": "",        # local Qwen2.5-Math-1.5B / R1-Distill checkpoint
                                      # or an r1 run's <stage workdir>/checkpoints (None step: latest)
                                      "checkpoint_dir": "",
                                      "checkpoint_step": ml_collections.config_dict.placeholder(int)})
  c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 0, "corpus_size": 0})  # "" -> hf_dir

  c.data = ml_collections.ConfigDict()
  c.data.source = "gsm8k"                        # train split for RL, test split for eval
  # R1-Zero's template for the base model; the distilled model's own chat template otherwise.
  c.data.template = "hf_chat" if distill else "r1_zero"
  c.data.seed = 0
  c.data.batch_size = 32
  c.data.length_buckets = (256, 512)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_samples = 16                     # R1's G
  c.rollout.max_new_tokens = 4096 if distill else 1024   # R1-Distill thinks at length
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.stop_at_answer = not distill

  c.rollout.dynamic_sampling = False
  c.rollout.max_extra_rounds = 2
  c.rollout.overlong = "none"
  c.rollout.overlong_buffer = 512

  c.grpo = ml_collections.ConfigDict()
  c.grpo.kl_coef = 0.001                        # R1
  c.grpo.clip_eps = 0.2
  c.grpo.clip_eps_high = ml_collections.config_dict.placeholder(float)  # None: symmetric
  c.grpo.loss_agg = "seq-mean-token-mean"
  c.grpo.num_iterations = 1
  c.grpo.num_micro_batches = 16
  c.grpo.ref_update_every = 400
  c.grpo.bias_update_rate = 0.0
  c.grpo.scale_by_std = True
  c.grpo.max_skipped_updates = 10               # Steps in a row with every update skipped (non-finite) that stop the run; 0: never
  # When the planned update (r1.tools.plan) does not fit 80% of a device at the split below, use the
  # fastest num_micro_batches / logits_chunk_size that does (logged); False: refuse with that advice.
  c.grpo.fit_memory = True
  c.grpo.logits_chunk_size = 256                # LM head in time chunks: [B, chunk, V] logits at a time

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.0 if distill else 0.2})

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-6              # R1 used 3e-6 at 671B; small dense models like ~1e-6
  c.optimizer.warmup_steps = 10
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  c.optimizer.max_grad_norm = 1.0
  c.optimizer.b2 = 0.99

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
  c.eval.datasets = ("held_out",)              # the data source's eval split (GSM8K test)

  c.mesh = ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 1}, "dcn_data": 1})
  c.checkpoint = ml_collections.ConfigDict({"save_every": 50, "keep": 2})
  c.log = ml_collections.ConfigDict({"progress_seconds": 30, "samples_every": 20, "num_samples": 4})
  return c

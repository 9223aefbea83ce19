"""DeepSeek-R1-Zero: GRPO from the DeepSeek-V3 base model with rule-based rewards only.

Reproduces the R1-Zero recipe of the R1 paper (arXiv:2501.12948, section 2.2 and the Nature
version's training details): 32 questions x G=16 samples per step (512 rollouts), learning rate
3e-6, KL coefficient 0.001, clip ratio 10, reference refreshed every 400 steps, temperature 1,
max length 32,768, accuracy + format rewards on the R1-Zero template.

Hardware: the 671B model needs a pod; as a starting point a TPU v5p-1024 slice (512 chips) with
the mesh below (FSDP within a slice, experts over 8 chips, data over the rest). Use
`python -m r1.tools.plan` (scale-out issue) to check the memory plan before launching. The
checkpoint and its tokenizer must be on local (or GCS-fuse mounted) disk.

  python -m r1.main --config=configs/r1_zero_deepseek_v3.py --workdir=gs://bucket/r1_zero \\
    --config.init.hf_dir=/mnt/ckpt/DeepSeek-V3-Base --config.data.path=/mnt/data/math_prompts.jsonl

Try next: --config.rollout.max_new_tokens=65536 after ~8k steps (the paper's second phase).
"""

import ml_collections


def get_config(arg: str | None = None):
  del arg
  c = ml_collections.ConfigDict()
  c.stage = "grpo"
  c.seed = 0
  c.total_steps = 10_400                         # the paper's R1-Zero run length

  c.model = ml_collections.ConfigDict()
  c.model.name = "deepseek_v3"
  c.model.overrides = ml_collections.ConfigDict({"dtype": "bfloat16", "moe_impl": "ragged", "remat": "full"})
  c.init = ml_collections.ConfigDict({"hf_dir": "",        # the V3 base checkpoint (required)
                                      # or an r1 run's <stage workdir>/checkpoints (None step: latest)
                                      "checkpoint_dir": "",
                                      "checkpoint_step": ml_collections.config_dict.placeholder(int)})
  c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 0, "corpus_size": 0})  # "" -> hf_dir

  c.data = ml_collections.ConfigDict()
  c.data.source = "jsonl"                        # verifiable math/code prompts: question, answer
  c.data.path = ""
  c.data.eval_path = ""
  c.data.question_field = "question"
  c.data.answer_field = "answer"
  c.data.template = "r1_zero"
  c.data.seed = 0
  c.data.batch_size = 32                         # unique questions per step (per host: divide by hosts)
  c.data.length_buckets = (512, 1024, 2048)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_samples = 16                     # G
  c.rollout.max_new_tokens = 32_768
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.stop_at_answer = False

  c.rollout.dynamic_sampling = False
  c.rollout.max_extra_rounds = 2
  c.rollout.overlong = "none"
  c.rollout.overlong_buffer = 512

  c.grpo = ml_collections.ConfigDict()
  c.grpo.kl_coef = 0.001
  c.grpo.clip_eps = 10.0                         # "clip ratio 10" in the first RL stage
  c.grpo.clip_eps_high = ml_collections.config_dict.placeholder(float)  # None: symmetric
  c.grpo.loss_agg = "seq-mean-token-mean"
  c.grpo.num_iterations = 1
  c.grpo.num_micro_batches = 16                  # 512 rollouts in 16 mini-batches
  c.grpo.ref_update_every = 400
  c.grpo.bias_update_rate = 0.0                  # keep the pretrained expert balance fixed in RL
  c.grpo.scale_by_std = True
  c.grpo.max_skipped_updates = 10               # Steps in a row with every update skipped (non-finite) that stop the run; 0: never
  # When the planned update (r1.tools.plan) does not fit 80% of a device at the split below, use the
  # fastest num_micro_batches / logits_chunk_size that does (logged); False: refuse with that advice.
  c.grpo.fit_memory = True
  c.grpo.logits_chunk_size = 256                # LM head in time chunks: [B, chunk, V] logits at a time

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 1.0})
  # No reward model in R1-Zero: neural rewards invite reward hacking at scale (R1 2.2.2). A path to
  # an r1.reward_model checkpoint adds weight * its score to the rules (R1 stage 4).
  c.reward_model = ml_collections.ConfigDict({"path": "", "weight": 0.0,
                                              "batch_size": 32})  # rows per reward-model forward pass

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 3e-6
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.1
  c.optimizer.max_grad_norm = 1.0
  c.optimizer.b2 = 0.95

  c.eval = ml_collections.ConfigDict()
  c.eval.at_start = True
  c.eval.at_end = True
  c.eval.every_steps = 400
  c.eval.num_examples = 500                      # e.g. MATH-500
  c.eval.k = 16                                  # pass@1 averaged over k samples
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.batch_size = 32
  c.eval.seed = 0
  c.eval.datasets = ("held_out",)              # the data source's eval split

  c.mesh = ml_collections.ConfigDict({"shape": {"data": -1, "fsdp": 32, "expert": 8, "tensor": 1}, "dcn_data": 1})
  c.checkpoint = ml_collections.ConfigDict({"save_every": 100, "keep": 3})
  c.log = ml_collections.ConfigDict({"progress_seconds": 60, "samples_every": 50, "num_samples": 4})
  return c

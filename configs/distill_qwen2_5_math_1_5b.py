"""R1-Distill recipe on one TPU host: SFT of Qwen2.5-Math-1.5B on a teacher's reasoning traces, then eval.

DeepSeek-R1-Distill-Qwen-1.5B is Qwen2.5-Math-1.5B fine-tuned on 800k samples curated with R1
(paper section 2.4): plain SFT, no RL. Here the traces are a JSONL of {"prompt", "response"} lines
(a `sample` stage's sft_data.jsonl from a bigger r1 policy, or your own file), each prompt rendered
with the student's chat template (tokenizer_config.json's chat_template: `data.template="hf_chat"`)
and the teacher's response (`<think> ... </think>` and the answer) trained on as is. The eval stage
then measures GSM8K test and MATH-500 pass@1 with R1's protocol (T=0.6, top-p 0.95, k samples).
Logit distillation (sft.distill) needs the teacher's vocabulary: it does not apply to R1 -> Qwen.

  python -m r1.main --config=configs/distill_qwen2_5_math_1_5b.py --workdir=/tmp/distill_qwen \\
    --config.init.hf_dir=/mnt/ckpt/Qwen2.5-Math-1.5B --config.sft.path=/mnt/data/r1_traces.jsonl
  python -m r1.tools.plan --config=configs/distill_qwen2_5_math_1_5b.py --config.stage=sft --topology=v5p-8

Compare with RL on the same model: configs/grpo_qwen2_5_math_gsm8k.py (the paper's Table 6).
"""

from configs import common
from configs import grpo_qwen2_5_math_gsm8k


def get_config(arg: str | None = None):
  del arg
  c = grpo_qwen2_5_math_gsm8k.get_config()   # model, init, tokenizer, data, rollout, eval, mesh
  c.stage = "pipeline"
  c.total_steps = 1                          # set per stage below
  # About 2 epochs of 800k traces at 64 packed 8k-token rows per step would be ~25k steps; a
  # user file is usually smaller: set total_steps to ~2 epochs of yours.
  c.pipeline = common.pipeline(stages=("sft", "eval"), stage_overrides=({"total_steps": 5000}, {}))

  # The student's own chat template; the teacher's response follows it verbatim.
  c.data.template = "hf_chat"

  # The teacher's traces ({"prompt", "response"} per line); R1's run to thousands of tokens, packed
  # into rows of seq_len. A 152k vocabulary: the LM head in time chunks.
  c.sft = common.sft(source="jsonl", num_examples=0, seed=1, seq_len=8192, batch_size=64, num_micro_batches=16,
                     bias_update_rate=0.0, logits_chunk_size=1024)

  c.optimizer.learning_rate = 1e-5
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = "cosine"
  c.optimizer.weight_decay = 0.0
  c.optimizer.b2 = 0.95

  # Eval: GSM8K test and MATH-500, k=8 samples per problem, thinking budget 8k tokens.
  c.eval.at_end = True
  c.eval.datasets = ("gsm8k", "math500")
  c.eval.num_examples = 500
  c.eval.k = 8
  c.rollout.max_new_tokens = 8192
  c.rollout.stop_at_answer = False
  return c

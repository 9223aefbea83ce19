"""A real-checkpoint-shaped run on CPU: a Hugging Face tokenizer.json with a Qwen-style
tokenizer_config.json (ChatML chat_template, bos_token null) and a dense Qwen2 policy go through a
GRPO stage and an eval stage with data.template="hf_chat", prompts rendered in the student's chat
format and no BOS prepended (as transformers would tokenize them)."""

import json
import os

from r1 import main
from r1.data import templates
from r1.tokenizer import load_tokenizer
from r1.stages import common
from tests.data.test_templates import QWEN_CHATML
from tests.test_configs import load
from tests.test_tokenizer import _build_hf_tokenizer


def test_grpo_and_eval_stages_use_the_student_chat_template(tmp_path):
  tokenizer_dir = tmp_path / "qwen_tokenizer"
  _build_hf_tokenizer(tokenizer_dir)
  with open(tokenizer_dir / "tokenizer_config.json", "w", encoding="utf-8") as f:
    json.dump({"bos_token": None, "eos_token": "<｜end▁of▁sentence｜>", "pad_token": "<pad>",
               "chat_template": QWEN_CHATML}, f)
  config = load("tiny_r1_zero.py", "quick")
  config.stage = "grpo"
  config.total_steps = 1
  config.model.name = "tiny_qwen2"
  config.tokenizer.path = str(tokenizer_dir)
  config.data.template = "hf_chat"
  config.data.length_buckets = (256,)
  config.rollout.max_new_tokens = 16
  config.eval.num_examples, config.eval.k, config.eval.max_new_tokens = 4, 1, 16

  template = common.prompt_template(config, str(tokenizer_dir))
  prompt = template.render_prompt("What is 2 + 3?")
  assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
      "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"), prompt
  tokenizer = load_tokenizer(str(tokenizer_dir))
  assert not tokenizer.uses_bos and tokenizer.encode(prompt, add_bos=True) == tokenizer.encode(prompt)

  grpo_dir = str(tmp_path / "grpo")
  main.STAGES["grpo"](config, grpo_dir)
  with open(os.path.join(grpo_dir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert any(r["step"] == 1 and "reward" in r for r in rows), rows
  # The exported student is a Qwen2 checkpoint with the tokenizer's files beside it.
  with open(os.path.join(grpo_dir, "policy", "config.json"), encoding="utf-8") as f:
    assert json.load(f)["model_type"] == "qwen2"
  assert os.path.exists(os.path.join(grpo_dir, "tokenizer", "tokenizer_config.json"))

  eval_config = load("tiny_r1_zero.py", "quick")
  eval_config.update_from_flattened_dict({
      "stage": "eval", "init.hf_dir": os.path.join(grpo_dir, "policy"),
      "tokenizer.path": os.path.join(grpo_dir, "tokenizer"), "data.template": "hf_chat",
      "eval.num_examples": 4, "eval.k": 1})
  eval_config.rollout.max_new_tokens = 16
  report = main.STAGES["eval"](eval_config, str(tmp_path / "eval"))
  assert report["datasets"]["held_out"]["n_eval"] == 4
  # The exported tokenizer directory carries the chat template on to the next stage.
  again = templates.get_template("hf_chat", tokenizer_path=os.path.join(grpo_dir, "tokenizer"))
  assert again.render_prompt("What is 2 + 3?") == prompt

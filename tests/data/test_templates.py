"""Templates render exactly, the hf_chat ones from hand-written tokenizer_config.json files."""

import json
import os

import pytest

from r1.data import templates

# DeepSeek-R1 paper, Table 1, typed out independently of the module under test.
PAPER_TABLE_1 = ("A conversation between User and Assistant. The user asks a question, and the "
                 "Assistant solves it. The assistant first thinks about the reasoning process in "
                 "the mind and then provides the user with the answer. The reasoning process and "
                 "answer are enclosed within <think> </think> and <answer> </answer> tags, "
                 "respectively, i.e., <think> reasoning process here </think> <answer> answer "
                 "here </answer>. User: prompt. Assistant:")


def test_r1_zero_is_table_1():
  t = templates.get_template("r1_zero")
  # Table 1's red "prompt" is the placeholder: rendering the word itself gives the table back.
  assert t.render_prompt("prompt") == PAPER_TABLE_1
  rendered = t.render_prompt("What is 2 + 3?")
  assert rendered == PAPER_TABLE_1.replace("User: prompt.", "User: What is 2 + 3?.")
  assert rendered.endswith("User: What is 2 + 3?. Assistant:")


def test_r1_zero_response():
  t = templates.get_template("r1_zero")
  assert t.render_response("2 + 3 = 5", "5") == " <think>2 + 3 = 5</think> <answer>5</answer>"


def test_r1_chat_and_plain():
  chat = templates.get_template("r1_chat")
  assert chat.render_prompt("Hi?") == "<｜User｜>Hi?<｜Assistant｜>"
  assert chat.render_response("r", "a") == "<think>\nr\n</think>\n<answer>a</answer>"
  plain = templates.get_template("plain")
  assert plain.render_prompt("What is 2 + 3?") == "Question: What is 2 + 3?\nAnswer:"
  assert plain.render_response("2 + 3 = 5", "5") == " 2 + 3 = 5\n#### 5"


def test_braces_in_questions_survive():
  # LaTeX questions are full of braces; str.format would raise or eat them.
  q = r"Compute $\frac{1}{2} + {x}$ where {prompt} is literal."
  assert templates.get_template("plain").render_prompt(q) == f"Question: {q}\nAnswer:"


def test_unknown_template_names_choices():
  with pytest.raises(ValueError, match=r"unknown prompt template 'r2'.*plain.*r1_chat.*r1_zero.*hf_chat"):
    templates.get_template("r2")


# --- hf_chat: a tokenizer directory's chat template -----------------------------------------------

# Qwen2.5-Math-Instruct's ChatML template, cut to what one user turn exercises (the tools branch,
# the default system prompt, the `message.tool_calls` lookup on a message that has none).
QWEN_CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{{- tools | tojson }}{{- '<|im_end|>\\n' }}"
    "{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
    "\\\\boxed{}.<|im_end|>\\n' }}{%- endif %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# DeepSeek-R1-Distill-Qwen's template, cut the same way: bos first, the namespace, and the
# generation prompt that opens the reasoning block.
R1_DISTILL = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}")


def write_tokenizer_config(directory, **config):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
  return str(directory)


def test_hf_chat_qwen_chatml(tmp_path):
  path = write_tokenizer_config(tmp_path / "qwen", chat_template=QWEN_CHATML, bos_token=None,
                                eos_token="<|im_end|>")
  t = templates.get_template("hf_chat", tokenizer_path=path)
  q = r"What is $\frac{1}{2} + 3$?"
  assert t.name == "hf_chat"
  assert t.render_prompt(q) == ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                                "within \\boxed{}.<|im_end|>\n<|im_start|>user\n" + q +
                                "<|im_end|>\n<|im_start|>assistant\n")
  assert t.render_response("r", "a") == "<think>\nr\n</think>\n<answer>a</answer>"
  # A file in the directory (tokenizer.json) and the explicit `hf_chat:<dir>` name read the same.
  assert templates.get_template("hf_chat", os.path.join(path, "tokenizer.json")) == t
  assert templates.get_template("hf_chat:" + path) == t


def test_hf_chat_r1_distill_drops_bos_and_opens_think(tmp_path):
  path = write_tokenizer_config(tmp_path / "distill", chat_template=R1_DISTILL,
                                bos_token={"content": "<｜begin▁of▁sentence｜>", "lstrip": False},
                                eos_token={"content": "<｜end▁of▁sentence｜>"})
  t = templates.get_template("hf_chat", tokenizer_path=path)
  # The pipeline adds the bos id, so the template's own bos text is not part of the prompt.
  assert t.render_prompt("Hi {x}?") == "<｜User｜>Hi {x}?<｜Assistant｜><think>\n"
  # The prompt already opened the reasoning block: worked solutions continue inside it.
  assert t.opens_think
  assert t.render_response("r", "a") == "r\n</think>\n<answer>a</answer>"
  assert not any(templates.get_template(n).opens_think for n in ("r1_zero", "r1_chat", "plain"))


def test_hf_chat_reads_chat_template_jinja_and_named_lists(tmp_path):
  jinja_dir = write_tokenizer_config(tmp_path / "jinja", eos_token="</s>")
  (tmp_path / "jinja" / "chat_template.jinja").write_text(
      "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
      "{% if add_generation_prompt %}[assistant] {% endif %}", encoding="utf-8")
  assert templates.get_template("hf_chat", jinja_dir).render_prompt("q") == "[user] q\n[assistant] "
  named = write_tokenizer_config(tmp_path / "named", chat_template=[
      {"name": "tool_use", "template": "unused"},
      {"name": "default", "template": "U:{{ messages[0].content }} A:"}])
  assert templates.get_template("hf_chat", named).render_prompt("q") == "U:q A:"


def test_hf_chat_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="config.tokenizer.path"):
    templates.get_template("hf_chat")
  no_template = write_tokenizer_config(tmp_path / "none", eos_token="</s>")
  with pytest.raises(ValueError, match="has no chat template"):
    templates.get_template("hf_chat", no_template)
  # Content rewritten (here upper-cased) or dropped: the question is not in the prompt verbatim.
  upper = write_tokenizer_config(tmp_path / "upper", chat_template="User: {{ messages[0].content | upper }}")
  with pytest.raises(ValueError, match="content 0 times, expected once verbatim"):
    templates.get_template("hf_chat", upper)
  # A variable nobody provides (transformers callers pass extra kwargs; r1 does not).
  needs = write_tokenizer_config(tmp_path / "needs", chat_template="{{ system_message }} U: {{ messages[0].content }}")
  with pytest.raises(ValueError, match="system_message.*provided: .*add_generation_prompt"):
    templates.get_template("hf_chat", needs)
  # ... while an optional one, guarded by `is defined`, is fine.
  optional = write_tokenizer_config(tmp_path / "optional", chat_template=(
      "{% if enable_thinking is defined and enable_thinking %}T{% endif %}U: {{ messages[0].content }}"))
  assert templates.get_template("hf_chat", optional).render_prompt("q") == "U: q"
  raising = write_tokenizer_config(tmp_path / "raising", chat_template=(
      "{% if messages[0].role == 'user' %}{{ raise_exception('needs a system message first') }}{% endif %}"))
  with pytest.raises(ValueError, match="needs a system message first"):
    templates.get_template("hf_chat", raising)


# SmolLM2-135M-Instruct's chat template (its tokenizer_config.json), default system turn included.
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_hf_chat_keeps_a_bos_the_tokenizer_does_not_add_and_says_r1_zero_in_the_system_turn(tmp_path):
  # SmolLM2's bos_token is <|im_start|> with add_bos_token false: the pipeline adds no bos, so the
  # chat's first <|im_start|> must stay in the prompt text.
  path = write_tokenizer_config(tmp_path / "smollm2", chat_template=SMOLLM2, bos_token="<|im_start|>",
                                eos_token="<|im_end|>", add_bos_token=False)
  assert templates.get_template("hf_chat", path).render_prompt("Hi") == (
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  t = templates.get_template("hf_chat_r1_zero", path)
  assert t.name == "hf_chat_r1_zero" and not t.opens_think
  assert t.render_prompt("What is 2 + 3?") == (
      f"<|im_start|>system\n{templates.R1_ZERO_INSTRUCTIONS}<|im_end|>\n"
      "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
  assert templates.R1_ZERO_INSTRUCTIONS.startswith("A conversation between User and Assistant.")
  assert templates.R1_ZERO_INSTRUCTIONS.endswith("<answer> answer here </answer>.")
  assert templates.get_template("hf_chat_r1_zero:" + path) == t

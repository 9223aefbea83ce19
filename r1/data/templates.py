"""Prompt templates, chosen by name in the config (`config.data.template = "r1_zero"`).

A template turns a question into the prompt text the policy continues, and a (reasoning, answer)
pair into the response text an SFT example trains on. bos is not part of the text: the pipeline
adds the tokenizer's bos id.
"""

import dataclasses


# DeepSeek-R1 paper, Table 1, verbatim; `{prompt}` is the red "prompt" the paper replaces with the
# question during training.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. The reasoning process and answer are enclosed within <think> </think> "
    "and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:")

# DeepSeek-R1's chat format (tokenizer_config.json chat_template of deepseek-ai/DeepSeek-R1, one
# user turn, no system prompt); the role markers are single tokens in its tokenizer and in ours.
R1_CHAT_TEMPLATE = "<｜User｜>{prompt}<｜Assistant｜>"

# Zero-shot, for base-model evaluation; no instructions, no examples.
PLAIN_TEMPLATE = "Question: {prompt}\nAnswer:"


@dataclasses.dataclass(frozen=True)
class Template:
  """How questions become prompts and (reasoning, answer) pairs become responses.

  Attributes:
    name: the config name.
    prompt_format: str.format pattern with one `{prompt}` field.
    response_format: pattern with `{reasoning}` and `{answer}` fields for SFT responses.
  """
  name: str
  prompt_format: str
  response_format: str = " <think>{reasoning}</think> <answer>{answer}</answer>"

  def render_prompt(self, prompt: str) -> str:
    # Plain replace, not str.format: questions contain braces (LaTeX: \frac{1}{2}).
    return self.prompt_format.replace("{prompt}", prompt)

  def render_response(self, reasoning: str, answer: str) -> str:
    return self.response_format.replace("{reasoning}", reasoning).replace("{answer}", answer)


TEMPLATES = {
    "r1_zero": Template("r1_zero", R1_ZERO_TEMPLATE),
    # The chat model writes its reasoning between <think> tags and then a plain summary (R1 §2.3.1);
    # for our verifiable tasks the summary keeps the <answer> tags so the same rewards apply.
    "r1_chat": Template("r1_chat", R1_CHAT_TEMPLATE,
                        response_format="<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>"),
    "plain": Template("plain", PLAIN_TEMPLATE, response_format=" {reasoning}\n#### {answer}"),
}


def get_template(name: str) -> Template:
  """The template called `name`: one of r1_zero, r1_chat, plain."""
  try:
    return TEMPLATES[name]
  except KeyError:
    raise ValueError(f"unknown prompt template {name!r}; expected one of {sorted(TEMPLATES)}") \
        from None

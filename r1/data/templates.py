"""Prompt templates, chosen by name in the config (`config.data.template = "r1_zero"`).

A template turns a question into the prompt text the policy continues, and a (reasoning, answer)
pair into the response text an SFT example trains on. bos is not part of the text: the pipeline
adds the tokenizer's bos id.

`hf_chat` is the chat template a Hugging Face tokenizer ships (tokenizer_config.json
`chat_template`, a Jinja2 string): R1-Distill students are fine-tuned in their own chat format
(Qwen2.5's ChatML, R1-Distill's `<｜User｜>...<｜Assistant｜><think>\n`). It reads the tokenizer
directory of config.tokenizer.path, or the one named in `hf_chat:<dir>`.
"""

import dataclasses
import json
import os


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

  @property
  def opens_think(self) -> bool:
    """The prompt ends by opening the thinking block (`<think>`, as R1-Zero's and R1-Distill's do),
    so a completion starts inside it: format checks and SFT responses must not expect another."""
    return self.render_prompt("").rstrip().endswith("<think>")


TEMPLATES = {
    "r1_zero": Template("r1_zero", R1_ZERO_TEMPLATE),
    # The chat model writes its reasoning between <think> tags and then a plain summary (R1 §2.3.1);
    # for our verifiable tasks the summary keeps the <answer> tags so the same rewards apply.
    "r1_chat": Template("r1_chat", R1_CHAT_TEMPLATE,
                        response_format="<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>"),
    "plain": Template("plain", PLAIN_TEMPLATE, response_format=" {reasoning}\n#### {answer}"),
}


HF_CHAT = "hf_chat"
# R1-Zero's instructions in a chat model's own format: its system turn says them (Table 1's text up
# to its "User: ... Assistant:" framing, which the chat template's role markers replace), the user
# turn is the question (R1-Zero straight from an instruct model: configs/r1_zero_smollm2.py).
HF_CHAT_R1_ZERO = "hf_chat_r1_zero"
R1_ZERO_INSTRUCTIONS = R1_ZERO_TEMPLATE.split(" User: {prompt}", 1)[0]


def get_template(name: str, tokenizer_path: str | None = None) -> Template:
  """The template called `name`: one of r1_zero, r1_chat, plain, hf_chat (the chat template of the
  Hugging Face tokenizer at `tokenizer_path`; `hf_chat:<dir>` names the directory itself), or
  hf_chat_r1_zero (that chat template with R1-Zero's instructions as the system turn)."""
  for chat, system in ((HF_CHAT_R1_ZERO, R1_ZERO_INSTRUCTIONS), (HF_CHAT, None)):
    if name == chat or name.startswith(chat + ":"):
      path = name[len(chat) + 1:] or tokenizer_path
      if not path:
        raise ValueError(f"prompt template {name!r} reads a Hugging Face tokenizer's chat template: set "
                         f"config.tokenizer.path to the tokenizer directory, or name it: '{chat}:/path/to/dir'")
      return hf_chat_template(path, system=system, name=chat)
  try:
    return TEMPLATES[name]
  except KeyError:
    raise ValueError(f"unknown prompt template {name!r}; expected one of "
                     f"{sorted(TEMPLATES) + [HF_CHAT, HF_CHAT_R1_ZERO]}") from None


# --- Hugging Face chat templates -----------------------------------------------------------------

# Stands for the question while the chat template renders; the rendered text splits around it.
# No spaces or markup, so that templates that strip or escape content leave it whole.
_QUESTION_SENTINEL = "R1QuestionSentinel7f3c9a"
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _tokenizer_config(tokenizer_path: str) -> dict:
  """tokenizer_config.json of a tokenizer directory (or a file in it); {} if there is none."""
  directory = tokenizer_path if os.path.isdir(tokenizer_path) else os.path.dirname(tokenizer_path)
  config_path = os.path.join(directory, "tokenizer_config.json")
  if not os.path.exists(config_path):
    return {}
  with open(config_path, encoding="utf-8") as f:
    return json.load(f)


def read_chat_template(tokenizer_path: str) -> tuple[str, dict[str, str]]:
  """(the Jinja2 chat template, special token strings {bos_token, eos_token, ...}) of a Hugging Face
  tokenizer directory (or a file in it): tokenizer_config.json `chat_template` (a string, or a list
  of named templates of which "default"), else chat_template.jinja (newer transformers)."""
  directory = tokenizer_path if os.path.isdir(tokenizer_path) else os.path.dirname(tokenizer_path)
  config_path = os.path.join(directory, "tokenizer_config.json")
  config = _tokenizer_config(tokenizer_path)
  source = config.get("chat_template")
  if isinstance(source, list):
    named = {t.get("name"): t.get("template") for t in source}
    if "default" not in named:
      raise ValueError(f"{config_path}: chat_template lists {sorted(map(str, named))}, expected one named 'default'")
    source = named["default"]
  jinja_path = os.path.join(directory, "chat_template.jinja")
  if source is None and os.path.exists(jinja_path):
    with open(jinja_path, encoding="utf-8") as f:
      source = f.read()
  if not isinstance(source, str) or not source:
    raise ValueError(f"tokenizer directory {directory!r} has no chat template: expected a `chat_template` string "
                     "in tokenizer_config.json or a chat_template.jinja file (template 'hf_chat')")
  specials = {}
  for key in _SPECIAL_TOKEN_KEYS:
    value = config.get(key)
    value = value.get("content") if isinstance(value, dict) else value
    if isinstance(value, str):
      specials[key] = value
  return source, specials


def render_chat_template(source: str, messages: list[dict], *, add_generation_prompt: bool = True,
                         **variables) -> str:
  """Renders a Hugging Face chat template as transformers' apply_chat_template does (sandboxed
  Jinja2, trim_blocks, lstrip_blocks, loopcontrols, raise_exception, tojson), given `messages`,
  add_generation_prompt, tools=None, documents=None and `variables` (special tokens).

  A top-level name the template needs and nobody provides raises ValueError; a missing key of a
  provided object renders empty, as in transformers (`message.tool_calls` of a user message).
  """
  try:
    import jinja2  # pylint: disable=g-import-not-at-top
    import jinja2.sandbox  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("rendering a Hugging Face chat template needs jinja2: pip install 'r1[hf]'") from e

  env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                     undefined=_undefined_variable_class(),
                                                     extensions=["jinja2.ext.loopcontrols"])

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  # transformers' tojson: no HTML escaping, non-ASCII kept.
  env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
      x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
  env.globals["raise_exception"] = raise_exception
  context = {"messages": messages, "add_generation_prompt": add_generation_prompt, "tools": None,
             "documents": None, **variables}
  try:
    return env.from_string(source).render(**context)
  except jinja2.exceptions.UndefinedError as e:
    raise ValueError(f"chat template needs a variable r1 does not provide ({e}); provided: {sorted(context)}") \
        from None
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"chat template failed to render one user message: {type(e).__name__}: {e}") from None


def _undefined_variable_class():
  """A jinja2.Undefined that fails when a missing top-level variable is used, and is empty (like
  jinja2's default) for a missing key or attribute of a defined object."""
  import jinja2  # pylint: disable=g-import-not-at-top

  def strict(name):
    lenient = getattr(jinja2.Undefined, name)

    def method(self, *args):
      if self._undefined_obj is jinja2.utils.missing:  # pylint: disable=protected-access
        self._fail_with_undefined_error()  # pylint: disable=protected-access
      return lenient(self, *args)
    return method

  methods = {n: strict(n) for n in ("__str__", "__iter__", "__len__", "__bool__", "__eq__", "__ne__")}
  methods["__hash__"] = jinja2.Undefined.__hash__
  methods["__slots__"] = ()
  return type("UndefinedVariable", (jinja2.Undefined,), methods)


def hf_chat_template(tokenizer_path: str, system: str | None = None, name: str = HF_CHAT) -> Template:
  """The `hf_chat` Template (called `name`) of a Hugging Face tokenizer directory (see read_chat_template).

  One user turn [{"role": "user", "content": question}] (after a system turn saying `system`, if
  given) with add_generation_prompt=True renders as prefix + question + suffix: the prompt. A
  leading bos token is dropped from the prefix when the tokenizer prepends one (the pipeline adds
  the bos id then). The SFT response is the completion as is (a jsonl source's teacher
  text), then the tokenizer's eos; synthetic worked solutions are `<think>\n{reasoning}\n</think>`
  and the answer tags, without the `<think>` when the template already opens it (R1-Distill).
  """
  source, specials = read_chat_template(tokenizer_path)
  try:
    messages = [{"role": "system", "content": system}] if system else []
    text = render_chat_template(source, messages + [{"role": "user", "content": _QUESTION_SENTINEL}], **specials)
  except ValueError as e:
    raise ValueError(f"{tokenizer_path}: {e}") from None
  if text.count(_QUESTION_SENTINEL) != 1:
    raise ValueError(f"{tokenizer_path}: the chat template's rendering of one user message contains the message's "
                     f"content {text.count(_QUESTION_SENTINEL)} times, expected once verbatim: {text!r}")
  prefix, suffix = text.split(_QUESTION_SENTINEL)
  bos = specials.get("bos_token")
  # Only a bos the tokenizer prepends itself (r1.tokenizer's rule): SmolLM2's bos_token is
  # <|im_start|> with add_bos_token false, so there the prefix's first <|im_start|> is the chat's.
  if bos and prefix.startswith(bos) and _tokenizer_config(tokenizer_path).get("add_bos_token") is not False:
    prefix = prefix[len(bos):]
  if "{prompt}" in prefix + suffix:
    raise ValueError(f"{tokenizer_path}: the chat template renders a literal '{{prompt}}' around the question")
  template = Template(name, prefix + "{prompt}" + suffix)
  response = ("{reasoning}\n</think>\n<answer>{answer}</answer>" if template.opens_think
              else "<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>")
  return dataclasses.replace(template, response_format=response)

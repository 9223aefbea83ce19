"""What every training stage builds from its config: tokenizer, prompt sources, policy, optimizer.

Stages hand over through the workdir: each stage writes `<workdir>/policy/` (a Hugging Face
checkpoint: config.json + safetensors) and `<workdir>/tokenizer.model` when it finishes, and the
next stage starts from them (`config.init.hf_dir`, `config.tokenizer.path`).
"""

import os

import jax

import r1
from r1.data import sources, tasks, templates
from r1.model import get_model_config, init_variables
from r1.tokenizer import load_tokenizer, train_sentencepiece

POLICY_DIR = "policy"
TOKENIZER_FILE = "tokenizer.model"


def make_task(data_config):
  """The synthetic task named by data_config.task with data_config.task_knobs."""
  return tasks.make_task(data_config.task, **dict(data_config.get("task_knobs", {})))


def prompt_source(data_config, split: str = "train"):
  """PromptExamples for `split` ("train" or "eval") of data_config.source.

  source: "synthetic" (task + knobs; train and eval use disjoint seeds), "gsm8k", "math500",
  or "jsonl" (data_config.path, question_field, answer_field).
  """
  kind = data_config.source
  if kind == "synthetic":
    size = data_config.train_size if split == "train" else data_config.eval_size
    # Disjoint seeds: held-out problems are never trained on (a collision has probability ~0
    # for the sizes used, and the eval seed is fixed so before/after compare the same set).
    seed = data_config.seed if split == "train" else data_config.seed + 10_000
    return tasks.SyntheticSource(make_task(data_config), size, seed)
  if kind == "gsm8k":
    return sources.load_gsm8k("train" if split == "train" else "test")
  if kind == "math500":
    return sources.load_math500()
  if kind == "jsonl":
    return sources.load_prompts(data_config.path if split == "train" else data_config.eval_path,
                                question_field=data_config.question_field, answer_field=data_config.answer_field)
  raise ValueError(f"data.source={kind!r}: expected synthetic, gsm8k, math500 or jsonl")


def build_tokenizer(config, workdir: str):
  """The stage's tokenizer and its file: config.tokenizer.path if set, else a SentencePiece model
  trained on the task's templated prompts and worked solutions.

  The trained model is written to <workdir>/tokenizer.model once and reused, so a resumed run
  tokenises exactly as before.
  """
  path = config.tokenizer.get("path", "")
  if path:
    return load_tokenizer(path), path
  target = os.path.join(workdir, TOKENIZER_FILE)
  if not os.path.exists(target):
    template = templates.get_template(config.data.template)
    task = make_task(config.data)
    corpus = []
    for i in range(config.tokenizer.corpus_size):
      ex = task.example(config.data.seed + 20_000, i)
      corpus.append(template.render_prompt(ex.prompt) + template.render_response(*task.worked_solution(ex)))
    os.makedirs(workdir, exist_ok=True)
    train_sentencepiece(corpus, target[:-len(".model")], vocab_size=config.tokenizer.vocab_size)
  return load_tokenizer(target), target


def stop_tokens(config, tokenizer) -> list[int]:
  """EOS, plus `</answer>` when config.rollout.stop_at_answer (R1 templates end there)."""
  stops = [tokenizer.eos_id]
  if config.rollout.get("stop_at_answer", False):
    stops.append(tokenizer.token_to_id("</answer>"))
  return stops


def build_policy(config, tokenizer, mesh=None) -> r1.Policy:
  """The stage's starting policy: config.init.hf_dir if set, else random init of config.model.

  Random init sizes the vocabulary to the tokenizer's.
  """
  overrides = dict(config.model.get("overrides", {}))
  if config.init.get("hf_dir", ""):
    return r1.load_hf_checkpoint(config.init.hf_dir, mesh=mesh, **overrides)
  model_config = get_model_config(config.model.name, vocab_size=tokenizer.vocab_size, **overrides)
  variables = init_variables(model_config, jax.random.key(config.seed))
  if mesh is not None:
    from r1 import sharding  # pylint: disable=g-import-not-at-top
    from r1.model import abstract_variables  # pylint: disable=g-import-not-at-top
    variables = jax.device_put(variables, sharding.variable_shardings(abstract_variables(model_config), mesh))
  return r1.Policy(model_config, variables)


def export_policy(policy: r1.Policy, tokenizer_path: str | None, workdir: str) -> str:
  """Writes the stage's output: <workdir>/policy (HF format) and a copy of the tokenizer."""
  out = os.path.join(workdir, POLICY_DIR)
  r1.save_hf_checkpoint(policy, out)
  if tokenizer_path and os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(workdir, TOKENIZER_FILE)):
    with open(tokenizer_path, "rb") as src, open(os.path.join(workdir, TOKENIZER_FILE), "wb") as dst:
      dst.write(src.read())
  return out


def stage_done(workdir: str) -> bool:
  """A stage whose exported policy exists has finished; the pipeline skips it."""
  return os.path.exists(os.path.join(workdir, POLICY_DIR, "config.json"))

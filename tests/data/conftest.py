"""A tiny SentencePiece tokenizer shared by the data tests."""

import pytest

from r1 import tokenizer as tokenizer_lib
from r1.data import tasks, templates


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
  template = templates.get_template("r1_zero")
  corpus = []
  for name in ("arithmetic", "countdown"):
    task = tasks.make_task(name)
    for i in range(40):
      example = task.example(0, i)
      corpus.append(template.render_prompt(example.prompt))
      corpus.append(tasks.sft_example(task, example, template).response)
  prefix = str(tmp_path_factory.mktemp("tokenizer") / "tiny")
  return tokenizer_lib.train_sentencepiece(corpus, prefix, vocab_size=500)

"""Per-host data pipelines: the hosts' rows of each step, stacked in host order, are the batch one
host reads, for the RL prompt stream (each host reads only its rows) and packed SFT batches."""

import itertools

import numpy as np
import pytest

from r1 import tokenizer as tokenizer_lib
from r1.data import pipeline, tasks, templates

TEMPLATE = templates.get_template("plain")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  task = tasks.make_task("arithmetic", max_digits=3)
  corpus = [TEMPLATE.render_prompt(task.example(0, i).prompt) + tasks.sft_example(task, task.example(0, i),
                                                                                   TEMPLATE).response
            for i in range(60)]
  return tokenizer_lib.train_sentencepiece(corpus, str(tmp_path_factory.mktemp("tok") / "tiny"), vocab_size=400)


@pytest.mark.parametrize("hosts", [2, 3])
def test_prompt_rows_of_hosts_make_the_one_host_batch(tokenizer, hosts):
  # 21 examples, 3 per host per step: steps cross epoch boundaries mid-batch.
  source = tasks.SyntheticSource(tasks.make_task("arithmetic", max_digits=3), size=21, seed=0)
  make = lambda b, i, n: pipeline.rl_prompt_dataset(source, tokenizer, TEMPLATE, batch_size=b, seed=5,
                                                    length_buckets=(64,), process_index=i, process_count=n)
  one = list(itertools.islice(make(3 * hosts, 0, 1), 12))
  per_host = [list(itertools.islice(make(3, i, hosts), 12)) for i in range(hosts)]
  for step, batch in enumerate(one):
    ids = [e.id for host in per_host for e in host[step]["examples"]]
    assert ids == [e.id for e in batch["examples"]], step
    np.testing.assert_array_equal(np.concatenate([h[step]["prompt_tokens"] for h in per_host]),
                                  batch["prompt_tokens"])
  # Each host read only its rows: the first global batch's ids are split, not repeated.
  assert not set(e.id for e in per_host[0][0]["examples"]) & set(e.id for e in per_host[1][0]["examples"])


def test_packed_sft_rows_of_hosts_make_the_one_host_batch(tokenizer):
  source = tasks.SyntheticSFTSource(tasks.make_task("arithmetic", max_digits=3), size=30, template=TEMPLATE, seed=1)
  make = lambda b, i, n: pipeline.sft_dataset(source, tokenizer, TEMPLATE, seq_len=96, batch_size=b, seed=2,
                                              process_index=i, process_count=n)
  one = list(itertools.islice(make(4, 0, 1), 6))
  per_host = [list(itertools.islice(make(2, i, 2), 6)) for i in range(2)]
  for step, batch in enumerate(one):
    for key in pipeline.SFT_ARRAY_KEYS:
      np.testing.assert_array_equal(np.concatenate([h[step][key] for h in per_host]), batch[key])

r"""Data pipeline throughput: examples/s of the RL prompt and packed SFT pipelines.

Measures, for each worker count, GSM8K-train prompts in the R1-Zero template (RL batches) and
Countdown worked solutions (packed SFT rows), tokenised by a SentencePiece model trained here on the
same text. The first batch (worker start-up) is timed separately. Prints a table, then one JSON line.

  python benchmarks/bench_data.py --workers=0,2 --num_batches=50
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags

from r1 import tokenizer as tokenizer_lib
from r1.data import pipeline, sources, tasks, templates

_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker process counts to compare.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 50, "Batches timed per configuration.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Rows per batch (per host).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 1024, "SFT row length.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 2000, "SentencePiece vocabulary for the run.")


def _measure(make_dataset, examples_per_batch, num_batches):
  """(start-up seconds, examples/s over num_batches after the first)."""
  start = time.perf_counter()
  it = iter(make_dataset())
  first = next(it)
  startup = time.perf_counter() - start
  start = time.perf_counter()
  examples = 0
  for _ in range(num_batches):
    examples += examples_per_batch(next(it))
  del first
  return startup, examples / (time.perf_counter() - start)


def main(argv):
  del argv
  template = templates.get_template("r1_zero")
  gsm8k = sources.load_gsm8k("train")
  countdown = tasks.make_task("countdown")
  sft_source = tasks.SyntheticSFTSource(countdown, size=100_000, template=template)
  corpus = [template.render_prompt(e.prompt) for e in gsm8k.examples[:2000]]
  corpus += [sft_source[i].response for i in range(1000)]
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = tokenizer_lib.train_sentencepiece(corpus, os.path.join(tmp, "bench"),
                                                  vocab_size=_VOCAB_SIZE.value)
  batch_size = _BATCH_SIZE.value
  results = []
  for workers in (int(w) for w in _WORKERS.value):
    rl = lambda w=workers: pipeline.rl_prompt_dataset(  # pylint: disable=g-long-lambda
        gsm8k, tokenizer, template, batch_size=batch_size, seed=0,
        length_buckets=(256, 512), process_index=0, process_count=1, num_workers=w)
    startup, rate = _measure(rl, lambda b: int(b["valid"].sum()), _NUM_BATCHES.value)
    results.append({"pipeline": "rl_prompts_gsm8k", "workers": workers, "startup_s": startup,
                    "examples_per_s": rate})
    sft = lambda w=workers: pipeline.sft_dataset(  # pylint: disable=g-long-lambda
        sft_source, tokenizer, template, seq_len=_SEQ_LEN.value, batch_size=batch_size, seed=0,
        process_index=0, process_count=1, num_workers=w)
    startup, rate = _measure(sft, lambda b: int(b["segment_ids"].max(axis=1).sum()),
                             _NUM_BATCHES.value)
    results.append({"pipeline": "sft_packed_countdown", "workers": workers, "startup_s": startup,
                    "examples_per_s": rate})

  print(f"{'pipeline':<24}{'workers':>8}{'startup s':>11}{'examples/s':>13}")
  for r in results:
    print(f"{r['pipeline']:<24}{r['workers']:>8}{r['startup_s']:>11.2f}"
          f"{r['examples_per_s']:>13.0f}")
  print(json.dumps({"benchmark": "bench_data", "batch_size": batch_size,
                    "seq_len": _SEQ_LEN.value, "num_batches": _NUM_BATCHES.value,
                    "cpu_count": os.cpu_count(), "results": results}))


if __name__ == "__main__":
  app.run(main)

"""grain pipelines: sharding, padding, packing, determinism, exact resume."""

import itertools

import numpy as np
import pytest

from r1.data import pipeline, sources, tasks, templates

TEMPLATE = templates.get_template("plain")


def _prompt_source(n=37):
  return tasks.SyntheticSource(tasks.make_task("arithmetic", max_digits=4), size=n, seed=0)


def _sft_source(n=40):
  task = tasks.make_task("arithmetic", max_digits=3)
  return tasks.SyntheticSFTSource(task, size=n, template=TEMPLATE, seed=1)


def _ids(batch):
  return [e.id for e, ok in zip(batch["examples"], batch["valid"]) if ok]


def test_per_host_shards_partition_the_data(tiny_tokenizer):
  source = _prompt_source(37)
  per_host = []
  for host in range(3):
    ds = pipeline.rl_prompt_dataset(source, tiny_tokenizer, TEMPLATE, batch_size=4, seed=3,
                                    num_epochs=1, drop_remainder=False, process_index=host,
                                    process_count=3)
    per_host.append([i for batch in ds for i in _ids(batch)])
  sizes = [len(ids) for ids in per_host]
  assert sizes == [13, 12, 12]  # 37 split as evenly as possible.
  all_ids = [i for ids in per_host for i in ids]
  assert len(all_ids) == len(set(all_ids)) == 37  # No overlap, no loss.
  assert set(all_ids) == {source[i].id for i in range(37)}


def test_prompt_batches_are_left_padded_and_bucketed(tiny_tokenizer):
  source = _prompt_source(24)
  ds = pipeline.rl_prompt_dataset(source, tiny_tokenizer, TEMPLATE, batch_size=8, seed=0,
                                  length_buckets=(8, 16, 32, 64), num_epochs=1)
  batches = list(ds)
  assert len(batches) == 3
  for batch in batches:
    tokens, mask, lengths = batch["prompt_tokens"], batch["prompt_mask"], batch["prompt_lengths"]
    width = tokens.shape[1]
    assert tokens.dtype == np.int32 and mask.dtype == bool and tokens.shape == (8, width)
    assert width in (8, 16, 32, 64)
    assert lengths.max() <= width and (width == 8 or lengths.max() > width // 2)  # Smallest bucket.
    for row, example in enumerate(batch["examples"]):
      expected = tiny_tokenizer.encode(TEMPLATE.render_prompt(example.prompt), add_bos=True)
      n = lengths[row]
      assert n == len(expected)
      np.testing.assert_array_equal(tokens[row, width - n:], expected)
      assert (tokens[row, :width - n] == tiny_tokenizer.pad_id).all()
      np.testing.assert_array_equal(mask[row], np.arange(width) >= width - n)
      assert example.gold == source[int(example.id.split(":")[-1])].gold
    assert batch["valid"].all()


def test_length_filter_and_final_batch_fill(tiny_tokenizer):
  source = _prompt_source(30)
  lengths = [len(tiny_tokenizer.encode(TEMPLATE.render_prompt(source[i].prompt), add_bos=True))
             for i in range(30)]
  limit = sorted(lengths)[15]
  keep = {source[i].id for i in range(30) if lengths[i] <= limit}
  ds = pipeline.rl_prompt_dataset(source, tiny_tokenizer, TEMPLATE, batch_size=4, seed=0,
                                  length_buckets=(limit,), num_epochs=1, drop_remainder=False)
  batches = list(ds)
  assert {i for b in batches for i in _ids(b)} == keep
  last = batches[-1]
  n = len(keep) % 4 or 4
  assert last["prompt_tokens"].shape == (4, limit)
  assert last["valid"].tolist() == [True] * n + [False] * (4 - n)
  assert last["examples"][n:] == (None,) * (4 - n) and (last["prompt_lengths"][n:] == 0).all()


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tiny_tokenizer):
  def order(seed):
    ds = pipeline.rl_prompt_dataset(_prompt_source(16), tiny_tokenizer, TEMPLATE, batch_size=4,
                                    seed=seed, num_epochs=2)
    return [i for b in ds for i in _ids(b)]
  a, b = order(0), order(1)
  assert a == order(0) and a != b
  assert sorted(a[:16]) == sorted(a[16:]) and a[:16] != a[16:]


def _assert_batches_equal(expected, actual):
  assert expected.keys() == actual.keys()
  for key in expected:
    if isinstance(expected[key], np.ndarray):
      np.testing.assert_array_equal(expected[key], actual[key], err_msg=key)
    else:
      assert expected[key] == actual[key], key


@pytest.mark.parametrize("kind", ["rl", "sft"])
def test_resume_from_saved_state_equals_uninterrupted_run(tiny_tokenizer, tmp_path, kind):
  if kind == "rl":
    def make():
      return pipeline.rl_prompt_dataset(_prompt_source(10), tiny_tokenizer, TEMPLATE,
                                        batch_size=3, seed=5)  # Repeats forever, crosses epochs.
  else:
    def make():
      return pipeline.sft_dataset(_sft_source(12), tiny_tokenizer, TEMPLATE, seq_len=192,
                                  batch_size=2, seed=5)
  uninterrupted = list(itertools.islice(iter(make()), 12))
  it = iter(make())
  for _ in range(5):
    next(it)
  pipeline.save_iterator(str(tmp_path / "ckpt"), it)
  resumed = pipeline.restore_iterator(str(tmp_path / "ckpt"), iter(make()))
  for expected in uninterrupted[5:]:
    _assert_batches_equal(expected, next(resumed))
  # The in-memory state API gives the same.
  it = iter(make())
  next(it)
  state = it.get_state()
  fresh = iter(make())
  fresh.set_state(state)
  _assert_batches_equal(uninterrupted[1], next(fresh))


def test_sft_packing_segments_positions_and_loss_mask(tiny_tokenizer):
  source = _sft_source(24)
  seq_len, tokenize = 256, pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, 256)
  expected = {}
  for i in range(len(source)):
    row = tokenize(source[i])
    expected[tuple(row["inputs"])] = row
  ds = pipeline.sft_dataset(source, tiny_tokenizer, TEMPLATE, seq_len=seq_len, batch_size=2,
                            seed=0, num_epochs=1, num_packing_bins=4)
  seen, multi_segment_rows = [], 0
  for batch in ds:
    assert set(batch) == set(pipeline.SFT_ARRAY_KEYS)
    for key in pipeline.SFT_ARRAY_KEYS:
      assert batch[key].shape == (2, seq_len) and batch[key].dtype == np.int32, key
    for r in range(2):
      segments = batch["segment_ids"][r]
      pad = segments == 0
      assert (batch["loss_mask"][r][pad] == 0).all() and (batch["positions"][r][pad] == 0).all()
      assert (batch["inputs"][r][pad] == tiny_tokenizer.pad_id).all()
      ids = [s for s in np.unique(segments) if s > 0]
      assert ids == list(range(1, len(ids) + 1))
      multi_segment_rows += len(ids) > 1
      for s in ids:
        where = np.flatnonzero(segments == s)
        assert (np.diff(where) == 1).all()  # Contiguous.
        np.testing.assert_array_equal(batch["positions"][r][where], np.arange(len(where)))
        original = expected[tuple(batch["inputs"][r][where])]
        np.testing.assert_array_equal(batch["targets"][r][where], original["targets"])
        np.testing.assert_array_equal(batch["loss_mask"][r][where], original["loss_mask"])
        seen.append(tuple(batch["inputs"][r][where]))
  assert multi_segment_rows > 0
  assert len(seen) == len(set(seen)) and len(seen) >= len(source) - 4  # Last partial batch drops.


def test_sft_loss_mask_covers_exactly_the_response(tiny_tokenizer):
  example = sources.SFTExample("x", "What is 2 + 3?", " <think>2 + 3 = 5</think> <answer>5</answer>")
  row = pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, 512)(example)
  prompt = tiny_tokenizer.encode(TEMPLATE.render_prompt(example.prompt), add_bos=True)
  response = tiny_tokenizer.encode(example.response, add_eos=True)
  tokens = prompt + response
  np.testing.assert_array_equal(row["inputs"], tokens[:-1])
  np.testing.assert_array_equal(row["targets"], tokens[1:])
  assert row["loss_mask"].tolist() == [0] * (len(prompt) - 1) + [1] * len(response)
  assert tiny_tokenizer.decode(row["targets"][row["loss_mask"] == 1]) == example.response
  # Truncation keeps the front; dropping happens when no response target is left.
  short = pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, len(prompt) + 1)(example)
  assert len(short["inputs"]) == len(prompt) + 1 and short["loss_mask"].sum() == 2
  assert pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, len(prompt) - 1)(example) is None
  assert pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, 10, truncate=False)(example) is None


def test_unpacked_sft_rows(tiny_tokenizer):
  ds = pipeline.sft_dataset(_sft_source(6), tiny_tokenizer, TEMPLATE, seq_len=300, batch_size=3,
                            seed=0, pack=False, num_epochs=1)
  for batch in ds:
    assert batch["segment_ids"].max() == 1
    n = batch["segment_ids"].sum(axis=1)
    for r in range(3):
      np.testing.assert_array_equal(batch["positions"][r, :n[r]], np.arange(n[r]))


def test_worker_processes_give_the_same_batches(tiny_tokenizer, tmp_path):
  source = _prompt_source(40)
  lengths = sorted(len(tiny_tokenizer.encode(TEMPLATE.render_prompt(source[i].prompt),
                                             add_bos=True)) for i in range(40))

  def make(workers):
    # The bucket limit filters some prompts out, in the main process, after the workers.
    return pipeline.rl_prompt_dataset(source, tiny_tokenizer, TEMPLATE, batch_size=4, seed=1,
                                      length_buckets=(lengths[30],), num_workers=workers)
  in_process = list(itertools.islice(iter(make(0)), 15))
  it = iter(make(2))
  for expected in in_process[:6]:
    _assert_batches_equal(expected, next(it))
  pipeline.save_iterator(str(tmp_path / "ckpt"), it)
  resumed = pipeline.restore_iterator(str(tmp_path / "ckpt"), iter(make(2)))
  for expected in in_process[6:]:
    _assert_batches_equal(expected, next(resumed))


def test_bad_arguments(tiny_tokenizer):
  with pytest.raises(ValueError, match=r"shard index 3 not in \[0, 3\)"):
    pipeline.rl_prompt_dataset(_prompt_source(), tiny_tokenizer, TEMPLATE, batch_size=2, seed=0,
                               process_index=3, process_count=3)
  with pytest.raises(ValueError, match="data source is empty"):
    pipeline.rl_prompt_dataset([], tiny_tokenizer, TEMPLATE, batch_size=2, seed=0,
                               process_index=0, process_count=1)


def test_an_empty_file_is_named(tiny_tokenizer, tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(ValueError, match=f"data source is empty: {empty} \\(no records in the file\\)"):
    pipeline.rl_prompt_dataset(sources.load_prompts(str(empty)), tiny_tokenizer, TEMPLATE, batch_size=2, seed=0)
  # Every record malformed and skipped: the message says so, not only that the file is empty.
  bad = tmp_path / "bad.jsonl"
  bad.write_text("{not json\n[1]\n")
  with pytest.raises(ValueError, match=f"data source is empty: {bad} \\(2 malformed records skipped\\)"):
    pipeline.sft_dataset(sources.load_sft(str(bad), skip_malformed=True), tiny_tokenizer, TEMPLATE, seq_len=64,
                         batch_size=2, seed=0)


def test_sft_keeps_one_think_when_the_template_opens_it(tiny_tokenizer):
  # R1-Distill's chat template ends the prompt in `<think>\n`; a teacher sampled with r1_zero /
  # r1_chat wrote `<think>` itself. The row trains on one opening tag, the template's.
  opens = templates.Template("opens_think", "<｜User｜>{prompt}<｜Assistant｜><think>\n")
  example = sources.SFTExample("x", "What is 2 + 3?", " <think>2 + 3 = 5</think> <answer>5</answer>")
  row = pipeline.TokenizeSFT(tiny_tokenizer, opens, 512)(example)
  assert tiny_tokenizer.decode(row["targets"][row["loss_mask"] == 1]) == "2 + 3 = 5</think> <answer>5</answer>"
  # A template that does not open it keeps the response as written.
  row = pipeline.TokenizeSFT(tiny_tokenizer, TEMPLATE, 512)(example)
  assert tiny_tokenizer.decode(row["targets"][row["loss_mask"] == 1]) == example.response

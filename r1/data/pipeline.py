"""grain pipelines: fixed-shape RL prompt batches and packed SFT batches, with resumable state.

Both pipelines run: source -> seeded shuffle -> repeat -> this host's rows -> tokenise (optionally in
grain worker processes) -> filter -> batch (SFT: pack first). `batch_size` is per host.

Multi-host: the example stream (shuffle, then repeat) is the same on every host and for any number
of hosts; host i of P keeps the examples that fall in rows [i * b, (i + 1) * b) of each global batch
of P * b (`_HostRows`) and reads and tokenises only those. So the global batch of a step does not
depend on the number of hosts: a two-host run trains on exactly what one host would (as long as the
length filter drops nothing). SFT packs first-fit along the stream, which a host cannot do on its
share alone without changing which examples share a row, so with several hosts every host packs the
whole stream and keeps its rows (tokenising text costs little next to a training step).

Iterator state is grain's: `it.get_state()` / `it.set_state(state)`, saved and restored through
orbax with `save_iterator` / `restore_iterator` (or, inside a train-state `CheckpointManager`,
`ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it))`). A restored iterator yields exactly
the batches the uninterrupted one would have.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

from absl import flags
import grain
from grain import experimental as grain_experimental
import numpy as np

from r1.data.sources import PromptExample, SFTExample
from r1.data.templates import Template
from r1.tokenizer import Tokenizer

# The array fields of an RL prompt batch; everything else in it is host-side metadata.
PROMPT_ARRAY_KEYS = ("prompt_tokens", "prompt_mask", "prompt_lengths", "valid")
SFT_ARRAY_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def host_shard(process_index: int | None = None, process_count: int | None = None):
  """(index, count) of this host's shard; defaults to JAX's process index and count."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"shard index {process_index} not in [0, {process_count})")
  return process_index, process_count


class _HostRows(grain.MapDataset):
  """Host `index` of `count`'s share of a stream cut into global batches of count * rows examples:
  rows [index * rows, (index + 1) * rows) of each. Element k of the share is element
  (k // rows * count + index) * rows + k % rows of the stream."""

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, rows: int, index: int, count: int):
    super().__init__(parent)
    self._rows, self._index, self._count = rows, index, count
    full, rest = divmod(len(parent), rows * count)
    self._length = full * rows + min(max(rest - index * rows, 0), rows)

  def __len__(self) -> int:
    return self._length

  def _parent_index(self, k: int) -> int:
    block, row = divmod(k, self._rows)
    return (block * self._count + self._index) * self._rows + row

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    return self._parent[self._parent_index(k)]

  def __str__(self) -> str:
    return f"_HostRows(rows={self._rows}, index={self._index}, count={self._count})"


def _describe(source: Sequence[Any]) -> str:
  """Where a source's examples come from, for errors: a file's path and how many of its records
  were skipped as malformed (sources.RecordSource), else the source's type."""
  path = getattr(source, "path", "")
  if not path:
    return f"a {type(source).__name__} with no file"
  skipped = getattr(source, "num_skipped", 0)
  return f"{path} ({skipped} malformed records skipped)" if skipped else f"{path} (no records in the file)"


def _examples(source: Sequence[Any], *, seed: int, shuffle: bool, num_epochs: int | None,
              process_index: int | None, process_count: int | None, rows_per_host: int) -> grain.MapDataset:
  """Shuffle -> repeat -> this host's rows of each global batch, as a MapDataset of examples."""
  if len(source) == 0:
    raise ValueError(f"data source is empty: {_describe(source)}")
  index, count = host_shard(process_index, process_count)
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if count > 1:
    # After the shuffle and repeat, so the stream (and every global batch) is that of one host.
    ds = _HostRows(ds, rows_per_host, index, count)
    if len(ds) == 0:
      raise ValueError(f"host shard {index}/{count} of a {len(source)}-example source is empty: "
                       f"{_describe(source)}")
  return ds


# Elements a worker tokenises per message: per-example pickling between processes costs more than
# tokenising a prompt, so workers exchange chunks.
_WORKER_CHUNK = 64
# In-process reading: a small thread-prefetch buffer overlaps tokenisation with the train step
# (which releases the GIL); grain's default (16 threads, 500 elements) only adds overhead here.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=128)
# Inside a worker, a few chunks ahead is enough; grain's default (500) makes every worker run far
# ahead of the consumer and starve it of CPU.
_WORKER_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


class _Unchunk(grain_experimental.FlatMapTransform):
  max_fan_out = _WORKER_CHUNK

  def flat_map(self, element):
    return element


def _with_workers(ds: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  """Runs the MapDataset so far (tokenisation, the costly step) in `num_workers` processes.

  Workers tokenise contiguous chunks of the stream; their chunks are interleaved back in stream
  order and flattened, so everything downstream (filter, pack, batch, in this process) sees the same
  sequence whatever the worker count, and batches do not depend on it.
  """
  if num_workers <= 0:
    return ds.to_iter_dataset(read_options=_READ_OPTIONS)
  # grain's workers read absl flags; outside an absl app (tests, notebooks) use their defaults.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  ds = ds.batch(_WORKER_CHUNK, batch_fn=list).to_iter_dataset(read_options=_WORKER_READ_OPTIONS)
  ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return grain_experimental.FlatMapIterDataset(ds, _Unchunk())


# --- RL prompts --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenizePrompt:
  """PromptExample -> {"tokens": i32[n], "example": PromptExample}; bos + templated prompt."""
  tokenizer: Tokenizer
  template: Template
  add_bos: bool = True

  def __call__(self, example: PromptExample) -> dict[str, Any]:
    text = self.template.render_prompt(example.prompt)
    tokens = self.tokenizer.encode(text, add_bos=self.add_bos)
    return {"tokens": np.asarray(tokens, np.int32), "example": example}


@dataclasses.dataclass(frozen=True)
class CollatePrompts:
  """Left-pads a list of tokenised prompts into one fixed-shape batch.

  The width T is the smallest of `length_buckets` that fits the longest prompt, so a jitted sampler
  compiles once per bucket, not once per length. Left padding puts every prompt's last token at
  column T-1: decoding starts at the same position for all rows.

  Returns a dict:
    prompt_tokens: i32[B, T], pad_id on the left.
    prompt_mask: bool[B, T], True on real tokens.
    prompt_lengths: i32[B], real tokens per row (0 for filler rows).
    valid: bool[B], False for filler rows that pad a short final batch.
    examples: tuple of B PromptExample (None for filler rows): gold, verifier and meta for the
      reward step. Not an array; keep it on the host.
  """
  batch_size: int
  pad_id: int
  length_buckets: tuple[int, ...]

  def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    longest = max(len(r["tokens"]) for r in rows)
    width = next((b for b in self.length_buckets if b >= longest), None)
    if width is None:
      raise ValueError(f"prompt of {longest} tokens exceeds the largest bucket "
                       f"{self.length_buckets[-1]}; the length filter should have dropped it")
    tokens = np.full((self.batch_size, width), self.pad_id, np.int32)
    lengths = np.zeros((self.batch_size,), np.int32)
    for i, row in enumerate(rows):
      n = len(row["tokens"])
      tokens[i, width - n:] = row["tokens"]
      lengths[i] = n
    mask = np.arange(width)[None, :] >= (width - lengths)[:, None]
    examples = tuple(r["example"] for r in rows) + (None,) * (self.batch_size - len(rows))
    return {"prompt_tokens": tokens, "prompt_mask": mask, "prompt_lengths": lengths,
            "valid": np.arange(self.batch_size) < len(rows), "examples": examples}


def rl_prompt_dataset(source: Sequence[PromptExample], tokenizer: Tokenizer, template: Template,
                      *, batch_size: int, seed: int,
                      length_buckets: Sequence[int] = (64, 128, 256, 512),
                      num_epochs: int | None = None, shuffle: bool = True,
                      drop_remainder: bool = True, add_bos: bool = True,
                      process_index: int | None = None, process_count: int | None = None,
                      num_workers: int = 0) -> grain.IterDataset:
  """Fixed-shape batches of templated, tokenised, left-padded prompts (see `CollatePrompts`).

  Args:
    source: PromptExamples (a RecordSource, SyntheticSource, list, ...).
    tokenizer, template: how prompts become tokens.
    batch_size: prompts per host per batch.
    seed: the shuffle seed; the same on every host.
    length_buckets: allowed batch widths, ascending; prompts longer than the last are dropped.
    num_epochs: passes over the data; None repeats forever (RL training).
    shuffle: False keeps file order (evaluation).
    drop_remainder: if False, a short final batch is filled with rows marked `valid=False`, so no
      example is lost and shapes stay fixed (evaluation with num_epochs=1).
    add_bos: prepend the tokenizer's bos id.
    process_index, process_count: this host's block of rows in each global batch of
      process_count * batch_size (with a mesh: where its devices sit along the batch axes,
      r1.sharding.host_batch_rows); default JAX's process index and count.
    num_workers: grain worker processes for tokenisation; 0 runs in this process.
  """
  buckets = tuple(sorted(int(b) for b in length_buckets))
  if not buckets or buckets[0] < 1:
    raise ValueError(f"length_buckets must be positive lengths, got {length_buckets}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  ds = _examples(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                 process_index=process_index, process_count=process_count, rows_per_host=batch_size)
  ds = ds.map(TokenizePrompt(tokenizer, template, add_bos))
  ds = _with_workers(ds, num_workers)
  ds = ds.filter(lambda row: len(row["tokens"]) <= buckets[-1])
  return ds.batch(batch_size, drop_remainder=drop_remainder,
                  batch_fn=CollatePrompts(batch_size, tokenizer.pad_id, buckets))


# --- SFT ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenizeSFT:
  """SFTExample -> next-token-prediction arrays, shifted per example (before packing, so no target
  ever crosses into the next packed example).

  tokens = [bos] + prompt + response + [eos]; inputs = tokens[:-1], targets = tokens[1:],
  loss_mask = 1 where the target is a response token or the final eos. Examples longer than
  `seq_len` are truncated (`truncate=True`) or dropped; either way an example with no response
  target left is dropped (returns None, filtered next).
  """
  tokenizer: Tokenizer
  template: Template
  seq_len: int
  truncate: bool = True

  def __call__(self, example: SFTExample) -> dict[str, np.ndarray] | None:
    prompt_text, response_text = self.template.render_prompt(example.prompt), example.response
    if self.template.opens_think and response_text.lstrip().startswith("<think>"):
      # The student's template opens the thinking block (R1-Distill's); a teacher sampled with a
      # template that does not wrote its own `<think>`: train on one, not two.
      response_text = response_text.lstrip()[len("<think>"):]
    prompt = self.tokenizer.encode(prompt_text, add_bos=True)
    response = self.tokenizer.encode(response_text, add_eos=True)
    tokens = np.asarray(prompt + response, np.int32)
    is_response = np.arange(len(tokens)) >= len(prompt)
    inputs, targets, loss_mask = tokens[:-1], tokens[1:], is_response[1:].astype(np.int32)
    if len(inputs) > self.seq_len:
      if not self.truncate:
        return None
      inputs, targets, loss_mask = (x[:self.seq_len] for x in (inputs, targets, loss_mask))
    if not loss_mask.any():
      return None
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


@dataclasses.dataclass(frozen=True)
class PadToLength:
  """One example per row (no packing), in the packed layout: segment 1, positions 0..n-1."""
  seq_len: int
  pad_id: int

  def __call__(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(row["inputs"])
    out = {}
    for key, fill in (("inputs", self.pad_id), ("targets", self.pad_id), ("loss_mask", 0)):
      out[key] = np.full((self.seq_len,), fill, np.int32)
      out[key][:n] = row[key]
    out["segment_ids"] = (np.arange(self.seq_len) < n).astype(np.int32)
    out["positions"] = np.where(out["segment_ids"] > 0, np.arange(self.seq_len), 0).astype(np.int32)
    return out


def _rename_packed(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  # grain writes segment ids/positions per packed feature; all features share them.
  return {"inputs": row["inputs"], "targets": row["targets"], "loss_mask": row["loss_mask"],
          "segment_ids": row["inputs_segment_ids"], "positions": row["inputs_positions"]}


def sft_dataset(source: Sequence[SFTExample], tokenizer: Tokenizer, template: Template, *,
                seq_len: int, batch_size: int, seed: int, pack: bool = True,
                num_packing_bins: int | None = None, num_epochs: int | None = None,
                shuffle: bool = True, truncate: bool = True,
                process_index: int | None = None, process_count: int | None = None,
                num_workers: int = 0) -> grain.IterDataset:
  """Batches of tokenised (prompt, response) pairs, packed several to a row.

  Each batch is a dict of int32 arrays of shape [B, seq_len]:
    inputs: token ids fed to the model (pad_id in padding).
    targets: the next token for each input (pad_id in padding).
    loss_mask: 1 where the target is a response token (or the eos ending it); 0 on prompt targets
      and padding. The loss is sum(mask * nll) / sum(mask).
    segment_ids: 1, 2, ... per packed example within a row; 0 is padding. Attention must not cross
      segments.
    positions: position within the segment, restarting at 0 for each (RoPE positions).

  Args:
    pack: first-fit pack examples into rows; False gives one example per row.
    num_packing_bins: rows filled at once while packing; more bins pack tighter; default
      `batch_size`. Per host, like batch_size: with several hosts the global stream is packed
      with num_packing_bins * process_count bins.
    The other arguments are as for `rl_prompt_dataset`.
  """
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  index, count = host_shard(process_index, process_count)
  if count > 1:
    # Packing is sequential over the stream: pack the global stream, keep this host's rows (see the
    # module docstring).
    ds = sft_dataset(source, tokenizer, template, seq_len=seq_len, batch_size=batch_size * count, seed=seed,
                     pack=pack, num_packing_bins=num_packing_bins and num_packing_bins * count,
                     num_epochs=num_epochs, shuffle=shuffle, truncate=truncate, process_index=0, process_count=1,
                     num_workers=num_workers)
    return ds.map(lambda batch: {k: v[index * batch_size:(index + 1) * batch_size] for k, v in batch.items()})
  ds = _examples(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                 process_index=0, process_count=1, rows_per_host=batch_size)
  ds = ds.map(TokenizeSFT(tokenizer, template, seq_len, truncate))
  ds = _with_workers(ds, num_workers)
  ds = ds.filter(lambda row: row is not None)
  if pack:
    lengths = {"inputs": seq_len, "targets": seq_len, "loss_mask": seq_len}
    padding = {"inputs": tokenizer.pad_id, "targets": tokenizer.pad_id, "loss_mask": 0}
    ds = grain_experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, padding_struct=padding,
        num_packing_bins=num_packing_bins or batch_size, seed=seed, shuffle_bins=shuffle)
    ds = ds.map(_rename_packed)
  else:
    ds = ds.map(PadToLength(seq_len, tokenizer.pad_id))
  return ds.batch(batch_size, drop_remainder=True)


# --- Checkpointing -----------------------------------------------------------------------------


def save_iterator(directory: str, iterator: grain.DatasetIterator) -> None:
  """Saves the iterator's position under `directory` (one file per host) with orbax."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as checkpointer:
    checkpointer.save(directory, args=grain.checkpoint.CheckpointSave(iterator), force=True)


def restore_iterator(directory: str, iterator: grain.DatasetIterator) -> grain.DatasetIterator:
  """Moves a fresh iterator of the same pipeline to the position saved by `save_iterator`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as checkpointer:
    return checkpointer.restore(directory, args=grain.checkpoint.CheckpointRestore(iterator))

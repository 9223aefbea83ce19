"""Prompt and SFT sources: JSONL and Parquet files with configurable field names; GSM8K, MATH-500.

A source is a `RecordSource`: an in-memory sequence of `PromptExample` or `SFTExample` (len and
indexing, which is all grain's `MapDataset.source` needs) plus how many malformed records were
skipped. Prompt sets here are thousands of rows, so reading them whole is simpler and faster than
random access into the files.

A malformed record (a line that is not UTF-8, bad JSON, a missing or non-string field, a GSM8K
answer with no `#### `) raises `MalformedRecordError` naming the file and line; with
`skip_malformed=True` it is skipped and counted in `RecordSource.num_skipped` instead.
"""

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from absl import logging

DATASETS_DIR = os.path.join(os.path.dirname(__file__), "datasets")


@dataclasses.dataclass(frozen=True)
class PromptExample:
  """One RL/eval prompt and what its reward needs.

  Attributes:
    id: stable identifier ("gsm8k_test:17", "countdown:3").
    prompt: the question, before any template.
    gold: the reference answer as a string (a number, a LaTeX expression, a Countdown solution).
    verifier: which reward checks it: "math" (GSM8K, MATH), "arithmetic", "countdown", "code".
    meta: what the verifier needs beyond gold (Countdown numbers and target, code tests).
  """
  id: str
  prompt: str
  gold: str
  verifier: str = "math"
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SFTExample:
  """A (prompt, response) pair: cold-start, rejection-sampled or distillation data.

  `prompt` is the raw question (the pipeline applies the template); `response` is the full target
  text, e.g. " <think>...</think> <answer>...</answer>".
  """
  id: str
  prompt: str
  response: str


class MalformedRecordError(ValueError):
  """A record in a data file cannot be read; the message names the file and line."""

  def __init__(self, path: str, line: int, reason: str):
    super().__init__(f"{path}:{line}: malformed record: {reason}")
    self.path, self.line, self.reason = path, line, reason


class RecordSource(Sequence):
  """Examples read from one file, with the count of malformed records skipped."""

  def __init__(self, examples: Sequence[Any], path: str = "", num_skipped: int = 0):
    self.examples = list(examples)
    self.path = path
    self.num_skipped = num_skipped

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, index):
    return self.examples[index]

  def __repr__(self) -> str:
    return f"RecordSource({self.path!r}, {len(self)} examples, {self.num_skipped} skipped)"


def _read_rows(path: str) -> Iterator[tuple[int, Any]]:
  """(line number, parsed row) for JSONL; (row number, dict) for Parquet. Bad JSON is a str row."""
  if path.endswith(".parquet"):
    try:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"reading {path} needs pyarrow: pip install 'r1[hf]'") from e
    for i, row in enumerate(pq.read_table(path).to_pylist()):
      yield i + 1, row
    return
  # Bytes, decoded line by line: a line that is not UTF-8 is one malformed record (named, and
  # skippable), not a UnicodeDecodeError that ends the whole read.
  with open(path, "rb") as f:
    for i, raw in enumerate(f):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield i + 1, f"not UTF-8 (byte {raw[e.start:e.start + 1]!r} at column {e.start + 1})"
        continue
      if not line.strip():
        continue  # A blank line (often a trailing one) carries no record.
      try:
        yield i + 1, json.loads(line)
      except json.JSONDecodeError as e:
        yield i + 1, f"invalid JSON ({e.msg} at column {e.colno})"


def _string_field(row: dict[str, Any], name: str) -> str:
  if name not in row:
    raise ValueError(f"missing field {name!r} (fields: {sorted(row)})")
  value = row[name]
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    value = str(value)  # Numeric answers ("answer": 42) are common in prompt sets.
  if not isinstance(value, str):
    raise ValueError(f"field {name!r} is {type(value).__name__}, expected a string")
  return value


def _read(path: str, parse_row: Callable[[int, dict[str, Any]], Any],
          skip_malformed: bool) -> RecordSource:
  if not os.path.exists(path):
    raise FileNotFoundError(f"data file {path!r} does not exist")
  examples, skipped = [], 0
  for line, row in _read_rows(path):
    try:
      if isinstance(row, str):
        raise ValueError(row)
      if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
      examples.append(parse_row(line, row))
    except ValueError as e:
      if not skip_malformed:
        raise MalformedRecordError(path, line, str(e)) from None
      skipped += 1
  if skipped:
    logging.warning("%s: skipped %d malformed records", path, skipped)
  return RecordSource(examples, path, skipped)


def load_prompts(path: str, *, question_field: str = "question", answer_field: str = "answer",
                 tests_field: str | None = None, id_field: str | None = None,
                 gold_fn: Callable[[str], str] | None = None, verifier: str = "math",
                 name: str | None = None, skip_malformed: bool = False) -> RecordSource:
  """Prompts from a `.jsonl` or `.parquet` file.

  Args:
    path: the file; `.parquet` needs pyarrow, anything else is read as JSONL.
    question_field, answer_field: field names of the question and the gold answer.
    tests_field: for code prompts, a field holding the tests; stored as `meta["tests"]`.
    id_field: a field with a stable id; default `{name}:{line number}`.
    gold_fn: turns the raw answer field into the gold string; raise ValueError if it cannot.
    verifier: the reward that checks these prompts.
    name: the id prefix; default the file name without extension.
    skip_malformed: skip and count malformed records instead of raising.
  """
  name = name or os.path.splitext(os.path.basename(path))[0]

  def parse_row(line: int, row: dict[str, Any]) -> PromptExample:
    question = _string_field(row, question_field)
    gold = _string_field(row, answer_field)
    if gold_fn is not None:
      gold = gold_fn(gold)
    meta = {}
    if tests_field is not None:
      if tests_field not in row:
        raise ValueError(f"missing field {tests_field!r} (fields: {sorted(row)})")
      meta["tests"] = row[tests_field]
      if verifier == "code":  # A row the code reward cannot score fails here, with its file:line.
        from r1.rewards.code import validate_tests  # pylint: disable=g-import-not-at-top
        validate_tests(meta["tests"])
    example_id = _string_field(row, id_field) if id_field else f"{name}:{line}"
    return PromptExample(example_id, question, gold, verifier, meta)

  return _read(path, parse_row, skip_malformed)


def load_sft(path: str, *, prompt_field: str = "prompt", response_field: str = "response",
             id_field: str | None = None, skip_malformed: bool = False) -> RecordSource:
  """(prompt, response) pairs from a `.jsonl` or `.parquet` file, for SFT."""
  name = os.path.splitext(os.path.basename(path))[0]

  def parse_row(line: int, row: dict[str, Any]) -> SFTExample:
    example_id = _string_field(row, id_field) if id_field else f"{name}:{line}"
    return SFTExample(example_id, _string_field(row, prompt_field),
                      _string_field(row, response_field))

  return _read(path, parse_row, skip_malformed)


def write_jsonl(path: str, examples: Sequence[PromptExample | SFTExample]) -> None:
  """Writes examples as JSONL with their dataclass field names (readable by load_prompts/load_sft)."""
  with open(path, "w", encoding="utf-8") as f:
    for example in examples:
      f.write(json.dumps(dataclasses.asdict(example), ensure_ascii=False) + "\n")


def gsm8k_gold(solution: str) -> str:
  """GSM8K's gold: the number after the final `#### `, with thousands commas stripped."""
  marker = solution.rfind("#### ")
  if marker < 0:
    raise ValueError("GSM8K answer has no '#### ' line")
  gold = solution[marker + len("#### "):].strip().replace(",", "")
  if not gold:
    raise ValueError("GSM8K answer is empty after '#### '")
  return gold


def load_gsm8k(split: str = "test", *, path: str | None = None,
               skip_malformed: bool = False) -> RecordSource:
  """GSM8K (openai/grade-school-math, shipped in r1/data/datasets): split "train" or "test"."""
  if split not in ("train", "test"):
    raise ValueError(f"GSM8K split {split!r}; expected 'train' or 'test'")
  path = path or os.path.join(DATASETS_DIR, f"gsm8k_{split}.jsonl")
  return load_prompts(path, gold_fn=gsm8k_gold, name=f"gsm8k_{split}",
                      skip_malformed=skip_malformed)


def load_math500(*, path: str | None = None, skip_malformed: bool = False) -> RecordSource:
  """MATH-500 (PRM800K's test subset of MATH); gold is the `answer` field."""
  path = path or os.path.join(DATASETS_DIR, "math500.jsonl")
  return load_prompts(path, question_field="problem", answer_field="answer",
                      id_field="unique_id", name="math500", skip_malformed=skip_malformed)

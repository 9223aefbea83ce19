"""Tokenizers behind one interface: SentencePiece `.model` files and Hugging Face `tokenizer.json`.

Our own tiny models (synthetic tasks, the CPU demo) use a SentencePiece model trained with
`train_sentencepiece`; real checkpoints (DeepSeek-V3, Qwen) ship a Hugging Face `tokenizer.json`,
read through the optional `tokenizers` package (extra `hf`). Both give:

  encode(text, add_bos=False, add_eos=False) -> list[int]
  decode(ids, skip_special=False) -> str
  bos_id, eos_id, pad_id, vocab_size, token_to_id(piece), special_ids

`encode` never adds special tokens unless asked, so that prompt and response can be encoded
separately and concatenated (the SFT loss mask needs the boundary).
"""

import abc
import json
import os
from collections.abc import Iterable, Sequence

import sentencepiece as spm

# The R1 templates' tags (R1 Table 1). Trained models keep each one a single piece, so a reward can
# find them by id and a sampler can stop on `</answer>`.
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
# DeepSeek's chat role markers (r1_chat template); tokenizer.json of DeepSeek-V3/R1 has them too.
CHAT_TOKENS = ("<｜User｜>", "<｜Assistant｜>")
DEFAULT_SPECIAL_TOKENS = TAG_TOKENS + CHAT_TOKENS


class Tokenizer(abc.ABC):
  """Text <-> token ids. Subclasses set `bos_id`, `eos_id`, `pad_id` (ints) and `vocab_size`."""

  bos_id: int
  eos_id: int
  pad_id: int
  vocab_size: int

  @abc.abstractmethod
  def _encode(self, text: str) -> list[int]:
    """Ids of `text` with no special tokens added."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
    """Text of `ids`; `skip_special` drops bos/eos/pad (tags like <think> always decode)."""

  @abc.abstractmethod
  def token_to_id(self, piece: str) -> int | None:
    """Id of a single vocabulary piece, or None if `piece` is not one piece."""

  # False for models trained without a BOS token (Qwen2/2.5: tokenizer_config.json `bos_token: null`):
  # encode(add_bos=True) then prepends nothing, as transformers' tokenizer would.
  uses_bos: bool = True

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = self._encode(text)
    return ([self.bos_id] if add_bos and self.uses_bos else []) + ids + ([self.eos_id] if add_eos else [])

  @property
  def special_ids(self) -> dict[str, int]:
    """Ids of bos/eos/pad and of every template tag that is a single piece in this vocabulary."""
    ids = {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id}
    for piece in DEFAULT_SPECIAL_TOKENS:
      i = self.token_to_id(piece)
      if i is not None:
        ids[piece] = i
    return ids


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model` file.

  Models from `train_sentencepiece` round-trip text exactly (identity normalisation, byte
  fallback, no dummy prefix); third-party models keep whatever normalisation they were trained with.
  """

  def __init__(self, model_path: str, pad_id: int | None = None):
    if not os.path.exists(model_path):
      raise FileNotFoundError(f"SentencePiece model {model_path!r} does not exist")
    self.model_path = model_path
    self._sp = spm.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = self._sp.get_piece_size()
    self.bos_id = self._sp.bos_id()
    self.eos_id = self._sp.eos_id()
    if self.bos_id < 0 or self.eos_id < 0:
      raise ValueError(f"SentencePiece model {model_path!r} has no bos/eos "
                       f"(bos_id={self.bos_id}, eos_id={self.eos_id}); retrain with both")
    # Models trained without a pad piece pad with eos: padded positions are masked anyway.
    sp_pad = self._sp.pad_id()
    self.pad_id = pad_id if pad_id is not None else (sp_pad if sp_pad >= 0 else self.eos_id)

  def _encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
    # SentencePiece already drops control pieces (bos/eos/pad) when decoding.
    del skip_special
    return self._sp.decode([int(i) for i in ids])

  def token_to_id(self, piece: str) -> int | None:
    i = self._sp.piece_to_id(piece)
    # piece_to_id maps anything unknown to unk; only a real match counts.
    return i if self._sp.id_to_piece(i) == piece and i != self._sp.unk_id() else None


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` (DeepSeek-V3, Qwen, ...), via the optional `tokenizers` package.

  bos/eos/pad come from the arguments, else from `tokenizer_config.json` next to the file (how HF
  checkpoints record them), else from common names. `vocab_size` counts added tokens; a model's
  embedding table may be larger (padded), never smaller.
  """

  def __init__(self, path: str, bos_token: str | None = None, eos_token: str | None = None,
               pad_token: str | None = None):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("reading tokenizer.json needs the `tokenizers` package: "
                        "pip install 'r1[hf]'") from e
    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"tokenizer file {path!r} does not exist")
    self.path = path
    self._tok = tokenizers.Tokenizer.from_file(path)
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    config = _read_hf_tokenizer_config(os.path.dirname(path))
    # A config that sets bos_token to null, or add_bos_token to false, says the model never saw a
    # BOS (Qwen2.5); bos_id is still resolved (special_ids, decode) but encode does not prepend it.
    self.uses_bos = bool(bos_token) or not (config.get("bos_token", "") is None
                                            or config.get("add_bos_token") is False)
    self.bos_id = self._resolve("bos", bos_token or config.get("bos_token"),
                                ("<｜begin▁of▁sentence｜>", "<s>", "<bos>", "<|endoftext|>"))
    self.eos_id = self._resolve("eos", eos_token or config.get("eos_token"),
                                ("<｜end▁of▁sentence｜>", "</s>", "<eos>", "<|im_end|>",
                                 "<|endoftext|>"))
    pad = pad_token or config.get("pad_token")
    self.pad_id = self._resolve("pad", pad, ("<pad>", "<|endoftext|>")) if pad else self.eos_id
    self._special = {self.bos_id, self.eos_id, self.pad_id}

  def _resolve(self, role: str, token: str | None, fallbacks: tuple[str, ...]) -> int:
    candidates = (token,) if token else fallbacks
    for t in candidates:
      i = self._tok.token_to_id(t)
      if i is not None:
        return i
    raise ValueError(f"{self.path}: no {role} token: tried {candidates}; pass {role}_token=")

  def _encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
    ids = [int(i) for i in ids]
    if skip_special:
      ids = [i for i in ids if i not in self._special]
    return self._tok.decode(ids, skip_special_tokens=False)

  def token_to_id(self, piece: str) -> int | None:
    return self._tok.token_to_id(piece)


def _read_hf_tokenizer_config(directory: str) -> dict:
  """bos/eos/pad token strings from `tokenizer_config.json` (which stores str or {"content": str};
  an explicit null is kept as None), and add_bos_token when it is set."""
  path = os.path.join(directory, "tokenizer_config.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  out = {}
  for key in ("bos_token", "eos_token", "pad_token"):
    value = config.get(key, "")
    if isinstance(value, dict):
      value = value.get("content")
    if isinstance(value, str) and value:
      out[key] = value
    elif value is None:
      out[key] = None
  if isinstance(config.get("add_bos_token"), bool):
    out["add_bos_token"] = config["add_bos_token"]
  return out


def load_tokenizer(path: str, **kwargs) -> Tokenizer:
  """A SentencePiece `.model`, a `tokenizer.json`, or a checkpoint directory holding either."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "tokenizer.json")):
      return HFTokenizer(path, **kwargs)
    models = sorted(f for f in os.listdir(path) if f.endswith(".model"))
    if len(models) == 1:
      return SentencePieceTokenizer(os.path.join(path, models[0]), **kwargs)
    raise FileNotFoundError(f"{path!r}: expected tokenizer.json or exactly one .model file, "
                            f"found {models or 'neither'}")
  if path.endswith(".json"):
    return HFTokenizer(path, **kwargs)
  return SentencePieceTokenizer(path, **kwargs)


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int = 512, *,
                        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
                        model_type: str = "bpe") -> SentencePieceTokenizer:
  """Trains a small SentencePiece model on `texts`; writes `{model_prefix}.model` and `.vocab`.

  For the synthetic tasks and the tiny demo. Ids: pad=0, unk=1, bos=2, eos=3, then
  `special_tokens` (each always one piece, also inside words), then learned pieces and 256 byte
  pieces (byte fallback: any text encodes, nothing maps to unk). Digits are split one per piece,
  which makes column arithmetic learnable. Normalisation is the identity, so decode(encode(s)) == s.
  `vocab_size` must leave room for the 256 bytes and the specials (>= ~300); on a corpus too small
  to fill it the model comes out smaller.
  """
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("train_sentencepiece: the corpus is empty")
  directory = os.path.dirname(model_prefix)
  if directory:
    os.makedirs(directory, exist_ok=True)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_prefix=model_prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=1.0,
      byte_fallback=True,
      split_digits=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      user_defined_symbols=list(special_tokens),
      pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      hard_vocab_limit=False,
      # Lines are whole prompts/responses; SentencePiece's default cap (4192 bytes) would drop them.
      max_sentence_length=1 << 16,
      minloglevel=2,
  )
  return SentencePieceTokenizer(model_prefix + ".model")

"""Tokenizers: SentencePiece training/loading and Hugging Face tokenizer.json behind one interface."""

import json
import os

import pytest

from r1 import tokenizer as tokenizer_lib

CORPUS = [
    "<think> 12 + 34: ones 2 + 4 = 6, tens 1 + 3 = 4 </think> <answer>46</answer>",
    "What is 123 + 456? Let us add the columns from the right.",
    "A conversation between User and Assistant. The user asks a question.",
    "<｜User｜>Using the numbers [3, 5, 7], make 22.<｜Assistant｜>",
] * 10


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("sp") / "tiny")
  return tokenizer_lib.train_sentencepiece(CORPUS, prefix, vocab_size=320)


def test_sentencepiece_special_tokens_are_single_pieces(sp):
  specials = sp.special_ids
  assert (specials["pad"], specials["bos"], specials["eos"]) == (0, 2, 3)
  for piece in tokenizer_lib.DEFAULT_SPECIAL_TOKENS:
    assert sp.encode(piece) == [specials[piece]], piece
  # Tags stay single pieces inside running text, with no space around them.
  ids = sp.encode("x<think>y</think>z")
  assert specials["<think>"] in ids and specials["</think>"] in ids
  assert len(set(specials.values())) == len(specials)


@pytest.mark.parametrize("text", [
    "<think> 12 + 34 = 46 </think> <answer>46</answer>",
    "  two leading spaces,\ttabs\nand newlines\n\n",
    "unseen characters: é ü 漢字 😀 ∫ → byte fallback",
    "<｜User｜>hi<｜Assistant｜><think>\n",
])
def test_sentencepiece_round_trip(sp, text):
  ids = sp.encode(text, add_bos=True, add_eos=True)
  assert ids[0] == sp.bos_id and ids[-1] == sp.eos_id
  assert 1 not in ids  # unk: byte fallback covers every character.
  assert sp.decode(ids) == text
  assert max(ids) < sp.vocab_size


def test_sentencepiece_splits_digits(sp):
  assert len(sp.encode("12345")) == 5


def test_load_tokenizer_dispatch(sp, tmp_path):
  loaded = tokenizer_lib.load_tokenizer(sp.model_path)
  assert isinstance(loaded, tokenizer_lib.SentencePieceTokenizer)
  assert loaded.encode("What is 1 + 2?") == sp.encode("What is 1 + 2?")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenizer_lib.load_tokenizer(str(tmp_path / "missing.model"))
  with pytest.raises(FileNotFoundError, match="tokenizer.json or exactly one .model"):
    tokenizer_lib.load_tokenizer(str(tmp_path))


def test_train_rejects_empty_corpus(tmp_path):
  with pytest.raises(ValueError, match="corpus is empty"):
    tokenizer_lib.train_sentencepiece([], str(tmp_path / "x"))


def _build_hf_tokenizer(directory):
  """A small BPE tokenizer.json made with `tokenizers` itself, plus a tokenizer_config.json."""
  tokenizers = pytest.importorskip("tokenizers")
  specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<pad>",
              *tokenizer_lib.DEFAULT_SPECIAL_TOKENS]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=400, special_tokens=specials,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"bos_token": {"content": specials[0]}, "eos_token": specials[1],
               "pad_token": "<pad>"}, f)
  return tok


def test_hf_tokenizer_json(tmp_path):
  raw = _build_hf_tokenizer(tmp_path / "ckpt")
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "ckpt"))
  assert isinstance(tok, tokenizer_lib.HFTokenizer)
  assert tok.bos_id == raw.token_to_id("<｜begin▁of▁sentence｜>")
  assert tok.eos_id == raw.token_to_id("<｜end▁of▁sentence｜>")
  assert tok.pad_id == raw.token_to_id("<pad>")
  assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True)
  for piece in tokenizer_lib.DEFAULT_SPECIAL_TOKENS:
    assert tok.encode(piece) == [tok.special_ids[piece]]
  text = "<think> 12 + 34 = 46 </think> <answer>46</answer> é😀"
  ids = tok.encode(text, add_bos=True, add_eos=True)
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert tok.decode(ids[1:-1]) == text
  assert tok.decode(ids, skip_special=True) == text
  assert tok.token_to_id("<not a token>") is None


def test_hf_tokenizer_explicit_tokens_and_errors(tmp_path):
  _build_hf_tokenizer(tmp_path / "ckpt")
  path = str(tmp_path / "ckpt" / "tokenizer.json")
  os.remove(tmp_path / "ckpt" / "tokenizer_config.json")
  tok = tokenizer_lib.HFTokenizer(path, bos_token="<think>", eos_token="</answer>")
  assert tok.bos_id == tok.special_ids["<think>"]
  assert tok.pad_id == tok.eos_id  # No pad token given: pad with eos.
  with pytest.raises(ValueError, match="no bos token"):
    tokenizer_lib.HFTokenizer(path, bos_token="<nope>")


@pytest.mark.parametrize("config,uses_bos", [
    ({"bos_token": None, "eos_token": "<｜end▁of▁sentence｜>"}, False),          # Qwen2.5: no BOS at all
    ({"bos_token": "<｜begin▁of▁sentence｜>", "add_bos_token": False}, False),
    ({"bos_token": "<｜begin▁of▁sentence｜>", "add_bos_token": True}, True),    # DeepSeek, R1-Distill
    ({}, True),
])
def test_hf_tokenizer_adds_bos_only_when_the_model_uses_one(tmp_path, config, uses_bos):
  raw = _build_hf_tokenizer(tmp_path / "ckpt")
  with open(tmp_path / "ckpt" / "tokenizer_config.json", "w", encoding="utf-8") as f:
    json.dump(config, f)
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "ckpt"))
  assert tok.uses_bos == uses_bos
  ids = tok.encode("12 + 34", add_bos=True)
  assert ids == ([tok.bos_id] if uses_bos else []) + tok.encode("12 + 34")
  assert tok.bos_id == raw.token_to_id("<｜begin▁of▁sentence｜>")  # still known, for decoding and special_ids

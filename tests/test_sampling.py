"""The latent-cache sampler against HF generate, teacher-forced forwards and sampling statistics."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1
from r1 import sampling
from r1.model import get_model_config, init_variables

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
CASES = sorted(d for d in os.listdir(FIXTURES) if not d.startswith("_"))


@pytest.fixture(scope="module")
def tiny_policy():
  config = get_model_config("tiny_v3")
  variables = init_variables(config, jax.random.key(0))
  # Scale the embedding so the random policy has peaked, token-dependent distributions.
  variables["params"]["embed_tokens"] = variables["params"]["embed_tokens"] * 50
  return r1.Policy(config, variables)


def _teacher_forced_logprobs(policy, prompt, completion, temperature=1.0):
  full = np.array([list(prompt) + list(completion)], np.int32)
  logits = np.asarray(policy.logits(full))[0] / (temperature if temperature > 0 else 1.0)
  logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  return np.array([float(logp[len(prompt) - 1 + j, completion[j]]) for j in range(len(completion))])


@pytest.mark.parametrize("case", CASES)
def test_greedy_equals_hf_generate(case):
  ref = np.load(os.path.join(FIXTURES, case, "reference.npz"))
  policy = r1.load_hf_checkpoint(os.path.join(FIXTURES, case))
  out = policy.generate(ref["greedy_prompt"].tolist(), num_samples=2, max_new_tokens=8, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens).reshape(2, 2, 8)[:, 0], ref["greedy_tokens"])
  np.testing.assert_array_equal(np.asarray(out.tokens).reshape(2, 2, 8)[:, 1], ref["greedy_tokens"])


@pytest.mark.parametrize("case", ["v3_qlora_yarn_groups", "v2_lite_greedy"])
@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_logprobs_equal_teacher_forced_forward(case, temperature):
  policy = r1.load_hf_checkpoint(os.path.join(FIXTURES, case))
  prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15]]  # ragged: left padding and distinct positions
  out = policy.generate(prompts, num_samples=3, max_new_tokens=6, temperature=temperature, seed=1)
  assert out.tokens.shape == (6, 6) and bool(out.mask.all())
  for row in range(6):
    prompt = prompts[row // 3]
    ref = _teacher_forced_logprobs(policy, prompt, np.asarray(out.tokens[row]).tolist(), temperature)
    np.testing.assert_allclose(np.asarray(out.logprobs[row]), ref, atol=1e-4)


def test_greedy_equals_argmax_of_repeated_full_forwards(tiny_policy):
  prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11]]
  out = tiny_policy.generate(prompts, num_samples=1, max_new_tokens=10, temperature=0.0)
  for row, prompt in enumerate(prompts):
    seq = list(prompt)
    for _ in range(10):
      # Right-padded to a fixed 16 so one program serves every length (causal: padding is unseen).
      padded = np.zeros((1, 16), np.int32)
      padded[0, :len(seq)] = seq
      logits = np.asarray(tiny_policy.logits(padded))[0, len(seq) - 1]
      seq.append(int(np.argmax(logits)))
    assert np.asarray(out.tokens[row]).tolist() == seq[len(prompt):]
  # Greedy rows of one prompt agree, and the completions are not degenerate.
  assert len(set(map(tuple, np.asarray(out.tokens).tolist()))) == 3


def test_stop_tokens_end_rows_with_padding_and_early_exit(tiny_policy):
  prompts = [[3, 4, 5, 6, 7], [9, 10, 11]]
  free = tiny_policy.generate(prompts, max_new_tokens=8, temperature=0.0)
  stop = int(free.tokens[0, 2])
  assert stop not in np.asarray(free.tokens[1, :]).tolist()
  out = tiny_policy.generate(prompts, max_new_tokens=8, temperature=0.0, stop_tokens=[stop, 10**6])
  np.testing.assert_array_equal(out.tokens[0], list(np.asarray(free.tokens[0, :3])) + [0] * 5)
  np.testing.assert_array_equal(out.mask[0], [True] * 3 + [False] * 5)
  np.testing.assert_array_equal(out.tokens[1], free.tokens[1])
  assert list(np.asarray(out.lengths)) == [3, 8] and list(np.asarray(out.stopped)) == [True, False]
  assert float(jnp.abs(out.logprobs[0, 3:]).max()) == 0.0
  assert int(out.decode_steps) == 8
  # Every row stops at its first token: the loop exits after one step.
  first = tiny_policy.generate(prompts, max_new_tokens=8, temperature=0.0,
                               stop_tokens=[int(free.tokens[0, 0]), int(free.tokens[1, 0])])
  assert int(first.decode_steps) == 1 and list(np.asarray(first.lengths)) == [1, 1]


def test_same_seed_same_tokens_other_seed_other_tokens(tiny_policy):
  kwargs = dict(num_samples=4, max_new_tokens=12, temperature=1.0)
  a = tiny_policy.generate([[1, 2, 3]], seed=7, **kwargs)
  b = tiny_policy.generate([[1, 2, 3]], seed=7, **kwargs)
  c = tiny_policy.generate([[1, 2, 3]], seed=8, **kwargs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
  assert len(set(map(tuple, np.asarray(a.tokens).tolist()))) > 1  # the G samples differ


def test_prompts_in_one_bucket_reuse_the_compiled_programs(tiny_policy):
  tiny_policy.generate([[1, 2, 3]], num_samples=2, max_new_tokens=5)
  before = sampling.compile_count()
  tiny_policy.generate([[4, 5, 6, 7, 8, 9]], num_samples=2, max_new_tokens=5, temperature=0.3, top_p=0.9, seed=3)
  assert sampling.compile_count() == before


def _chi_square(counts, probs):
  expected = probs * counts.sum()
  keep = expected > 0
  assert counts[~keep].sum() == 0, "sampled a token of probability zero"
  return float((((counts - expected) ** 2)[keep] / expected[keep]).sum()), int(keep.sum()) - 1


CHI2_999 = {3: 16.27, 4: 18.47, 7: 24.32}  # 0.999 quantiles: a correct sampler fails 1 in 1000


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (2.0, 0, 1.0), (0.5, 0, 1.0),
                                                     (1.0, 4, 1.0), (1.0, 0, 0.8)])
def test_sampling_distribution_chi_square(temperature, top_k, top_p):
  logits = jnp.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
  n = 40000
  tokens, logprobs = jax.jit(sampling.sample_token)(jnp.broadcast_to(logits, (n, 8)), jax.random.key(0),
                                                    temperature, top_k, top_p)
  counts = np.bincount(np.asarray(tokens), minlength=8).astype(np.float64)
  p = np.asarray(jax.nn.softmax(logits / temperature), np.float64)
  order = np.argsort(-p)
  keep = np.zeros(8, bool)
  if top_k:
    keep[order[:top_k]] = True
  elif top_p < 1:
    preceding = np.cumsum(p[order]) - p[order]
    keep[order[preceding < top_p]] = True
  else:
    keep[:] = True
  target = np.where(keep, p, 0)
  target /= target.sum()
  stat, dof = _chi_square(counts, target)
  assert stat < CHI2_999[dof], (stat, counts, target * n)
  # Reported logprobs are the tempered, untruncated ones.
  np.testing.assert_allclose(np.asarray(logprobs), np.log(p)[np.asarray(tokens)], atol=1e-5)


def test_first_argmax_is_argmax():
  x = jax.random.normal(jax.random.key(3), (64, 1000))
  np.testing.assert_array_equal(sampling.first_argmax(x), jnp.argmax(x, axis=-1))
  np.testing.assert_array_equal(sampling.first_argmax(jnp.array([[1.0, 3.0, 3.0, 0.0]])), [1])  # first of ties


def test_tiny_top_p_is_greedy():
  logits = jax.random.normal(jax.random.key(1), (256, 50)) * 2
  tokens, _ = sampling.sample_token(logits, jax.random.key(2), 1.0, 0, 1e-6)
  np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))


def test_cache_bytes_per_token():
  c = get_model_config("deepseek_v3")
  assert sampling.cache_bytes_per_token(c) == (512 + 64) * 61 * 4
  assert sampling.cache_bytes_per_token(c.replace(dtype="bfloat16")) == (512 + 64) * 61 * 2
  assert sampling.cache_bytes_per_token(c, absorb=False) == 128 * (192 + 128) * 61 * 4


def test_expanded_cache_decode_equals_absorbed():
  policy = r1.load_hf_checkpoint(os.path.join(FIXTURES, "v3_qlora_yarn_groups"))
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=1.0, seed=4)
  latent = sampling.generate(policy.config, policy.variables, [[5, 6, 7], [8, 9]], **kwargs)
  expanded = sampling.generate(policy.config, policy.variables, [[5, 6, 7], [8, 9]], absorb=False, **kwargs)
  np.testing.assert_array_equal(latent.tokens, expanded.tokens)
  np.testing.assert_allclose(latent.logprobs, expanded.logprobs, atol=1e-5)


def test_array_prompts_with_lengths_equal_list_prompts(tiny_policy):
  arr = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]], np.int32)
  a = tiny_policy.generate(arr, [3, 5], max_new_tokens=4, temperature=0.0)
  b = tiny_policy.generate([[3, 4, 5], [6, 7, 8, 9, 10]], max_new_tokens=4, temperature=0.0)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  with pytest.raises(ValueError, match="at least one token"):
    tiny_policy.generate([[1], []], max_new_tokens=2)

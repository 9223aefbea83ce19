"""Evaluation: metrics against closed forms and enumeration, voting, grading, end-to-end reports."""

import dataclasses
import fractions
import itertools
import json
import math

import jax
import numpy as np
import pytest

import r1
from r1 import sampling
from r1 import tokenizer as tokenizer_lib
from r1.data import tasks
from r1.data import templates
from r1.data.sources import PromptExample
from r1.eval import grading
from r1.eval import metrics as eval_metrics
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.model import get_model_config, init_variables
from r1.rewards import math as math_reward


# ----------------------------------------------------------------------------------------------
# pass@k, pass@1.

def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
  """Share of the k-subsets of n samples (the first c correct) that hold a correct sample."""
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_subset_enumeration_and_closed_form():
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        expected = _pass_at_k_by_enumeration(n, c, k)
        closed = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert eval_metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
        assert closed == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow():
  # C(2000, 1000) ~ 1e600 overflows float64; the product form must still be exact-ish.
  n, c, k = 2000, 3, 1000
  exact = 1 - fractions.Fraction(math.comb(n - c, k), math.comb(n, k))
  assert eval_metrics.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-10)
  got = eval_metrics.pass_at_k(np.array([10, 10, 10]), np.array([0, 1, 10]), 1)
  np.testing.assert_allclose(got, [0.0, 0.1, 1.0])


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
  with pytest.raises(ValueError, match="pass_at_k"):
    eval_metrics.pass_at_k(n, c, k)


def test_pass_at_1_mean_and_mean_pass_at_k():
  correct = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0]], bool)
  assert eval_metrics.pass_at_1_mean(correct) == pytest.approx((0.25 + 1 + 0 + 0.5) / 4)
  # pass@k with n = k samples is "any correct"; pass@2 from the enumeration of pairs.
  assert eval_metrics.mean_pass_at_k(correct, 4) == pytest.approx(3 / 4)
  expected2 = np.mean([_pass_at_k_by_enumeration(4, c, 2) for c in (1, 4, 0, 2)])
  assert eval_metrics.mean_pass_at_k(correct, 2) == pytest.approx(expected2)
  assert eval_metrics.pass_at_k_values(4) == [1, 2, 4]
  assert eval_metrics.pass_at_k_values(6) == [1, 2, 4, 6]
  assert eval_metrics.pass_at_k_values(1) == [1]
  with pytest.raises(ValueError, match="bool\\[P, k\\]"):
    eval_metrics.pass_at_1_mean(np.zeros(4, bool))


# ----------------------------------------------------------------------------------------------
# Confidence intervals and lengths.

def test_wilson_interval_known_values():
  lo, hi = eval_metrics.wilson_interval(8, 10)
  assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Standard table value.
  lo, hi = eval_metrics.wilson_interval(0, 20)
  assert lo == 0.0 and 0.1 < hi < 0.2  # Non-degenerate at p = 0.
  with pytest.raises(ValueError, match="successes"):
    eval_metrics.wilson_interval(11, 10)


def test_bootstrap_ci_covers_the_mean_with_the_normal_width():
  rng = np.random.default_rng(0)
  scores = (rng.random(2000) < 0.3).astype(float)
  lo, hi = eval_metrics.bootstrap_ci(scores, num_resamples=2000)
  assert lo < scores.mean() < hi
  normal_width = 2 * 1.96 * scores.std() / np.sqrt(scores.size)
  assert hi - lo == pytest.approx(normal_width, rel=0.15)
  small_lo, small_hi = eval_metrics.bootstrap_ci(scores[:100])
  assert small_hi - small_lo > 2 * (hi - lo)  # Fewer problems, wider interval.
  assert eval_metrics.bootstrap_ci(scores, seed=3) == eval_metrics.bootstrap_ci(scores, seed=3)


def test_length_stats():
  stats = eval_metrics.length_stats([3, 10, 5, 10], [True, False, True, False])
  assert stats == {"mean_length": 7.0, "max_length": 10.0, "p50_length": 7.5,
                   "truncated_frac": 0.5}


# ----------------------------------------------------------------------------------------------
# Voting and grading.

def test_majority_vote_groups_and_breaks_ties_by_first_sample():
  same = lambda a, b: a.lower() == b.lower()  # pylint: disable=unnecessary-lambda-assignment
  assert eval_metrics.majority_vote(["a", "b", "B", "a"], same) == (0, 2)  # Tie: "a" came first.
  assert eval_metrics.majority_vote(["b", "a", "A", "a"], same) == (1, 3)
  assert eval_metrics.majority_vote([None, "x", None, "y", "Y"], same) == (3, 2)
  assert eval_metrics.majority_vote([None, None], same) == (None, 0)


def _math_example(gold: str) -> PromptExample:
  return PromptExample(id="m", prompt="q", gold=gold, verifier="math")


def _completions(answers):
  return [f"<think>working</think> <answer>{a}</answer>" for a in answers]


@pytest.mark.parametrize("gold,cons", [("1/2", True), ("3", False)])
def test_cons_at_k_counts_equivalent_answers_as_one_vote(gold, cons):
  # "0.5", "1/2" and "\frac{1}{2}" are one answer with three votes; "3" has two.
  answers = ["3", "0.5", "1/2", "3", "\\frac{1}{2}"]
  report = protocol.dataset_metrics([_math_example(gold)], [_completions(answers)],
                                  np.full((1, 5), 9), np.ones((1, 5), bool))
  sample = report["samples"][0]
  assert sample["voted_answer"] == "0.5" and sample["votes"] == 3
  assert report["cons@k"] == float(cons)
  assert report["pass@1"] == pytest.approx(3 / 5 if cons else 2 / 5)
  assert report["format_rate"] == 1.0


def test_cons_at_k_can_lose_where_pass_at_k_wins():
  # Two identical wrong answers outvote one right one: cons@k 0, pass@k 1.
  report = protocol.dataset_metrics([_math_example("7")], [_completions(["5", "7", "5"])],
                                  np.full((1, 3), 4), np.ones((1, 3), bool))
  assert report["cons@k"] == 0.0 and report["pass@k"]["3"] == 1.0
  assert report["pass@1"] == pytest.approx(1 / 3)


def test_countdown_vote_joins_different_correct_expressions():
  task = tasks.make_task("countdown")
  example = task.example(0, 0)
  right_a, right_b = example.gold, f"({example.gold})"
  wrong = "1 + 1"
  assert not tasks.get_verifier("countdown")(wrong, example.gold, example.meta)
  report = protocol.dataset_metrics(
      [example], [_completions([wrong, right_a, wrong, right_b, right_a])],
      np.full((1, 5), 4), np.ones((1, 5), bool))
  assert report["samples"][0]["voted_answer"] == right_a
  assert report["samples"][0]["votes"] == 3
  assert report["cons@k"] == 1.0


def test_grade_routes_each_example_to_its_verifier():
  arithmetic = tasks.make_task("arithmetic").example(0, 1)
  countdown = tasks.make_task("countdown").example(0, 2)
  examples = [_math_example("\\frac{1}{2}"), _math_example("\\frac{1}{2}"), arithmetic,
              arithmetic, countdown, countdown]
  completions = _completions(["0.5", "0.6", arithmetic.gold, "0.5", countdown.gold, "abc"])
  correct, answers = grading.grade(completions, examples)
  np.testing.assert_array_equal(correct, [True, False, True, False, True, False])
  assert answers[2] == arithmetic.gold
  # The arithmetic verifier calls int(gold): "abc" as a vote's gold is "different", not a crash,
  # and "N," (not an int() gold) still votes with "N" because both are correct.
  g = arithmetic.gold
  row = ["abc", "abc", f"{g},", g, g]
  row_correct, _ = grading.grade(_completions(row), [arithmetic] * 5)
  np.testing.assert_array_equal(row_correct, [False, False, True, True, True])
  cons, voted, votes = grading.consensus([row], row_correct[None], [arithmetic])
  assert (votes[0], voted[0], cons[0]) == (3, f"{g},", True)
  with pytest.raises(ValueError, match="'code'"):
    grading.grade(["x"], [PromptExample("c", "q", "g", verifier="code")])


class _FakeTokenizer:
  vocab_size, eos_id = 10, 3

  def token_to_id(self, piece):
    return {"</answer>": 7}.get(piece)


def test_completion_ids_strip_eos_keep_answer_tag_and_drop_padded_vocab():
  tok = _FakeTokenizer()
  row = np.array([5, 6, 3, 0, 0])
  assert protocol.completion_ids(row, 3, True, [3, 7], tok) == [5, 6]
  assert protocol.completion_ids(np.array([5, 7, 0]), 2, True, [3, 7], tok) == [5, 7]
  # Truncated rows keep every token; ids past the tokenizer (padded embeddings) decode to nothing.
  assert protocol.completion_ids(np.array([5, 12, 3]), 3, False, [3], tok) == [5, 3]


@dataclasses.dataclass
class _EchoPolicy:
  """Sample g of a prompt is [prompt[0], g, ...]: which prompt made a row is readable."""
  calls: list = dataclasses.field(default_factory=list)

  def generate(self, prompts, *, num_samples, max_new_tokens, seed, **kwargs):
    del kwargs
    self.calls.append((len(prompts), seed))
    tokens = np.zeros((len(prompts) * num_samples, max_new_tokens), np.int32)
    for b, p in enumerate(prompts):
      for g in range(num_samples):
        tokens[b * num_samples + g, :2] = (p[0], g)
    n = len(tokens)
    return sampling.SampleOutput(tokens=tokens, logprobs=np.zeros(tokens.shape, np.float32),
                                 lengths=np.full(n, 2, np.int32), mask=tokens != 0,
                                 stopped=np.ones(n, bool), decode_steps=2)


def test_sample_completions_pads_the_last_batch_and_drops_its_rows():
  policy = _EchoPolicy()
  prompts = [[10 + i, 1] for i in range(5)]
  out = protocol.sample_completions(policy, prompts, k=3, batch_size=2, max_new_tokens=4,
                                        temperature=1.0, top_p=1.0, top_k=0, stop_tokens=[3],
                                        seed=0)
  assert [size for size, _ in policy.calls] == [2, 2, 2]  # One static batch shape.
  assert len({seed for _, seed in policy.calls}) == 3     # A fresh stream per batch.
  assert out["tokens"].shape == (5, 3, 4)
  np.testing.assert_array_equal(out["tokens"][:, :, 0], np.repeat(np.arange(10, 15)[:, None], 3, 1))
  np.testing.assert_array_equal(out["tokens"][:, :, 1], np.tile(np.arange(3), (5, 1)))


# ----------------------------------------------------------------------------------------------
# End to end on the tiny random policy.

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
  template = templates.get_template("plain")
  task = tasks.make_task("arithmetic", max_digits=2)
  corpus = []
  for i in range(30):
    example = task.example(0, i)
    corpus += [template.render_prompt(example.prompt),
               tasks.sft_example(task, example, template).response]
  tok = tokenizer_lib.train_sentencepiece(corpus, str(tmp_path_factory.mktemp("tok") / "t"),
                                          vocab_size=400)
  config = get_model_config("tiny_v3")
  policy = r1.Policy(config, init_variables(config, jax.random.key(0)))
  return policy, tok, template, [task.example(7, i) for i in range(5)]


def _regrade(sample, example) -> list[bool]:
  """Correctness of a report sample's completions, through the verifiers' own entry points."""
  if example.verifier == "math":
    return [math_reward.verify(c, example.gold) for c in sample["completions"]]
  verify = tasks.get_verifier(example.verifier)
  return [(a := math_reward.extract_answer(c)) is not None and verify(a, example.gold, example.meta)
          for c in sample["completions"]]


def _check_consistent(metrics, examples, k, max_new_tokens):
  samples = metrics["samples"]
  assert [s["id"] for s in samples] == [ex.id for ex in examples]
  correct = np.array([_regrade(s, ex) for s, ex in zip(samples, examples)])
  assert correct.shape == (len(examples), k)
  np.testing.assert_array_equal(correct, [s["correct"] for s in samples])
  assert metrics["pass@1"] == pytest.approx(correct.mean())
  assert metrics["pass@k"][str(k)] == pytest.approx(correct.any(axis=1).mean())
  assert metrics["pass@1"] <= metrics["pass@k"]["2"] <= metrics["pass@k"][str(k)]
  assert metrics["cons@k"] <= metrics["pass@k"][str(k)]
  for s in samples:  # The vote's correctness is its first sample's.
    if s["voted_answer"] is not None:
      assert s["cons_correct"] == s["correct"][s["answers"].index(s["voted_answer"])]
  assert metrics["cons@k"] == np.mean([s["cons_correct"] for s in samples])
  lengths = np.array([s["lengths"] for s in samples])
  stopped = np.array([s["stopped"] for s in samples])
  assert np.all(lengths[~stopped] == max_new_tokens) and np.all(lengths <= max_new_tokens)
  assert metrics["truncated_frac"] == pytest.approx(1 - stopped.mean())
  assert metrics["mean_length"] == pytest.approx(lengths.mean())
  lo, hi = metrics["pass@1_ci"]
  assert 0 <= lo <= metrics["pass@1"] <= hi <= 1
  for key in ("pass@1", "cons@k", "format_rate", "format_rate_lenient", "answer_rate",
              "truncated_frac", "reflection_rate"):
    assert 0.0 <= metrics[key] <= 1.0, key


def test_evaluate_end_to_end_with_known_golds(tiny_setup, tmp_path):
  policy, tok, template, examples = tiny_setup
  k, n_new = 3, 11  # An N no other test uses: this test's compiles are its own.
  before = sampling.compile_count()["decode"]
  report = protocol.evaluate(policy, tok, template, examples, k=k, max_new_tokens=n_new,
                                 batch_size=2, dataset_name="arith", num_report_samples=5)
  prompts = [tok.encode(template.render_prompt(ex.prompt), add_bos=True) for ex in examples]
  buckets = {sampling.bucket_length(len(p)) for p in prompts}
  # 3 generate calls (the last padded): one decode program per prompt bucket, not per batch size.
  assert sampling.compile_count()["decode"] - before == len(buckets)
  assert report["config"]["temperature"] == 0.6 and report["config"]["top_p"] == 0.95
  metrics = report["datasets"]["arith"]
  assert metrics["n_eval"] == 5 and metrics["k"] == k
  assert set(metrics["pass@k"]) == {"1", "2", "3"}
  _check_consistent(metrics, examples, k, n_new)

  # A random policy is never right, so make it right: the golds become the answers it gave
  # (graded by the math verifier), and the same seed reproduces the same completions.
  first = [s["answers"][0] for s in metrics["samples"]]
  assert any(a is not None for a in first)
  known = [dataclasses.replace(ex, gold=a, verifier="math") if a is not None else ex
           for ex, a in zip(examples, first)]
  again = protocol.evaluate(policy, tok, template, {"known": known}, k=k, max_new_tokens=n_new,
                                batch_size=2, num_report_samples=5)["datasets"]["known"]
  assert ([s["completions"] for s in again["samples"]]
          == [s["completions"] for s in metrics["samples"]])
  _check_consistent(again, known, k, n_new)
  has_answer = np.array([a is not None for a in first])
  assert again["pass@k"][str(k)] >= has_answer.mean() > 0
  assert all(s["correct"][0] for s, ok in zip(again["samples"], has_answer) if ok)

  path = tmp_path / "out" / "eval.json"
  report_lib.write_report(str(path), report)
  assert json.loads(path.read_text()) == json.loads(json.dumps(report))
  table = report_lib.format_table(report).splitlines()
  assert len(table) == 2 and table[1].startswith("arith")
  assert f"{metrics['pass@1']:.3f}" in table[1]

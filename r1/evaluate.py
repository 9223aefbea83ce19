"""Evaluation: sample k completions per problem, grade them, report pass@k / cons@k (R1 §3).

    report = evaluate(policy, tokenizer, "r1_zero", load_math500(), k=16, max_new_tokens=32768,
                      dataset_name="math500")
    print(format_table(report)); write_report(workdir + "/eval.json", report)

Protocol (R1 §3, "Evaluation Setup"): sampling at temperature 0.6 and top-p 0.95, k samples per
problem, pass@1 = correctness averaged over the k samples; cons@k = majority vote over the
extracted answers. Grading routes each example by `PromptExample.verifier`: "math" goes to
`r1.rewards.math` (batched, sympy in its worker pool), a synthetic task name to that task's
verifier (`r1.data.tasks.get_verifier`). Pure metrics live in `r1.eval_metrics`.
"""

import json
import os
from collections.abc import Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from r1 import eval_metrics
from r1 import sharding
from r1 import tokenizer as tokenizer_lib
from r1.data import tasks as tasks_lib
from r1.data import templates as templates_lib
from r1.rewards import accuracy
from r1.rewards import format as format_lib
from r1.rewards import math as math_lib
from r1.rewards import reflection as reflection_lib

# Columns of `format_table`: (title, report key, format).
_TABLE_COLUMNS = (("n", "n_eval", "{:d}"), ("k", "k", "{:d}"), ("pass@1", "pass@1", "{:.3f}"),
                  ("95% CI", "pass@1_ci", "[{:.3f}, {:.3f}]"), ("cons@k", "cons@k", "{:.3f}"),
                  ("pass@k", "pass@k_max", "{:.3f}"), ("format", "format_rate", "{:.3f}"),
                  ("len", "mean_length", "{:.0f}"), ("trunc", "truncated_frac", "{:.3f}"),
                  ("reflect", "reflection_rate", "{:.3f}"))


# ----------------------------------------------------------------------------------------------
# Grading.

def _synthetic_ok(verify, answer: str, gold: str, meta: dict) -> bool:
  # Synthetic verifiers assume a well-formed gold (int(gold)); in a vote the "gold" is another
  # sample's answer, so a malformed one means "not the same answer", not a crash.
  try:
    return bool(verify(answer, gold, meta))
  except (ValueError, TypeError, KeyError, ArithmeticError):
    return False


def _check_verifier(verifier: str) -> None:
  if verifier != "math" and verifier not in tasks_lib.TASKS:
    raise ValueError(f"cannot grade verifier {verifier!r}: evaluate knows 'math' and the synthetic "
                     f"tasks {sorted(tasks_lib.TASKS)}")


def grade(completions: Sequence[str], examples: Sequence, pool=None
          ) -> tuple[np.ndarray, list[str | None]]:
  """Grades each completion against its example with the example's verifier.

  Args:
    completions: N response texts (stop token already stripped).
    examples: N PromptExample (one per completion; repeat an example for its k samples).
    pool: the sympy pool for "math" (default: `r1.rewards.math.default_pool()`).
  Returns:
    (correct bool[N], answers: the N extracted answers, None where there is none).
  """
  if len(completions) != len(examples):
    raise ValueError(f"grade: {len(completions)} completions != {len(examples)} examples")
  for ex in examples:
    _check_verifier(ex.verifier)
  answers = [math_lib.extract_answer(c) for c in completions]
  # The same routing as the training reward (math: batched sympy over the pool; tasks: theirs).
  correct = accuracy.accuracy_reward(list(completions), list(examples), pool=pool) > 0.5
  return correct, answers


def _distinct_pairs(answers: Sequence[str | None]) -> list[tuple[str, str]]:
  """Ordered pairs (earlier, later) of the distinct non-None answers, in first-appearance order."""
  distinct = list(dict.fromkeys(a for a in answers if a is not None))
  return [(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1:]]


def answer_equivalence(groups: Sequence[Sequence[str | None]], examples: Sequence, pool=None
                       ) -> list[dict[tuple[str, str], bool]]:
  """For each problem, whether each pair of its distinct answers is the same answer.

  Two answers are the same when the problem's verifier accepts each one with the other as gold
  (both directions, so the relation is symmetric: Countdown's verifier ignores the gold and
  accepts any expression reaching the target, so there all correct answers are one vote and
  each wrong expression its own). Math pairs of every problem go to one batched verify call.

  Args:
    groups: P lists of extracted answers (the k samples of each problem).
    examples: P PromptExample.
  Returns:
    P dicts {(a, b): bool} over the ordered pairs of `_distinct_pairs(groups[p])`.
  """
  out = [dict() for _ in groups]
  math_keys, math_preds, math_golds = [], [], []
  for p, (answers, ex) in enumerate(zip(groups, examples)):
    _check_verifier(ex.verifier)
    for a, b in _distinct_pairs(answers):
      if ex.verifier == "math":
        math_keys.append((p, a, b))
        # The answer side is wrapped so the verifier re-extracts exactly `a` (a bare multi-line
        # answer would otherwise extract to None).
        math_preds += [f"<answer>{b}</answer>", f"<answer>{a}</answer>"]
        math_golds += [a, b]
      else:
        verify = tasks_lib.get_verifier(ex.verifier)
        out[p][(a, b)] = (_synthetic_ok(verify, b, a, ex.meta)
                          and _synthetic_ok(verify, a, b, ex.meta))
  if math_keys:
    ok = math_lib.verify_batch(math_preds, math_golds, pool=pool).reshape(-1, 2) > 0.5
    for (p, a, b), both in zip(math_keys, ok):
      out[p][(a, b)] = bool(both.all())
  return out


def consensus(answers: Sequence[Sequence[str | None]], correct, examples: Sequence,
              pool=None) -> tuple[np.ndarray, list[str | None], np.ndarray]:
  """cons@k per problem: majority vote over answers grouped by `answer_equivalence`.

  Two answers are one vote when `answer_equivalence` says so, or when both were graded correct:
  verifiers assume a canonical gold (`int(gold)`), so "1,000" fails as the gold of "1000" though
  both equal the real gold. The voted group's answer is graded by its first sample's correctness
  (ties: the group whose first sample is earliest; see `eval_metrics.majority_vote`).

  Args:
    answers: P lists of k extracted answers. correct: bool[P, k]. examples: P PromptExample.
  Returns:
    (cons_correct bool[P], voted answer per problem (None: no answers), votes int[P]).
  """
  correct = np.asarray(correct, bool)
  tables = answer_equivalence(answers, examples, pool)
  cons_correct = np.zeros(len(answers), bool)
  voted, votes = [], np.zeros(len(answers), np.int64)
  for p, (row, table) in enumerate(zip(answers, tables)):
    right = {a for a, ok in zip(row, correct[p]) if ok and a is not None}
    winner, votes[p] = eval_metrics.majority_vote(
        row, lambda a, b, t=table, r=right: t[(a, b)] or (a in r and b in r))
    voted.append(None if winner is None else row[winner])
    cons_correct[p] = winner is not None and bool(correct[p, winner])
  return cons_correct, voted, votes


# ----------------------------------------------------------------------------------------------
# Sampling.

def completion_ids(tokens, length: int, stopped: bool, stop_tokens, tokenizer) -> list[int]:
  """The ids of one sampled row to decode for grading.

  Keeps tokens[:length]; drops the final stop token (eos has no text) unless it is a template tag
  such as `</answer>`, which the answer extractor and the format check need; drops ids outside
  the tokenizer's vocabulary (a model's embedding table may be padded past it).
  """
  ids = [int(t) for t in np.asarray(tokens)[:int(length)]]
  if stopped and ids and ids[-1] in set(stop_tokens):
    tags = {tokenizer.token_to_id(t) for t in tokenizer_lib.TAG_TOKENS}
    if ids[-1] not in tags:
      ids = ids[:-1]
  return [i for i in ids if 0 <= i < tokenizer.vocab_size]


def _batch_seed(seed: int, batch_index: int) -> int:
  # Independent streams per batch and per run seed (seed + i would reuse streams across runs).
  return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, np.uint32)[0] >> 1)


def sample_completions(policy, prompts: Sequence[Sequence[int]], *, k: int, batch_size: int,
                       max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                       stop_tokens: Sequence[int], seed: int, mesh=None) -> dict[str, np.ndarray]:
  """k samples for each prompt from `policy.generate` in fixed batches of `batch_size` prompts.

  The last batch is padded by repeating its own prompts and their outputs are dropped: every call
  has the same batch shape, so the sampler compiles one program per prompt-length bucket.

  `mesh`: the policy's mesh, needed with several processes: every process holds all prompts,
  passes the sampler its own rows of each batch (r1.sharding.host_batch_rows) and receives every
  row's output, so each process returns the same, whole result.
  Returns {"tokens": i32[P, k, N], "lengths": i32[P, k], "stopped": bool[P, k]}.
  """
  if batch_size < 1 or k < 1:
    raise ValueError(f"batch_size ({batch_size}) and k ({k}) must be >= 1")
  lo, hi, read = 0, batch_size, np.asarray
  if mesh is not None:
    lo, hi = sharding.host_batch_rows(batch_size, mesh)
    if jax.process_count() > 1:
      read = lambda x: multihost_utils.process_allgather(x, tiled=True)  # pylint: disable=unnecessary-lambda-assignment
  tokens, lengths, stopped = [], [], []
  for b, start in enumerate(range(0, len(prompts), batch_size)):
    batch = list(prompts[start:start + batch_size])
    real = len(batch)
    batch += [batch[i % real] for i in range(batch_size - real)]
    out = policy.generate(batch[lo:hi], num_samples=k, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, top_k=top_k,
                          stop_tokens=list(stop_tokens), seed=_batch_seed(seed, b),
                          **({} if mesh is None else {"mesh": mesh}))
    rows = real * k  # Rows are grouped by prompt, so the real prompts' rows come first.
    tokens.append(read(out.tokens)[:rows].reshape(real, k, max_new_tokens))
    lengths.append(read(out.lengths)[:rows].reshape(real, k))
    stopped.append(read(out.stopped)[:rows].reshape(real, k))
  if not tokens:
    return {"tokens": np.zeros((0, k, max_new_tokens), np.int32),
            "lengths": np.zeros((0, k), np.int32), "stopped": np.zeros((0, k), bool)}
  return {"tokens": np.concatenate(tokens), "lengths": np.concatenate(lengths),
          "stopped": np.concatenate(stopped)}


# ----------------------------------------------------------------------------------------------
# Reports.

def summarize(examples: Sequence, completions: Sequence[Sequence[str]], lengths, stopped, *,
              think_prefilled: bool = False, num_report_samples: int = 3, pool=None) -> dict:
  """Grades P problems' k completions each and returns their metrics.

  Args:
    examples: P PromptExample. completions: P lists of k texts. lengths: int[P, k] tokens.
    stopped: bool[P, k]. think_prefilled: the prompt ends in `<think>` (for the format check).
    num_report_samples: how many problems' completions to include under "samples".
  Returns:
    the per-dataset report dict (see `evaluate`).
  """
  n_problems = len(examples)
  k = len(completions[0]) if n_problems else 0
  if any(len(c) != k for c in completions) or len(completions) != n_problems:
    raise ValueError(f"summarize: expected {n_problems} lists of k={k} completions")
  flat = [c for row in completions for c in row]
  flat_correct, flat_answers = grade(flat, [ex for ex in examples for _ in range(k)], pool)
  correct = flat_correct.reshape(n_problems, k)
  answers = [flat_answers[p * k:(p + 1) * k] for p in range(n_problems)]
  cons_correct, voted, votes = consensus(answers, correct, examples, pool)
  lengths_pk = np.asarray(lengths).reshape(n_problems, k)
  stopped_pk = np.asarray(stopped, bool).reshape(n_problems, k)
  lengths, stopped = lengths_pk.reshape(-1), stopped_pk.reshape(-1)

  per_problem = eval_metrics.per_problem_pass_at_1(correct) if n_problems else np.zeros(0)
  ci = eval_metrics.bootstrap_ci(per_problem)
  report = {"n_eval": n_problems, "k": k,
            "pass@1": eval_metrics.pass_at_1_mean(correct) if n_problems else 0.0,
            "pass@1_ci": [ci[0], ci[1]],
            "pass@1_ci_method": "95% percentile bootstrap over problems, 1000 resamples",
            # Treats all P*k samples as independent: too narrow, but never a zero-width interval
            # at pass@1 = 0 or 1, where the bootstrap's is.
            "pass@1_ci_wilson": list(eval_metrics.wilson_interval(int(correct.sum()),
                                                                  correct.size)),
            "cons@k": float(cons_correct.mean()) if n_problems else 0.0}
  report["pass@k"] = {str(j): eval_metrics.mean_pass_at_k(correct, j) if n_problems else 0.0
                      for j in eval_metrics.pass_at_k_values(max(k, 1))}
  report["pass@k_max"] = report["pass@k"][str(max(k, 1))]
  fmt = np.array([format_lib.strict_format_ok(c, think_prefilled) for c in flat], bool)
  fmt_lenient = np.array([format_lib.lenient_format_ok(c, think_prefilled) for c in flat], bool)
  report["format_rate"] = float(fmt.mean()) if flat else 0.0
  report["format_rate_lenient"] = float(fmt_lenient.mean()) if flat else 0.0
  report["answer_rate"] = float(np.mean([a is not None for a in flat_answers])) if flat else 0.0
  report.update(eval_metrics.length_stats(lengths, stopped))
  # R1 Fig. 3: responses grow with training; correct and wrong ones usually differ.
  for name, sel in (("correct", flat_correct), ("incorrect", ~flat_correct)):
    report[f"mean_length_{name}"] = float(lengths[sel].mean()) if sel.any() else None
  reflection = reflection_lib.reflection_metrics(flat)
  report["reflection_rate"] = reflection.pop("reflection/any")
  report["reflection_words"] = {w.split("/", 1)[1]: v for w, v in reflection.items()}
  report["samples"] = [
      {"id": ex.id, "prompt": ex.prompt, "gold": ex.gold, "completions": list(completions[p]),
       "answers": answers[p], "correct": correct[p].tolist(),
       "lengths": lengths_pk[p].tolist(), "stopped": stopped_pk[p].tolist(),
       "voted_answer": voted[p], "votes": int(votes[p]), "cons_correct": bool(cons_correct[p])}
      for p, ex in enumerate(examples[:num_report_samples])]
  return report


def evaluate(policy, tokenizer, template, examples, *, k: int = 4, temperature: float = 0.6,
             top_p: float = 0.95, top_k: int = 0, max_new_tokens: int = 1024, batch_size: int = 8,
             stop_tokens: Sequence[int] | None = None, seed: int = 0, dataset_name: str = "eval",
             add_bos: bool = True, num_report_samples: int = 3, pool=None, mesh=None) -> dict:
  """Samples k completions per problem with `policy` and reports pass@k, cons@k and more.

  Args:
    policy: an `r1.Policy` (anything with its `generate`).
    tokenizer: an `r1.tokenizer.Tokenizer`.
    template: a `Template` or its name ("r1_zero", "r1_chat", "plain").
    examples: a sequence of PromptExample, or {dataset name: sequence} to evaluate several.
    k: samples per problem (R1: 64 for AIME; pass@1 is averaged over them).
    temperature, top_p, top_k: sampling rules (R1 defaults: 0.6, 0.95, off).
    max_new_tokens: N, the response budget; responses cut there count as truncated.
    batch_size: prompts per generate call (rows = batch_size * k); a fixed shape.
    stop_tokens: ids that end a response; None means [tokenizer.eos_id].
    seed: sampling seed; batch b samples with a seed derived from (seed, b), so the report is a
      deterministic function of (seed, batch_size, examples).
    dataset_name: the report key when `examples` is a sequence.
    add_bos: prepend bos to prompts, as the training pipeline does.
    num_report_samples: problems per dataset whose completions are kept in the report.
    pool: sympy pool for the math verifier.
    mesh: the mesh the policy's variables are sharded on; needed with several processes (see
      `sample_completions`), where every process grades all completions and returns the whole
      report (grading is host work, small next to sampling).
  Returns:
    {"config": {sampling settings}, "datasets": {name: metrics}} where metrics has
    n_eval, k, pass@1, pass@1_ci [lo, hi] (bootstrap over problems), pass@1_ci_wilson, cons@k,
    pass@k {"1": .., "2": .., .., "k": ..}, pass@k_max, format_rate (strict),
    format_rate_lenient, answer_rate, mean_length, max_length, p50_length, truncated_frac,
    mean_length_correct / _incorrect (None when empty), reflection_rate (share of responses with
    a reflective word), reflection_words {word: mean count}, samples (the first
    `num_report_samples` problems: id, prompt, gold, completions, answers, correct, lengths,
    stopped, voted_answer, votes, cons_correct).
  """
  if isinstance(template, str):
    template = templates_lib.get_template(template)
  datasets = examples if isinstance(examples, Mapping) else {dataset_name: examples}
  stop_tokens = [tokenizer.eos_id] if stop_tokens is None else [int(t) for t in stop_tokens]
  think_prefilled = template.opens_think
  config = {"k": k, "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop_tokens": stop_tokens,
            "seed": seed, "template": template.name}
  report = {"config": config, "datasets": {}}
  for name, dataset in datasets.items():
    dataset = list(dataset)
    if not dataset:
      raise ValueError(f"evaluate: dataset {name!r} has no examples")
    for ex in dataset:
      _check_verifier(ex.verifier)  # Fail before sampling, not after.
    prompts = [tokenizer.encode(template.render_prompt(ex.prompt), add_bos=add_bos)
               for ex in dataset]
    out = sample_completions(policy, prompts, k=k, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             top_k=top_k, stop_tokens=stop_tokens, seed=seed, mesh=mesh)
    completions = [[tokenizer.decode(completion_ids(out["tokens"][p, g], out["lengths"][p, g],
                                                    out["stopped"][p, g], stop_tokens, tokenizer))
                    for g in range(k)] for p in range(len(dataset))]
    report["datasets"][name] = summarize(dataset, completions, out["lengths"], out["stopped"],
                                         think_prefilled=think_prefilled,
                                         num_report_samples=num_report_samples, pool=pool)
  return report


def write_report(path: str, report: dict) -> None:
  """Writes the report as indented JSON (directories are created; the write is atomic)."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, path)


def format_table(report: dict) -> str:
  """One row per dataset: n, k, pass@1 with its CI, cons@k, pass@k, format, length, truncation,
  reflection."""
  header = ["dataset"] + [title for title, _, _ in _TABLE_COLUMNS]
  rows = []
  for name, metrics in report["datasets"].items():
    row = [name]
    for _, key, fmt in _TABLE_COLUMNS:
      value = metrics[key]
      row.append(fmt.format(*value) if isinstance(value, (list, tuple)) else fmt.format(value))
    rows.append(row)
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + rows]
  return "\n".join(lines)

"""The evaluation protocol (R1 §3): sample k completions per problem, grade them, report.

    report = evaluate(policy, tokenizer, "r1_zero", load_math500(), k=16, max_new_tokens=32768,
                      dataset_name="math500")
    print(report_lib.format_table(report))

Protocol (R1 §3, "Evaluation Setup"): sampling at temperature 0.6 and top-p 0.95, k samples per
problem, pass@1 = correctness averaged over the k samples; cons@k = majority vote over the
extracted answers (grading: `r1.eval.grading`; pure metrics: `r1.eval.metrics`). Every stage
evaluates through `evaluate_config`, which reads the protocol from config.eval.
"""

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from r1 import sharding
from r1 import tokenizer as tokenizer_lib
from r1.data import splits
from r1.data import sources
from r1.data import templates as templates_lib
from r1.eval import grading
from r1.eval import metrics
from r1.rewards import format as format_lib
from r1.rewards import reflection as reflection_lib

# The datasets an `eval` config may name (config.eval.datasets): "held_out" and "train" are the
# config's own data source's splits (for synthetic data, the fixed held-out seed GRPO reports on).
DATASETS = ("held_out", "train", "gsm8k", "math500")


# ----------------------------------------------------------------------------------------------
# Sampling.

def encode_prompts(tokenizer, template, examples: Sequence, add_bos: bool = True) -> list[list[int]]:
  """The token ids of each example's templated prompt (`add_bos`: as the training pipeline does)."""
  return [tokenizer.encode(template.render_prompt(ex.prompt), add_bos=add_bos) for ex in examples]


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


def batch_seed(seed: int, batch_index: int) -> int:
  """The sampler seed of batch `batch_index` of a run seeded `seed`: independent streams per batch
  and per run seed (seed + i would reuse streams across runs); an int in [0, 2**31)."""
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
                          stop_tokens=list(stop_tokens), seed=batch_seed(seed, b),
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


def decode_completions(tokenizer, sampled: dict, prompt_indices, stop_tokens: Sequence[int]) -> list[list[str]]:
  """The texts of `sample_completions` output rows `prompt_indices`: a list per prompt of its k
  decoded completions (`completion_ids`: eos dropped, a final template tag kept)."""
  k = sampled["tokens"].shape[1]
  return [[tokenizer.decode(completion_ids(sampled["tokens"][p, g], sampled["lengths"][p, g],
                                           sampled["stopped"][p, g], stop_tokens, tokenizer))
           for g in range(k)] for p in prompt_indices]


# ----------------------------------------------------------------------------------------------
# Metrics of one dataset.

def dataset_metrics(examples: Sequence, completions: Sequence[Sequence[str]], lengths, stopped, *,
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
    raise ValueError(f"dataset_metrics: expected {n_problems} lists of k={k} completions")
  flat = [c for row in completions for c in row]
  flat_correct, flat_answers = grading.grade(flat, [ex for ex in examples for _ in range(k)], pool)
  correct = flat_correct.reshape(n_problems, k)
  answers = [flat_answers[p * k:(p + 1) * k] for p in range(n_problems)]
  cons_correct, voted, votes = grading.consensus(answers, correct, examples, pool)
  lengths_pk = np.asarray(lengths).reshape(n_problems, k)
  stopped_pk = np.asarray(stopped, bool).reshape(n_problems, k)
  lengths, stopped = lengths_pk.reshape(-1), stopped_pk.reshape(-1)

  per_problem = metrics.per_problem_pass_at_1(correct) if n_problems else np.zeros(0)
  ci = metrics.bootstrap_ci(per_problem)
  report = {"n_eval": n_problems, "k": k,
            "pass@1": metrics.pass_at_1_mean(correct) if n_problems else 0.0,
            "pass@1_ci": [ci[0], ci[1]],
            "pass@1_ci_method": "95% percentile bootstrap over problems, 1000 resamples",
            # Treats all P*k samples as independent: too narrow, but never a zero-width interval
            # at pass@1 = 0 or 1, where the bootstrap's is.
            "pass@1_ci_wilson": list(metrics.wilson_interval(int(correct.sum()),
                                                                  correct.size)),
            "cons@k": float(cons_correct.mean()) if n_problems else 0.0}
  report["pass@k"] = {str(j): metrics.mean_pass_at_k(correct, j) if n_problems else 0.0
                      for j in metrics.pass_at_k_values(max(k, 1))}
  report["pass@k_max"] = report["pass@k"][str(max(k, 1))]
  fmt = np.array([format_lib.strict_format_ok(c, think_prefilled) for c in flat], bool)
  fmt_lenient = np.array([format_lib.lenient_format_ok(c, think_prefilled) for c in flat], bool)
  report["format_rate"] = float(fmt.mean()) if flat else 0.0
  report["format_rate_lenient"] = float(fmt_lenient.mean()) if flat else 0.0
  report["answer_rate"] = float(np.mean([a is not None for a in flat_answers])) if flat else 0.0
  report.update(metrics.length_stats(lengths, stopped))
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
      grading.check_verifier(ex.verifier)  # Fail before sampling, not after.
    prompts = encode_prompts(tokenizer, template, dataset, add_bos=add_bos)
    out = sample_completions(policy, prompts, k=k, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             top_k=top_k, stop_tokens=stop_tokens, seed=seed, mesh=mesh)
    completions = decode_completions(tokenizer, out, range(len(dataset)), stop_tokens)
    report["datasets"][name] = dataset_metrics(dataset, completions, out["lengths"], out["stopped"],
                                         think_prefilled=think_prefilled,
                                         num_report_samples=num_report_samples, pool=pool)
  return report


# ----------------------------------------------------------------------------------------------
# The protocol of a config: what every stage calls.

def load_dataset(config, name: str) -> list:
  """The first config.eval.num_examples PromptExamples of the dataset called `name` (DATASETS)."""
  loaders = {"held_out": lambda: splits.prompt_source(config.data, "eval"),
             "train": lambda: splits.prompt_source(config.data, "train"),
             "gsm8k": lambda: sources.load_gsm8k("test"),
             "math500": sources.load_math500}
  if name not in loaders:
    raise ValueError(f"eval.datasets entry {name!r}: expected one of {sorted(loaders)}")
  source = loaders[name]()
  n = min(config.eval.num_examples, len(source))
  return [source[i] for i in range(n)]


def protocol_settings(config) -> dict:
  """config.eval's sampling protocol as `evaluate`'s keyword arguments (read once, for
  `evaluate_config`, `reuse_key` and the eval stage's up-to-date check)."""
  e = config.eval
  return {"k": e.k, "temperature": e.temperature, "top_p": e.top_p, "top_k": e.top_k,
          "max_new_tokens": config.rollout.max_new_tokens if e.max_new_tokens is None else e.max_new_tokens,
          "batch_size": e.batch_size, "seed": e.seed, "num_report_samples": e.num_report_samples}


def evaluate_config(config, policy, tokenizer, template, stop_tokens: Sequence[int], *,
                    datasets: Sequence[str] = ("held_out",), mesh=None) -> dict:
  """`evaluate` of `policy` with config.eval's protocol on the named datasets (see `load_dataset`).

  The training stages evaluate on "held_out" (their before/after); the eval stage on
  config.eval.datasets. `mesh`: the policy's, used with several processes only, so a one-process
  run samples on one device as it always has.
  """
  names = list(datasets)
  if not names or len(set(names)) != len(names):
    raise ValueError(f"eval datasets {names}: expected one or more distinct dataset names")
  return evaluate(policy, tokenizer, template, {n: load_dataset(config, n) for n in names},
                  stop_tokens=stop_tokens, mesh=mesh if jax.process_count() > 1 else None,
                  **protocol_settings(config))


def reuse_key(config, policy, tokenizer, template, stop_tokens: Sequence[int],
              datasets: Sequence[str] = ("held_out",)) -> dict:
  """What `evaluate_config` of `policy` depends on, as JSON: the policy's bits (`Policy.fingerprint`)
  and model config, the encoded prompts, the sampling protocol and the devices. Two evaluations
  with equal keys are the same numbers, so a stage whose starting policy the previous stage has
  just evaluated reuses that report instead of sampling it again."""
  prompts = [encode_prompts(tokenizer, template, load_dataset(config, name)) for name in datasets]
  key = {"policy": policy.fingerprint(), "model": dataclasses.asdict(policy.config),
         "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(), "datasets": list(datasets),
         **protocol_settings(config), "stop_tokens": [int(t) for t in stop_tokens],
         "mesh": config.mesh.to_dict(),
         "processes": jax.process_count(), "devices": [str(d.device_kind) for d in jax.devices()]}
  return json.loads(json.dumps(key))  # As it reads back from a report (tuples are lists).

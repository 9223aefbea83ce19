"""The rejection-sampling stage (R1 §2.3.3): the RL policy writes the data of the next SFT stage.

From the stage's starting policy (config.init, see `common.build_policy`) sample `config.sample.k`
completions for each of `config.sample.num_prompts` training prompts, keep the ones that are
correct (accuracy reward 1), well formatted (strict format reward 1), finished (stopped, not cut
at max_new_tokens) and readable (language consistency >= `config.sample.min_language`, when set;
R1 filters "mixed languages, long paragraphs, and code blocks"), drop repeats of a response
within a prompt, keep at most `config.sample.max_per_prompt` per prompt, and write

  <workdir>/sft_data.jsonl       one SFT pair per line: prompt (the raw question; SFT applies the
                                 template), response (the completion text exactly as it follows
                                 the templated prompt, which is what `TokenizeSFT` encodes), plus
                                 provenance that `load_sft` ignores: id, prompt_id, sample_index,
                                 gold, rewards {name: value}, num_tokens, source_policy, seed
  <workdir>/sample_report.json   counts, acceptance rate, per-check pass rates

then exports the starting policy and tokenizer unchanged, so the pipeline's next stage (SFT with
`sft.source="jsonl"`, `sft.path=<this workdir>/sft_data.jsonl`) starts from the same policy.
The output is a deterministic function of the policy, the config and `config.sample.seed`. Fewer
than `config.sample.min_kept` (default 1) kept samples is an error raised after the report is
written and before the export, so the stage is not marked done.

Multi-host: the policy is sharded over config.mesh (which must span every process's devices); each
process samples its rows of every batch (r1.sharding.host_batch_rows), decodes and scores the
completions of its own prompts (a prompt's k samples stay together, so duplicates and the
per-prompt cap need no exchange), and the kept rows and counts are gathered in prompt order:
process 0 writes the same files one process would.
"""

import dataclasses
import json
import os
from collections.abc import Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from r1 import sharding
from r1.data import splits
from r1.eval import protocol
from r1.eval import report as report_lib
from r1.rewards import registry
from r1.stages import common

SFT_DATA_FILE = "sft_data.jsonl"
REPORT_FILE = "sample_report.json"


@dataclasses.dataclass(frozen=True)
class KeptSample:
  """One accepted completion: prompt `prompt_index`'s sample `sample_index`, its text and rewards."""
  prompt_index: int
  sample_index: int
  response: str
  rewards: dict[str, float]


def reward_specs(min_language: float | None, language_target: str = "en",
                 think_prefilled: bool = False) -> dict:
  """The verifiers a sample must pass, as registry specs (weights unused: each is checked alone)."""
  specs = {"accuracy": 1.0, "format": {"weight": 1.0, "think_prefilled": think_prefilled}}
  if min_language is not None:
    specs["language"] = {"weight": 1.0, "target": language_target}
  return specs


def select_samples(examples: Sequence, completions: Sequence[Sequence[str]], stopped, *,
                   min_language: float | None = None, language_target: str = "en",
                   max_per_prompt: int | None = None, think_prefilled: bool = False
                   ) -> tuple[list[KeptSample], dict]:
  """R1's rejection filter over P prompts' k completions each.

  A sample passes when its accuracy reward is 1, its strict format reward is 1, it stopped before
  the token budget, and (when `min_language` is set) its language consistency is >= min_language.
  Passing samples identical to an earlier passing sample of the same prompt are dropped, then at
  most `max_per_prompt` per prompt are kept, in sample order.

  Args:
    examples: P PromptExample. completions: P lists of k response texts. stopped: bool[P, k].
    min_language: language-consistency threshold in [0, 1], or None to skip the check.
    language_target: the language the chain of thought must be in (r1.rewards.language).
    max_per_prompt: cap per prompt, or None for no cap.
    think_prefilled: the template's prompt ends in `<think>` (for the format check).
  Returns:
    (kept samples in (prompt, sample) order, stats: generated, passed, duplicates, over_cap, kept,
    acceptance_rate, prompts_with_kept, pass_rates {accuracy, format, stopped, language?, all}).
  """
  num_prompts = len(examples)
  k = len(completions[0]) if num_prompts else 0
  if len(completions) != num_prompts or any(len(row) != k for row in completions):
    raise ValueError(f"select_samples: expected {num_prompts} lists of k={k} completions, got lengths "
                     f"{[len(row) for row in completions]}")
  stopped = np.asarray(stopped, bool).reshape(num_prompts, k)
  if max_per_prompt is not None and max_per_prompt < 1:
    raise ValueError(f"max_per_prompt must be >= 1 or None, got {max_per_prompt}")
  flat = [text for row in completions for text in row]
  repeated = [ex for ex in examples for _ in range(k)]
  _, rewards = registry.compute_rewards(reward_specs(min_language, language_target, think_prefilled), flat,
                                        repeated)
  checks = {"accuracy": rewards["accuracy"] == 1.0, "format": rewards["format"] == 1.0,
            "stopped": stopped.reshape(-1)}
  if min_language is not None:
    checks["language"] = rewards["language"] >= min_language
  passed = np.logical_and.reduce(list(checks.values()))

  kept, duplicates, over_cap = [], 0, 0
  for p in range(num_prompts):
    seen = set()
    for g in range(k):
      i = p * k + g
      if not passed[i]:
        continue
      if flat[i] in seen:
        duplicates += 1
        continue
      seen.add(flat[i])
      if max_per_prompt is not None and len(seen) > max_per_prompt:
        over_cap += 1
        continue
      kept.append(KeptSample(p, g, flat[i], {name: float(r[i]) for name, r in rewards.items()}))

  generated = len(flat)
  stats = {"prompts": num_prompts, "k": k, "generated": generated, "passed": int(passed.sum()),
           "duplicates": duplicates, "over_cap": over_cap, "kept": len(kept),
           "acceptance_rate": len(kept) / generated if generated else 0.0,
           "prompts_with_kept": len({s.prompt_index for s in kept}),
           "pass_rates": {name: float(ok.mean()) if generated else 0.0 for name, ok in checks.items()}}
  stats["pass_rates"]["all"] = float(passed.mean()) if generated else 0.0
  return kept, stats


def choose_prompts(source: Sequence, num_prompts: int, seed: int) -> list:
  """`num_prompts` distinct examples of `source`, a seeded random subset in a seeded order."""
  if not 1 <= num_prompts <= len(source):
    raise ValueError(f"sample.num_prompts={num_prompts}: expected 1..{len(source)} (the prompt source's size)")
  indices = np.random.default_rng([seed, 1]).choice(len(source), size=num_prompts, replace=False)
  return [source[int(i)] for i in indices]


def generate_completions(policy, tokenizer, template, examples: Sequence, *, k: int, batch_size: int,
                         max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                         stop_tokens: Sequence[int], seed: int, mesh=None) -> dict:
  """k completions per example, sampled `batch_size` prompts at a time with static shapes.

  `mesh`: the policy's mesh (None: one device). With several processes each process decodes only
  the prompts of its rows of every batch (r1.sharding.host_batch_rows), named by "prompt_indices".

  Returns {"texts": P' lists of k strs (a final `</answer>` stop kept, eos dropped, as evaluation
  decodes them), "lengths": int[P', k] generated tokens, "stopped": bool[P', k], "prompt_indices":
  the P' indices into `examples` of those prompts, ascending (all P with one process)}.
  """
  prompts = protocol.encode_prompts(tokenizer, template, examples)
  lo, hi = (0, batch_size) if jax.process_count() == 1 else sharding.host_batch_rows(batch_size, mesh)
  texts, lengths, stopped, prompt_indices = [], [], [], []
  for chunk, start in enumerate(range(0, len(prompts), batch_size)):
    # One sampler call per chunk (the last one padded by `sample_completions`), each with its own
    # stream of the run's seed, so progress can be logged and the result does not depend on it.
    chunk_seed = protocol.batch_seed(seed, chunk)
    out = protocol.sample_completions(policy, prompts[start:start + batch_size], k=k, batch_size=batch_size,
                                        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                        top_k=top_k, stop_tokens=stop_tokens, seed=chunk_seed, mesh=mesh)
    # This process's real prompts of the chunk (the padding rows of the last one are dropped).
    own = np.arange(lo, min(hi, len(out["tokens"])))
    texts.extend(protocol.decode_completions(tokenizer, out, own, stop_tokens))
    lengths.append(out["lengths"][own])
    stopped.append(out["stopped"][own])
    prompt_indices.extend(int(start + p) for p in own)
    logging.info("sample: %d / %d prompts", min(start + batch_size, len(prompts)), len(prompts))
  if not lengths:
    return {"texts": [], "lengths": np.zeros((0, k), np.int32), "stopped": np.zeros((0, k), bool),
            "prompt_indices": []}
  return {"texts": texts, "lengths": np.concatenate(lengths), "stopped": np.concatenate(stopped),
          "prompt_indices": prompt_indices}


def sft_rows(kept: Sequence[KeptSample], examples: Sequence, lengths, *, source_policy: str,
             seed: int) -> list[dict]:
  """JSONL rows: the SFT pair (`prompt`, `response`) and the provenance of each kept sample."""
  lengths = np.asarray(lengths)
  return [{"id": f"{examples[s.prompt_index].id}/{s.sample_index}", "prompt": examples[s.prompt_index].prompt,
           "response": s.response, "prompt_id": examples[s.prompt_index].id, "sample_index": s.sample_index,
           "gold": examples[s.prompt_index].gold, "rewards": s.rewards,
           "num_tokens": int(lengths[s.prompt_index, s.sample_index]), "source_policy": source_policy,
           "seed": seed} for s in kept]


def merge_stats(parts: Sequence[dict]) -> dict:
  """`select_samples` stats of disjoint sets of prompts (one per process), as those of their union.

  Counts add; rates are recomputed from counts, so the result is the one `select_samples` gives
  on all prompts at once, key order included (the report is written as is).
  """
  generated = sum(p["generated"] for p in parts)
  kept = sum(p["kept"] for p in parts)
  # A part's rate is its count / its size, correctly rounded: rate * size rounds back to the count.
  passes = {name: sum(round(p["pass_rates"][name] * p["generated"]) for p in parts)
            for name in parts[0]["pass_rates"]}
  return {"prompts": sum(p["prompts"] for p in parts), "k": max(p["k"] for p in parts), "generated": generated,
          "passed": sum(p["passed"] for p in parts), "duplicates": sum(p["duplicates"] for p in parts),
          "over_cap": sum(p["over_cap"] for p in parts), "kept": kept,
          "acceptance_rate": kept / generated if generated else 0.0,
          "prompts_with_kept": sum(p["prompts_with_kept"] for p in parts),
          "pass_rates": {name: count / generated if generated else 0.0 for name, count in passes.items()}}


def _allgather_json(value) -> list:
  """Every process's JSON-able `value`, in process order (a collective; [value] with one process)."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(data))))
  # process_allgather stacks equal shapes: pad every process's bytes to the longest.
  blocks = np.asarray(multihost_utils.process_allgather(np.pad(data, (0, int(sizes.max()) - len(data)))))
  return [json.loads(bytes(block[:size]).decode("utf-8")) for block, size in zip(blocks, sizes)]


def gather_selection(rows: Sequence[dict], row_prompts: Sequence[int], stats: dict, lengths,
                     prompt_indices: Sequence[int]) -> tuple[list[dict], dict, np.ndarray]:
  """This process's selection merged with every other's (a collective; unchanged with one process).

  Args:
    rows: this process's kept SFT rows, in (prompt, sample) order; row_prompts: the global prompt
      index of each. stats: `select_samples` stats of its prompts. lengths: int[P', k] generated
      tokens of its prompts, whose global indices are `prompt_indices`.
  Returns:
    (every kept row in global (prompt, sample) order, merged stats, lengths int[P, k] of every
    prompt in prompt order): what one process sampling all prompts computes.
  """
  lengths = np.asarray(lengths)
  if jax.process_count() == 1:
    return list(rows), stats, lengths
  parts = _allgather_json({"rows": list(rows), "row_prompts": [int(p) for p in row_prompts], "stats": stats,
                           "lengths": lengths.tolist(), "prompt_indices": [int(p) for p in prompt_indices]})
  # Processes whose devices hold the same batch rows (a mesh whose batch axes do not span every
  # process) sampled the same prompts: count them once.
  unique = {}
  for part in parts:
    unique.setdefault(tuple(part["prompt_indices"]), part)
  parts = list(unique.values())
  kept = sorted(((p, row["sample_index"], row) for part in parts for p, row in zip(part["row_prompts"], part["rows"])),
                key=lambda x: x[:2])
  by_prompt = sorted((p, l) for part in parts for p, l in zip(part["prompt_indices"], part["lengths"]))
  k = max(part["stats"]["k"] for part in parts)
  all_lengths = np.asarray([l for _, l in by_prompt], lengths.dtype).reshape(len(by_prompt), k)
  return [row for _, _, row in kept], merge_stats([part["stats"] for part in parts]), all_lengths


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
  tmp = path + ".tmp"  # Atomic: a crash never leaves a half-written file for the next stage.
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def run(config, workdir: str) -> dict:
  """Rejection-samples SFT data into `workdir` and exports the starting policy; returns the report."""
  os.makedirs(workdir, exist_ok=True)
  s = config.sample
  seed = config.seed if s.seed is None else int(s.seed)
  tokenizer, tokenizer_path = common.build_tokenizer(config, workdir)
  template = common.prompt_template(config, tokenizer_path)
  stops = common.stop_tokens(config, tokenizer)
  # config.mesh (None when it is one device): several processes must share one over all their
  # devices; one process samples on one device, as it always has, unless the config gives a mesh.
  mesh = common.build_mesh(config)
  policy = common.build_policy(config, tokenizer, mesh)
  source_policy = common.init_description(config)

  examples = choose_prompts(splits.prompt_source(config.data, "train"), s.num_prompts, seed)
  max_new_tokens = config.rollout.max_new_tokens if s.max_new_tokens is None else s.max_new_tokens
  out = generate_completions(policy, tokenizer, template, examples, k=s.k, batch_size=s.batch_size,
                             max_new_tokens=max_new_tokens,
                             temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                             stop_tokens=stops, seed=seed, mesh=mesh)
  # Multi-host: this process's prompts only (all of them with one process).
  own_examples = [examples[i] for i in out["prompt_indices"]]
  kept, stats = select_samples(own_examples, out["texts"], out["stopped"], min_language=s.min_language,
                               language_target=s.language_target, max_per_prompt=s.max_per_prompt,
                               think_prefilled=template.opens_think)
  rows = sft_rows(kept, own_examples, out["lengths"], source_policy=source_policy, seed=seed)
  rows, stats, lengths = gather_selection(rows, [out["prompt_indices"][x.prompt_index] for x in kept], stats,
                                          out["lengths"], out["prompt_indices"])
  if common.is_chief():
    _write_jsonl(os.path.join(workdir, SFT_DATA_FILE), rows)

  kept_lengths = [row["num_tokens"] for row in rows]
  report = dict(stats, mean_length_kept=float(np.mean(kept_lengths)) if kept_lengths else None,
                mean_length_generated=float(np.mean(lengths)) if len(lengths) else 0.0,
                source_policy=source_policy, seed=seed, data_file=SFT_DATA_FILE,
                settings={"k": s.k, "num_prompts": s.num_prompts, "temperature": s.temperature, "top_p": s.top_p,
                          "top_k": s.top_k, "batch_size": s.batch_size, "min_language": s.min_language,
                          "max_per_prompt": s.max_per_prompt, "stop_tokens": stops, "template": template.name})
  if common.is_chief():
    report_lib.write_report(os.path.join(workdir, REPORT_FILE), report)
  print(f"sample: kept {stats['kept']} / {stats['generated']} ({stats['acceptance_rate']:.3f}) from "
        f"{stats['prompts']} prompts; pass rates " +
        ", ".join(f"{name} {rate:.3f}" for name, rate in stats["pass_rates"].items()))
  min_kept = int(s.min_kept)
  if stats["kept"] < min_kept:
    # Not exported, so the pipeline does not mark the stage done and never starts an SFT stage on
    # (almost) no data; the report above says which check rejected the samples.
    raise RuntimeError(f"sample: kept {stats['kept']} of {stats['generated']} completions < sample.min_kept="
                       f"{min_kept} (pass rates {stats['pass_rates']}, see {REPORT_FILE}); train the policy longer "
                       f"or raise sample.k / sample.num_prompts")
  # Last, so that `common.stage_done` (the exported policy exists) implies the data is written.
  common.export_policy(policy, tokenizer_path, workdir)
  return report

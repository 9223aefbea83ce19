"""From sampled completions to a GRPO batch: token layout, masks, texts and rewards.

The sampler returns completions [B*G, N] for left-padded prompts [B, P]; the trainer wants one
sequence per row, prompt then completion, with the logprob at position t scoring token t + 1:

  tokens          [pad .. pad p_0 .. p_{P'-1} | c_0 .. c_{N-1}]         int32[B*G, P + N]
  segment_ids     1 on real prompt tokens and on generated tokens (mask), 0 elsewhere
  positions       0 at the first real token, counting through the completion
  completion_mask 1 at position P - 1 + j iff c_j was generated (its target is c_j)
  sampler_logprobs the sampler's logprob of c_j at that same position

Rows stay grouped by prompt (row b * G + g), as `grpo.group_advantages` expects. `rollout_round`
samples and scores one batch of prompts with the GRPO stage's policy; `rollout_rounds` are a step's.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from r1 import sampling, sharding
from r1.rewards import registry
from r1.stages import common


def grpo_batch(prompt_tokens: np.ndarray, prompt_mask: np.ndarray, completions: np.ndarray,
               completion_mask: np.ndarray, completion_logprobs: np.ndarray | None, num_samples: int) -> dict:
  """Lays out a GRPO batch (numpy) from left-padded prompts and their G completions each.

  Args:
    prompt_tokens: int32[B, P] left-padded; prompt_mask: bool[B, P].
    completions: int32[B*G, N]; completion_mask: bool[B*G, N] (generated tokens, stop included).
    completion_logprobs: f32[B*G, N] from the sampler (of softmax(logits / T)), or None.
    num_samples: G.
  Returns:
    {"tokens", "positions", "segment_ids", "completion_mask", "sampler_logprobs"?} arrays [B*G, P + N].
  """
  g = num_samples
  p = prompt_tokens.shape[1]
  n = completions.shape[1]
  prompts = np.repeat(np.asarray(prompt_tokens, np.int32), g, axis=0)
  pmask = np.repeat(np.asarray(prompt_mask, bool), g, axis=0)
  cmask = np.asarray(completion_mask, bool)
  tokens = np.concatenate([prompts, np.where(cmask, completions, 0).astype(np.int32)], axis=1)
  segments = np.concatenate([pmask, cmask], axis=1)
  positions = np.maximum(np.cumsum(segments, axis=1) - 1, 0).astype(np.int32)
  target_mask = np.zeros((len(tokens), p + n), np.float32)
  target_mask[:, p - 1:p - 1 + n] = cmask
  batch = {"tokens": tokens, "positions": positions, "segment_ids": segments.astype(np.int32),
           "completion_mask": target_mask}
  if completion_logprobs is not None:
    old = np.zeros((len(tokens), p + n), np.float32)
    old[:, p - 1:p - 1 + n] = np.where(cmask, completion_logprobs, 0.0)
    batch["sampler_logprobs"] = old
  return batch


def decode_completions(tokenizer, completions: np.ndarray, lengths: np.ndarray, drop_final=()) -> list[str]:
  """Completion texts: tokens up to each row's length, a final token in `drop_final` removed.

  Pass EOS here, not every stop token: a stop like `</answer>` is part of the text the format
  reward checks.
  """
  stop = set(int(t) for t in drop_final)
  texts = []
  for row, length in zip(np.asarray(completions), np.asarray(lengths)):
    ids = [int(t) for t in row[:int(length)]]
    if ids and ids[-1] in stop:
      ids = ids[:-1]
    texts.append(tokenizer.decode(ids))
  return texts


def score(reward_specs, texts: list[str], examples: list, num_samples: int, *, return_nonfinite: bool = False):
  """Rewards for B*G completions of B examples (each repeated G times), total f32[B*G] and each
  component by name (see r1.rewards.registry); with return_nonfinite, also bool[B*G]: the rows
  where a reward was NaN or inf (set to 0, with a warning)."""
  repeated = [ex for ex in examples for _ in range(num_samples)]
  total, components, nonfinite = registry.compute_rewards(reward_specs, texts, repeated, return_nonfinite=True)
  out = np.asarray(total, np.float32), {k: np.asarray(v, np.float32) for k, v in components.items()}
  return (*out, nonfinite) if return_nonfinite else out


def reward_model_scores(reward_model, prompt_tokens: np.ndarray, prompt_mask: np.ndarray, completions: np.ndarray,
                        completion_mask: np.ndarray, num_samples: int, batch_size: int = 0) -> np.ndarray:
  """A reward model's scores f32[B*G] of each prompt + completion, read at its last generated token.

  Args:
    reward_model: an r1.reward_model.RewardModel (anything with `score_batch`).
    prompt_tokens: int32[B, P] left-padded; prompt_mask: bool[B, P].
    completions: int32[B*G, N]; completion_mask: bool[B*G, N]; num_samples: G.
    batch_size: rows per reward-model forward pass (0: all at once).
  """
  batch = grpo_batch(prompt_tokens, prompt_mask, completions, completion_mask, None, num_samples)
  return np.asarray(reward_model.score_batch(batch, batch_size=batch_size), np.float32)


def overlong_penalty(lengths: np.ndarray, max_new_tokens: int, buffer: int) -> np.ndarray:
  """DAPO's soft overlong punishment, f32[N]: 0 up to max_new_tokens - buffer tokens, then falling
  linearly to -1 at max_new_tokens (a truncated completion)."""
  start = max_new_tokens - buffer
  return -np.clip((np.asarray(lengths, np.float32) - start) / max(buffer, 1), 0.0, 1.0)


def informative_groups(total: np.ndarray, num_samples: int) -> np.ndarray:
  """bool[B]: groups whose rewards are not all equal (the others get zero advantage, DAPO 3.2)."""
  groups = np.asarray(total).reshape(-1, num_samples)
  return groups.max(axis=1) > groups.min(axis=1)


def chosen_groups(rounds: list[dict], num_groups: int, num_samples: int) -> list[tuple[int, int]]:
  """(round, group) of each group dynamic sampling keeps: informative groups first (in round
  order), then zero-variance ones fill what is left, `num_groups` in all while the rounds last."""
  chosen = []
  for informative_first in (True, False):
    for r, rnd in enumerate(rounds):
      for b, keep in enumerate(informative_groups(rnd["total"], num_samples)):
        if keep == informative_first and len(chosen) < num_groups:
          chosen.append((r, b))
  return chosen


def take_groups(rounds: list[dict], num_groups: int, num_samples: int, dynamic: bool) -> dict:
  """Assembles a fixed-size batch of `num_groups` groups from one or more rollout rounds.

  Each round is a dict of per-row arrays/lists ([B*G] leading) plus per-group lists ([B]: the
  keys "prompts" and "examples"). Without dynamic sampling the first round is used as is; with it,
  the groups of `chosen_groups`, so shapes stay static even when the extra rounds run out.
  """
  if not dynamic:
    return rounds[0]
  return _assemble(rounds, chosen_groups(rounds, num_groups, num_samples), num_samples)


def _assemble(rounds: list[dict], chosen: list[tuple[int, int]], num_samples: int) -> dict:
  """The rounds' (round, group) pairs `chosen`, in that order, as one round."""
  out = {}
  for key in rounds[0]:
    if key in ("prompts", "examples"):
      out[key] = [rounds[r][key][b] for r, b in chosen]
    elif isinstance(rounds[0][key], dict):
      out[key] = {k: np.concatenate([rounds[r][key][k][b * num_samples:(b + 1) * num_samples] for r, b in chosen])
                  for k in rounds[0][key]}
    else:
      rows = [rounds[r][key][b * num_samples:(b + 1) * num_samples] for r, b in chosen]
      out[key] = np.concatenate(rows) if isinstance(rows[0], np.ndarray) else [x for row in rows for x in row]
  return out


def take_groups_and_reference(rounds: list[dict], num_groups: int, num_samples: int, dynamic: bool):
  """`take_groups`, and the first round's overlapped reference logprobs (a device array, or None)
  in the kept batch's row order, or None where the step must compute them itself.

  Dynamic sampling moves the informative groups first even with no extra round, so the
  reference's rows are taken in that same order (one process; with several, each process reorders
  its own groups of a global array, so the step recomputes the reference instead). Groups from
  later rounds have no overlapped reference: the step computes it.
  """
  ref = rounds[0].pop("ref_logprobs", None)
  for r in rounds[1:]:
    r.pop("ref_logprobs", None)
  if not dynamic:
    return rounds[0], ref
  chosen = chosen_groups(rounds, num_groups, num_samples)
  rnd = _assemble(rounds, chosen, num_samples)
  if ref is None or any(r for r, _ in chosen) or jax.process_count() > 1:
    return rnd, None
  rows = np.concatenate([np.arange(b * num_samples, (b + 1) * num_samples) for _, b in chosen]).astype(np.int32)
  return rnd, jnp.take(ref, jnp.asarray(rows), axis=0)


# --- Rounds: sampling and scoring a batch of prompts ---------------------------------------------

def sampling_seed(config, step: int) -> int:
  """The rollout seed of `step`: a function of (seed, step) so a resumed run samples the same."""
  return (int(config.seed) * 1_000_003 + step) % (2**31 - 1)


def pad_host_prompts(prompts) -> tuple[np.ndarray, np.ndarray]:
  """sampling.pad_prompts of this process's prompts, at the width of the global batch: the widest
  process's bucket (with one process, sampling.pad_prompts itself)."""
  return sharding.pad_to_widest_process(*sampling.pad_prompts(prompts))


def loss_mask(config, mask, stopped):
  """The completion tokens that carry loss: DAPO's overlong filtering (rollout.overlong="mask")
  keeps a truncated completion's reward in the group statistics but gives it no loss."""
  return mask & stopped[:, None] if config.rollout.overlong == "mask" else mask


def rollout_round(stage, state, step: int, batch: dict, seed: int, dispatch_reference: bool = False
                  ) -> tuple[dict, dict[str, float]]:
  """One round with `stage`'s (r1.stages.grpo.Stage) sampler, rewards and reference: G completions for each prompt of `batch`, decoded and scored (host-side numpy);
  with dispatch_reference, also the (asynchronous) reference logprobs of the round's GRPO layout.

  Returns ({prompts, examples, completions, mask, lengths, stopped, logprobs, texts, total,
  components, nonfinite, ref_logprobs?}, {"generate": s, "reward": s}). Raises
  common.StopRequested after generation or scoring when a stop was requested.
  """
  config, mesh, g = stage.config, stage.mesh, stage.config.rollout.num_samples
  n = config.rollout.max_new_tokens
  t = time.perf_counter()
  # Multi-host: this process's prompts; the sampler places them as its rows of the global batch,
  # and host_rows reads back the completions of exactly those prompts (module docstring).
  prompts = [list(row[m]) for row, m in zip(batch["prompt_tokens"], batch["prompt_mask"])]
  out = sampling.generate(stage.model_config, common.policy_of(stage.model_config, state).variables, prompts,
                          num_samples=g, max_new_tokens=n, temperature=config.rollout.temperature,
                          top_p=config.rollout.top_p, top_k=config.rollout.top_k, stop_tokens=stage.stops, seed=seed,
                          mesh=mesh)
  rows = lambda x: common.host_rows(x, mesh)  # pylint: disable=unnecessary-lambda-assignment
  rnd = {"prompts": prompts, "examples": list(batch["examples"]), "completions": rows(out.tokens),
         "mask": rows(out.mask), "lengths": rows(out.lengths), "stopped": rows(out.stopped),
         "logprobs": rows(out.logprobs)}
  seconds = {"generate": time.perf_counter() - t}
  stage.check_stop(step, f"rollout of step {step + 1}")
  if dispatch_reference and stage.reference_fn is not None:
    layout = grpo_batch(*pad_host_prompts(prompts), rnd["completions"],
                                loss_mask(config, rnd["mask"], rnd["stopped"]), None, g)
    layout = {k: layout[k] for k in ("tokens", "positions", "segment_ids")}
    rnd["ref_logprobs"] = stage.reference_fn(state.ref_params, state.ref_moe_bias, common.place_batch(layout, mesh))
  t = time.perf_counter()
  rnd["texts"] = decode_completions(stage.tokenizer, rnd["completions"], rnd["lengths"],
                                            drop_final=[stage.tokenizer.eos_id])
  rnd["total"], rnd["components"], rnd["nonfinite"] = score(config.rewards, rnd["texts"], rnd["examples"], g,
                                                                    return_nonfinite=True)
  if stage.reward_model is not None:
    rm_config = config.reward_model
    # Multi-host: a collective over this process's rows, laid out as one process would lay out
    # the global batch (the widest process's prompt bucket).
    rm_scores = reward_model_scores(stage.reward_model, *pad_host_prompts(prompts), rnd["completions"],
                                            rnd["mask"], g, batch_size=rm_config.batch_size)
    rm_scores, bad = registry.zero_nonfinite("reward_model", rm_scores,
                                             [ex for ex in rnd["examples"] for _ in range(g)])
    rnd["nonfinite"] = rnd["nonfinite"] | bad
    rnd["components"]["reward_model"] = rm_scores
    rnd["total"] = rnd["total"] + np.float32(rm_config.weight) * rm_scores
  if config.rollout.overlong == "penalty":  # DAPO 3.4: soft punishment in the last tokens
    rnd["components"]["overlong"] = overlong_penalty(rnd["lengths"], n, config.rollout.overlong_buffer)
    rnd["total"] = rnd["total"] + rnd["components"]["overlong"]
  seconds["reward"] = time.perf_counter() - t
  stage.check_stop(step, f"rewards of step {step + 1}")
  return rnd, seconds


def rollout_rounds(stage, state, step: int) -> tuple[list[dict], dict[str, float]]:
  """The rounds of step `step`: one batch of prompts, and with DAPO's dynamic sampling more (at
  most rollout.max_extra_rounds) until config.data.batch_size groups have a reward spread.
  Returns (rounds, {"generate": s, "reward": s} summed over them)."""
  config, g = stage.config, stage.config.rollout.num_samples
  rnd, seconds = rollout_round(stage, state, step, next(stage.batches), sampling_seed(config, step),
                               dispatch_reference=True)
  rounds = [rnd]
  # Groups whose G rewards are equal teach nothing. Multi-host: the count is global (every process
  # must draw the same rounds); each process then keeps its own groups, informative first.
  while (config.rollout.dynamic_sampling and len(rounds) <= config.rollout.max_extra_rounds
         and common.gather_rows(np.concatenate([informative_groups(r["total"], g) for r in rounds]),
                                stage.mesh).sum() < config.data.batch_size):
    rnd, more = rollout_round(stage, state, step, next(stage.batches), sampling_seed(config, step) + 7919 * len(rounds))
    rounds.append(rnd)
    seconds = {k: seconds[k] + more[k] for k in seconds}
  return rounds, seconds

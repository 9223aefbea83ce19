"""The rejection-sampling stage: the filter on handcrafted completions, the stage end to end with a
scripted policy (known acceptances, the files, the SFT hand-over) and with a real random-init one."""

import json
import os
import re

import jax
import numpy as np
import pytest

import r1
from configs import common as config_sections
from configs import tiny_r1_zero
from r1.data import pipeline, sources, splits, templates
from r1.rewards import registry
from r1.sampling import SampleOutput
from r1.stages import common, sample, sft

ARITH = re.compile(r"What is (\d+) ([-+]) (\d+)\?")


class ScriptedPolicy(r1.Policy):
  """A policy whose sample g of a prompt is `script(prompt text)[g % len]`, tokenised as a sampler
  would return it: generation stops on the first stop token (`</answer>` or an appended eos) or is
  cut at max_new_tokens. Records each generate call's (batch size, num_samples)."""

  def __init__(self, config, variables, tokenizer, script):
    super().__init__(config, variables)
    self.tokenizer, self.script, self.calls = tokenizer, script, []

  def generate(self, prompts, lengths=None, *, num_samples=1, max_new_tokens=64, temperature=1.0, top_p=1.0,
               top_k=0, stop_tokens=None, seed=0, mesh=None):
    del lengths, temperature, top_p, top_k, seed, mesh
    self.calls.append((len(prompts), num_samples))
    stops = set(stop_tokens or [self.tokenizer.eos_id])
    rows = len(prompts) * num_samples
    tokens = np.zeros((rows, max_new_tokens), np.int32)
    out_lengths, stopped = np.zeros(rows, np.int32), np.zeros(rows, bool)
    for b, prompt in enumerate(prompts):
      responses = self.script(self.tokenizer.decode([t for t in prompt if t != self.tokenizer.bos_id]))
      for g in range(num_samples):
        ids = self.tokenizer.encode(responses[g % len(responses)]) + [self.tokenizer.eos_id]
        stop_at = next((i for i, t in enumerate(ids) if t in stops), None)
        ids = ids[:stop_at + 1] if stop_at is not None else ids
        row = b * num_samples + g
        n = min(len(ids), max_new_tokens)
        tokens[row, :n] = ids[:n]
        out_lengths[row], stopped[row] = n, stop_at is not None and stop_at < max_new_tokens
    mask = np.arange(max_new_tokens)[None] < out_lengths[:, None]
    return SampleOutput(tokens, np.zeros(tokens.shape, np.float32), out_lengths, mask, stopped,
                        np.int32(max_new_tokens))


def arithmetic_script(prompt_text: str) -> list[str]:
  """Eight samples per arithmetic prompt, each failing or passing the filter for a known reason."""
  a, op, b = ARITH.search(prompt_text).groups()
  gold = int(a) + int(b) if op == "+" else int(a) - int(b)
  return [f" <think>{a} {op} {b}: ones then tens</think> <answer>{gold}</answer>",   # kept
          f" <think>{a} {op} {b}: ones then tens</think> <answer>{gold}</answer>",   # duplicate of 0
          f" <think>guess</think> <answer>{gold + 1}</answer>",                      # wrong
          f" <answer>{gold}</answer>",                                               # no think block
          f" <think>计算 一下 数字</think> <answer>{gold}</answer>",                  # not English
          f" <think>carry the one</think> <answer>{gold}</answer>",                  # kept
          " <think>" + "and then " * 80,                                              # truncated
          f" <think>count up</think> <answer>{gold}</answer>"]                       # over the cap


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
  config = tiny_r1_zero.get_config("quick")
  config.tokenizer.corpus_size = 300
  _, path = common.build_tokenizer(config, str(tmp_path_factory.mktemp("tokenizer")))
  return path


def stage_config(tokenizer_path, **sample_overrides):
  c = tiny_r1_zero.get_config("quick")
  c.stage = "sample"
  c.tokenizer.path = tokenizer_path
  c.model.overrides.hidden_size = 32
  c.model.overrides.num_hidden_layers = 1
  c.sample = config_sections.sample(**dict(
      dict(k=8, num_prompts=5, batch_size=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=48, seed=3,
           max_per_prompt=2, min_language=0.9, language_target="en"), **sample_overrides))
  return c


def _example(a, op, b):
  gold = a + b if op == "+" else a - b
  return sources.PromptExample(f"arithmetic:t:{a}{op}{b}", f"What is {a} {op} {b}?", str(gold), "arithmetic",
                               {"a": a, "b": b, "op": op})


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _files_named(directory, name):
  """The contents of every file called `name` under `directory` (the tokenizer copy's layout is
  `common.export_policy`'s business)."""
  return [open(os.path.join(root, name), "rb").read() for root, _, files in os.walk(directory) if name in files]


def test_select_samples_applies_each_check_dedups_and_caps():
  examples = [_example(12, "+", 30), _example(9, "-", 4)]
  completions = [arithmetic_script(ex.prompt) for ex in examples]
  completions[1][6] = " <think>fine</think> <answer>5</answer>"  # right and well formed, but cut off
  stopped = np.ones((2, 8), bool)
  stopped[:, 6] = False
  kept, stats = sample.select_samples(examples, completions, stopped, min_language=0.9, max_per_prompt=2)
  assert [(s.prompt_index, s.sample_index) for s in kept] == [(0, 0), (0, 5), (1, 0), (1, 5)]
  assert kept[1].response == completions[0][5]
  assert kept[0].rewards == {"accuracy": 1.0, "format": 1.0, "language": 1.0}
  assert stats["passed"] == 8 and stats["duplicates"] == 2 and stats["over_cap"] == 2 and stats["kept"] == 4
  assert stats["acceptance_rate"] == 4 / 16 and stats["prompts_with_kept"] == 2
  # Per prompt: wrong answers are samples 2 and 6 (prompt 0's is cut off before its answer), bad
  # formats 3 and 6, a non-English CoT 4; prompt 1's sample 6 is right and formatted, so only
  # `stopped` rejects it.
  assert stats["pass_rates"] == {"accuracy": 13 / 16, "format": 13 / 16, "stopped": 14 / 16, "language": 14 / 16,
                                 "all": 8 / 16}

  # Without the language check the Chinese chain of thought passes; without a cap all distinct ones stay.
  kept, stats = sample.select_samples(examples, completions, stopped, max_per_prompt=None)
  assert [s.sample_index for s in kept if s.prompt_index == 0] == [0, 4, 5, 7]
  assert "language" not in stats["pass_rates"] and "language" not in kept[0].rewards
  with pytest.raises(ValueError, match="expected 2 lists of k=8"):
    sample.select_samples(examples, [completions[0]], stopped)


def test_stats_of_per_process_prompts_merge_into_the_whole_sets():
  # Multi-host: each process filters its own prompts; their merged stats are one process's, key
  # order included (the report is written as is), also with a process that holds no prompt.
  examples = [_example(12, "+", 30), _example(9, "-", 4), _example(40, "+", 2)]
  completions = [arithmetic_script(ex.prompt) for ex in examples]
  completions[1][6] = " <think>fine</think> <answer>5</answer>"
  stopped = np.ones((3, 8), bool)
  stopped[1:, 6] = False
  options = {"min_language": 0.9, "max_per_prompt": 2}
  _, whole = sample.select_samples(examples, completions, stopped, **options)
  parts = [sample.select_samples(examples[a:b], completions[a:b], stopped[a:b], **options)[1]
           for a, b in ((0, 1), (1, 3), (3, 3))]
  merged = sample.merge_stats(parts)
  assert json.dumps(merged) == json.dumps(whole)
  assert merged["pass_rates"]["stopped"] == 22 / 24 and merged["kept"] == 6


def test_stage_with_scripted_policy_writes_verified_sft_data(tmp_path, tokenizer_path, monkeypatch):
  config = stage_config(tokenizer_path)
  tokenizer, _ = common.build_tokenizer(config, str(tmp_path))
  random_policy = common.build_policy(config, tokenizer)
  policies = []

  def scripted(config, tokenizer, mesh=None):
    del config, mesh
    policies.append(ScriptedPolicy(random_policy.config, random_policy.variables, tokenizer, arithmetic_script))
    return policies[-1]

  monkeypatch.setattr(common, "build_policy", scripted)
  report = sample.run(config, str(tmp_path / "a"))
  # Fixed-shape sampler calls: 5 prompts in batches of 2 is three calls of 2 (the last one padded).
  assert policies[0].calls == [(2, 8)] * 3

  rows = _read_jsonl(tmp_path / "a" / sample.SFT_DATA_FILE)
  assert report["generated"] == 5 * 8 and report["kept"] == len(rows) == 5 * 2
  assert report["passed"] == 5 * 4 and report["duplicates"] == 5 and report["over_cap"] == 5
  with open(tmp_path / "a" / sample.REPORT_FILE) as f:
    assert json.load(f) == report
  expected_prompts = [ex.prompt for ex in sample.choose_prompts(splits.prompt_source(config.data, "train"), 5, 3)]
  assert [r["prompt"] for r in rows] == [p for p in expected_prompts for _ in range(2)]
  assert len({(r["prompt"], r["response"]) for r in rows}) == len(rows)
  # Every kept line passes the verifiers when graded again from the file alone.
  examples = [sources.PromptExample(r["prompt_id"], r["prompt"], r["gold"], "arithmetic",
                                    dict(zip(("a", "op", "b"), ARITH.search(r["prompt"]).groups()))) for r in rows]
  _, rewards = registry.compute_rewards({"accuracy": 1.0, "format": 1.0, "language": 1.0},
                                        [r["response"] for r in rows], examples)
  assert (rewards["accuracy"] == 1).all() and (rewards["format"] == 1).all() and (rewards["language"] >= 0.9).all()
  assert [int(ARITH.search(r["prompt"]).group(1)) for r in rows]  # prompts are the raw questions
  assert rows[0]["sample_index"] == 0 and rows[1]["sample_index"] == 5
  assert rows[0]["rewards"] == {"accuracy": 1.0, "format": 1.0, "language": 1.0}
  assert rows[0]["seed"] == 3 and rows[0]["source_policy"].startswith("random_init(")
  assert rows[0]["num_tokens"] == len(tokenizer.encode(rows[0]["response"]))  # ends at the </answer> stop

  # The next stage reads the file as it would in the pipeline, and trains on exactly the sampled
  # tokens: the response (</answer> kept) and then eos, after the templated prompt.
  next_config = stage_config(tokenizer_path)
  next_config.sft.source, next_config.sft.path = "jsonl", str(tmp_path / "a" / sample.SFT_DATA_FILE)
  template = templates.get_template(config.data.template)
  pairs = sft.sft_source(next_config, template)
  assert [(p.prompt, p.response) for p in pairs] == [(r["prompt"], r["response"]) for r in rows]
  row = pipeline.TokenizeSFT(tokenizer, template, seq_len=256)(pairs[0])
  target = tokenizer.encode(arithmetic_script(template.render_prompt(pairs[0].prompt))[0]) + [tokenizer.eos_id]
  assert row["targets"][row["loss_mask"] == 1].tolist() == target
  assert target[-2] == tokenizer.token_to_id("</answer>")

  # The starting policy and tokenizer go forward unchanged; the same seed gives the same files.
  exported = r1.load_hf_checkpoint(str(tmp_path / "a" / common.POLICY_DIR))
  jax.tree.map(np.testing.assert_array_equal, exported.params, random_policy.params)
  assert common.stage_done(str(tmp_path / "a"))
  assert open(tokenizer_path, "rb").read() in _files_named(tmp_path / "a", os.path.basename(tokenizer_path))
  sample.run(config, str(tmp_path / "b"))
  for name in (sample.SFT_DATA_FILE, sample.REPORT_FILE):
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
  config.sample.seed = 4
  sample.run(config, str(tmp_path / "c"))
  assert _read_jsonl(tmp_path / "c" / sample.SFT_DATA_FILE)[0]["prompt"] != rows[0]["prompt"]


def test_stage_with_random_init_policy_is_consistent_and_deterministic(tmp_path, tokenizer_path):
  config = stage_config(tokenizer_path, num_prompts=3, k=4, max_new_tokens=16, min_language=None, min_kept=0)
  reports = [sample.run(config, str(tmp_path / name)) for name in ("a", "b")]
  assert reports[0] == reports[1]
  assert (tmp_path / "a" / sample.SFT_DATA_FILE).read_text() == (tmp_path / "b" / sample.SFT_DATA_FILE).read_text()
  report = reports[0]
  rows = _read_jsonl(tmp_path / "a" / sample.SFT_DATA_FILE)
  assert report["generated"] == 12 and report["kept"] == len(rows) <= report["passed"] <= 12
  assert 0 < report["mean_length_generated"] <= 16
  # An untrained policy rarely stops within 16 tokens; the rate is the sampler's, not a constant.
  assert report["pass_rates"]["all"] <= report["pass_rates"]["stopped"] < 1.0
  assert os.path.exists(tmp_path / "a" / common.POLICY_DIR / "config.json")
  # Keeping fewer than min_kept is an error, reported but not exported, so a pipeline stops here
  # instead of running SFT on an (almost) empty file.
  config.sample.min_kept = 13
  with pytest.raises(RuntimeError, match=f"kept {report['kept']} of 12 completions < sample.min_kept=13"):
    sample.run(config, str(tmp_path / "strict"))
  assert (tmp_path / "strict" / sample.REPORT_FILE).exists() and not common.stage_done(str(tmp_path / "strict"))
  with pytest.raises(ValueError, match="sample.num_prompts=0"):
    sample.run(stage_config(tokenizer_path, num_prompts=0), str(tmp_path / "bad"))

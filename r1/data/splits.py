"""The train and eval prompt sets a config's `data` section names (config.data.source)."""

from r1.data import sources, tasks


def make_task(data_config):
  """The synthetic task named by data_config.task with data_config.task_knobs."""
  return tasks.make_task(data_config.task, **dict(data_config.task_knobs))


def prompt_source(data_config, split: str = "train"):
  """PromptExamples for `split` ("train" or "eval") of data_config.source.

  source: "synthetic" (task + knobs; train and eval use disjoint seeds), "gsm8k", "math500",
  or "jsonl" (data_config.path, question_field, answer_field).
  """
  kind = data_config.source
  if kind == "synthetic":
    size = data_config.train_size if split == "train" else data_config.eval_size
    # Disjoint seeds: held-out problems are never trained on (a collision has probability ~0
    # for the sizes used, and the eval seed is fixed so before/after compare the same set).
    seed = data_config.seed if split == "train" else data_config.seed + 10_000
    return tasks.SyntheticSource(make_task(data_config), size, seed)
  if kind == "gsm8k":
    return sources.load_gsm8k("train" if split == "train" else "test")
  if kind == "math500":
    return sources.load_math500()
  if kind == "jsonl":
    return sources.load_prompts(data_config.path if split == "train" else data_config.eval_path,
                                question_field=data_config.question_field, answer_field=data_config.answer_field)
  raise ValueError(f"data.source={kind!r}: expected synthetic, gsm8k, math500 or jsonl")

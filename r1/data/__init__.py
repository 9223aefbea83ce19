"""r1.data: sources, synthetic tasks, prompt templates, grain pipelines.

Names are re-exported lazily: reward workers import `r1.data.tasks` verifiers without pulling in
grain or JAX, which only `r1.data.pipeline` needs.
"""

import importlib

_LAZY = {
    "PromptExample": "r1.data.sources",
    "SFTExample": "r1.data.sources",
    "MalformedRecordError": "r1.data.sources",
    "RecordSource": "r1.data.sources",
    "load_prompts": "r1.data.sources",
    "load_sft": "r1.data.sources",
    "load_gsm8k": "r1.data.sources",
    "load_math500": "r1.data.sources",
    "gsm8k_gold": "r1.data.sources",
    "Template": "r1.data.templates",
    "get_template": "r1.data.templates",
    "make_task": "r1.data.tasks",
    "get_verifier": "r1.data.tasks",
    "SyntheticSource": "r1.data.tasks",
    "SyntheticSFTSource": "r1.data.tasks",
    "rl_prompt_dataset": "r1.data.pipeline",
    "sft_dataset": "r1.data.pipeline",
    "save_iterator": "r1.data.pipeline",
    "restore_iterator": "r1.data.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'r1.data' has no attribute {name!r}")

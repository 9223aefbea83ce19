"""r1: DeepSeek-R1 / R1-Zero in JAX.

The public entry points are re-exported lazily so that `import r1.rewards` (pure Python, used in
reward worker processes) never imports JAX.
"""

import importlib

_LAZY = {
    "Policy": "r1.policy",
    "load_hf_checkpoint": "r1.checkpoints.hf",
    "save_hf_checkpoint": "r1.checkpoints.hf",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'r1' has no attribute {name!r}")

"""Reflection metric for the "aha moment" analysis (R1 §2.2.4): how often a completion uses
reflective words. A metric to log next to the rewards, never a reward (rewarding the words would
teach the model to say "wait" without reflecting).
"""

import re

import numpy as np

# Each key is a reflective word; the pattern also takes its inflections ("checked", "mistakes").
REFLECTIVE_WORDS = {
    "wait": r"wait",
    "mistake": r"mistakes?",
    "verify": r"verif(?:y|ies|ied|ying|ication)",
    "check": r"check(?:s|ed|ing)?",
    "wrong": r"wrong",
    "however": r"however",
    "re-evaluate": r"re-?evaluat(?:e|es|ed|ing|ion)",
}
_PATTERNS = {w: re.compile(rf"(?<![A-Za-z]){p}(?![A-Za-z])", re.IGNORECASE)
             for w, p in REFLECTIVE_WORDS.items()}


def reflection_counts(completions: list[str]) -> dict[str, np.ndarray]:
  """Per-word counts: {word: i32[B]}, plus "total": i32[B] summed over the words."""
  counts = {w: np.array([len(p.findall(c)) for c in completions], np.int32)
            for w, p in _PATTERNS.items()}
  counts["total"] = np.sum([counts[w] for w in _PATTERNS], axis=0, dtype=np.int32) \
      if completions else np.zeros(0, np.int32)
  return counts


def reflection_metrics(completions: list[str]) -> dict[str, float]:
  """Batch summary for logging: mean count per word per completion, and the share of completions
  with at least one reflective word ("reflection/any")."""
  counts = reflection_counts(completions)
  metrics = {f"reflection/{w}": float(c.mean()) if len(c) else 0.0 for w, c in counts.items()}
  metrics["reflection/any"] = float((counts["total"] > 0).mean()) if completions else 0.0
  return metrics

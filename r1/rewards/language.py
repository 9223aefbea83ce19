"""Language-consistency reward (R1 §2.3.2): the share of chain-of-thought words in the target
language, to stop the CoT from mixing languages.

Language is detected per word from its script: a run of Latin (or Cyrillic, Greek, Arabic)
letters is one word; each CJK ideograph, kana or Hangul syllable is one word, since Chinese and
Japanese do not separate words with spaces. Math is not language: `$…$` spans, `\\commands`,
digits and symbols are dropped before counting. The CoT is the `<think>` block when there is one,
else the whole completion. A CoT with no words scores 0.
"""

import re

import numpy as np

SCRIPTS = {
    "latin": "A-Za-z\u00c0-\u024f",
    "cjk": "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af",
    "cyrillic": "\u0400-\u04ff",
    "greek": "\u0370-\u03ff",
    "arabic": "\u0600-\u06ff",
}
# Language codes to scripts; a script name is accepted as a target too.
LANGUAGES = {"en": "latin", "fr": "latin", "de": "latin", "es": "latin", "zh": "cjk", "ja": "cjk",
             "ko": "cjk", "ru": "cyrillic", "el": "greek", "ar": "arabic"}

_WORD = re.compile("|".join(
    f"(?P<{name}>[{chars}]{'' if name == 'cjk' else '+'})" for name, chars in SCRIPTS.items()))
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[a-zA-Z]+", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def word_scripts(text: str) -> list[str]:
  """The script of each word in text, math removed. E.g. "Let x 等于 2" -> [latin, latin, cjk, cjk]."""
  text = _MATH.sub(" ", text)
  return [m.lastgroup for m in _WORD.finditer(text)]


def chain_of_thought(completion: str) -> str:
  m = _THINK.search(completion)
  return m.group(1) if m else completion


def language_consistency(completion: str, target: str = "en") -> float:
  """Fraction of CoT words written in the target language's script, in [0, 1]."""
  script = LANGUAGES.get(target, target)
  if script not in SCRIPTS:
    raise ValueError(f"language target {target!r}: expected one of {sorted(LANGUAGES)} "
                     f"or a script in {sorted(SCRIPTS)}")
  scripts = word_scripts(chain_of_thought(completion))
  return scripts.count(script) / len(scripts) if scripts else 0.0


def language_reward(completions: list[str], examples: list[dict] | None = None,
                    target: str = "en") -> np.ndarray:
  """Registry entry: language consistency of each completion, f32[B] in [0, 1]."""
  del examples
  return np.array([language_consistency(c, target) for c in completions], np.float32)

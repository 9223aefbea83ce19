"""String side of math grading: answer extraction, LaTeX normalisation, answer structure.

Everything here is pure `str` work with linear-time scans and bounded regexes, so it is safe to run
in the trainer process on untrusted model output. The sympy side lives in `symbolic.py` and only
ever runs in worker processes under a hard timeout (`workers.py`).
"""

import re

# Longest extracted answer we grade. MATH-500 golds are < 100 chars; a longer "answer" is either
# a model dumping its reasoning into \boxed{} or an attack on the parser.
MAX_ANSWER_CHARS = 1000

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def find_brace_group(text: str, start: int) -> tuple[str, int] | None:
  """Returns (content, end) of the `{...}` group whose `{` is at text[start], end past the `}`.

  Linear in the group length; None when the braces never balance.
  """
  if start >= len(text) or text[start] != "{":
    return None
  depth = 0
  for i in range(start, len(text)):
    ch = text[i]
    if ch == "{" and (i == 0 or text[i - 1] != "\\"):
      depth += 1
    elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
      depth -= 1
      if depth == 0:
        return text[start + 1:i], i + 1
  return None


def last_boxed(text: str) -> str | None:
  """Content of the last balanced `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`) in text."""
  best = -1
  for cmd in _BOX_COMMANDS:
    best = max(best, text.rfind(cmd))
  for _ in range(4):  # A few unbalanced boxes back at most: keeps hostile input linear.
    if best < 0:
      break
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, best))
    i = best + len(cmd)
    while i < len(text) and text[i] == " ":
      i += 1
    if i < len(text) and text[i] == "{":
      group = find_brace_group(text, i)
      if group is not None:
        return group[0]
    elif i > best + len(cmd) and i < len(text):  # `\boxed 5`: one token up to space or `$`.
      return re.match(r"[^\s$]*", text[i:]).group(0)
    # Unbalanced or empty: try the previous box.
    prev = -1
    for c in _BOX_COMMANDS:
      prev = max(prev, text.rfind(c, 0, best))
    best = prev
  return None


_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)


def extract_answer(completion: str) -> str | None:
  """The answer a completion commits to, or None.

  Order: the content of the last `<answer>...</answer>` (its `\\boxed{}` if it has one), else the
  last `\\boxed{}`/`\\fbox{}`, else a GSM8K-style `#### N`, else a trailing "the answer is ...",
  else the whole completion when it is a short one-line bare answer.
  """
  if not isinstance(completion, str):
    return None
  text = completion
  start = text.rfind("<answer>")
  if start >= 0:
    end = text.find("</answer>", start)
    inner = text[start + len("<answer>"):end if end >= 0 else len(text)]
    boxed = last_boxed(inner)
    answer = boxed if boxed is not None else _answer_is(inner) or inner
    return answer.strip()
  boxed = last_boxed(text)
  if boxed is not None:
    return boxed.strip()
  hashes = text.rfind("####")
  if hashes >= 0:
    return text[hashes + 4:].strip().split("\n")[0].strip()
  answer = _answer_is(text)
  if answer is not None:
    return answer
  stripped = text.strip()
  if stripped and "\n" not in stripped and len(stripped) <= 300:
    return stripped
  return None


def _answer_is(text: str) -> str | None:
  """Text after the last "the answer is" up to the end of its line, minus `$` and a final period."""
  last = None
  for last in _ANSWER_IS.finditer(text):
    pass
  if last is None:
    return None
  answer = text[last.end():].split("\n")[0].strip()
  answer = answer.strip("$ ").rstrip(".").strip("$ ")
  return answer or None


def extract_gold(gold: str) -> str:
  """Gold answer from a gold field: GSM8K `... #### 1,234`, a MATH solution's last box, or as is."""
  hashes = gold.rfind("####")
  if hashes >= 0:
    return gold[hashes + 4:].strip()
  boxed = last_boxed(gold) if len(gold) > 40 else None
  return boxed if boxed is not None else gold


# ----------------------------------------------------------------------------------------------
# Normalisation.

_TEXT_CMDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|rm|operatorname)\s*\{([^{}]*)\}")
_REMOVE = re.compile(
    r"\\left\.|\\right\.|\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle)(?![a-zA-Z])")
_SPACES = re.compile(r"\\[!,;: ]|\\q?quad(?![a-zA-Z])|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree(?![a-zA-Z])")
_UNITS = (
    r"degrees?|deg|radians?|units?|square units|sq units|cm|centimeters?|mm|millimeters?|m|meters?"
    r"|km|kilometers?|in|inch(?:es)?|ft|feet|foot|yards?|yd|miles?|mi|mph|kg|g|grams?|kilograms?|lbs?"
    r"|pounds?|ounces?|oz|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?|years?"
    r"|dollars?|cents?|liters?|litres?|l|ml|gallons?|cups?|points?|people|persons?|students?"
    r"|marbles?|apples?|books?|pages?|cookies?|eggs?|times|ways|items?|percent")
# Trailing units are stripped word by word (`_strip_trailing_units`), never by one regex over the
# tail: `(?:\s+(?:square)?\s*unit)+\s*$` backtracks exponentially ("12" + " square units" * 19
# took 4 s, each repeat doubling it). These patterns only ever fullmatch one short token.
_UNIT_WORD = re.compile(r"(?:square|sq\.?|cubic)?(?:" + _UNITS + r")(?:\^\{?[23]\}?)?\.?", re.IGNORECASE)
_UNIT_MODIFIER = re.compile(r"(?:square|sq\.?|cubic|\^\{?[23]\}?\.?)", re.IGNORECASE)
_VAR_EQUALS = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*(?:=|\\in(?![a-zA-Z]))(?!=)")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?%?$")  # `0,111` is a decimal comma.


def _strip_trailing_units(s: str) -> str:
  """`12 square units` -> `12`, `5 cm^2` -> `5`: drops the trailing unit words after a number.

  Linear: one pass over the whitespace-separated words, each matched alone (at most 20 chars).
  """
  words = [(m.start(), m.group(0)) for m in re.finditer(r"\S+", s)]
  cut, seen_unit = len(words), False
  while cut > 0:
    word = words[cut - 1][1]
    if len(word) > 20:
      break
    if _UNIT_WORD.fullmatch(word):
      seen_unit = True
    elif not _UNIT_MODIFIER.fullmatch(word):
      break
    cut -= 1
  if not seen_unit or cut == 0 or cut == len(words):
    return s.strip()
  head = s[:words[cut][0]].rstrip()
  return head if head[-1] in "0123456789}.)" else s.strip()


def _canonical_args(s: str, cmd: str, nargs: int) -> str:
  """Rewrites `\\frac12`, `\\frac 59`, `\\frac9{19}` as `\\frac{1}{2}` ... (also `\\sqrt2`)."""
  out, i = [], 0
  while True:
    j = s.find(cmd, i)
    if j < 0 or (j + len(cmd) < len(s) and s[j + len(cmd)].isalpha()):
      if j < 0:
        out.append(s[i:])
        return "".join(out)
      out.append(s[i:j + len(cmd)])
      i = j + len(cmd)
      continue
    out.append(s[i:j] + cmd)
    k = j + len(cmd)
    for _ in range(nargs):
      while k < len(s) and s[k] == " ":
        k += 1
      if k >= len(s):
        break
      if s[k] == "{":
        group = find_brace_group(s, k)
        if group is None:
          break
        out.append("{" + group[0] + "}")
        k = group[1]
      elif s[k] == "[" and cmd == "\\sqrt":  # \sqrt[3]{x}: keep the index, then the radicand.
        close = s.find("]", k)
        if close < 0:
          break
        out.append(s[k:close + 1])
        k = close + 1
        while k < len(s) and s[k] == " ":
          k += 1
        if k < len(s) and s[k] == "{":
          group = find_brace_group(s, k)
          if group is None:
            break
          out.append("{" + group[0] + "}")
          k = group[1]
        elif k < len(s):
          out.append("{" + s[k] + "}")
          k += 1
      elif s[k] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[k:])
        tok = m.group(0) if m else s[k:k + 2]
        out.append("{" + tok + "}")
        k += len(tok)
      else:
        out.append("{" + s[k] + "}")
        k += 1
    i = k


def normalize(answer: str) -> str | None:
  """Canonical string for an answer; None when it is too long or contains NUL bytes.

  Removes \\left/\\right, spacing commands (\\! \\, \\; ~), \\text{}/\\mbox{} wrappers, trailing
  units, degrees (^\\circ), \\$, thousands separators, surrounding $, a final period and a leading
  `x =` / `x \\in`; turns \\dfrac/\\tfrac into \\frac and \\frac12 into \\frac{1}{2}. A percent sign
  is kept as `%` so the numeric comparison can apply its policy.
  """
  if answer is None or len(answer) > MAX_ANSWER_CHARS or "\x00" in answer:
    return None
  # Protect the row separator `\\` from the spacing rules (`\ ` is a space, `\\ ` is not).
  s = answer.strip().replace("\\\\", "\x01")
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
  s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}").replace("\\lvert", "|")
  s = s.replace("\\rvert", "|").replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
  s = _REMOVE.sub("", s)
  for _ in range(3):  # Nested \text{\textbf{...}}.
    s = _TEXT_CMDS.sub(lambda m: " " + m.group(1), s)
  s = _SPACES.sub(" ", s)
  s = _DEGREES.sub("", s)
  s = s.replace("\\$", "").replace("$", "").replace("\\%", "%").replace("{,}", "")
  s = re.sub(r"\s*percent\s*$", "%", s)
  s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
  s = s.strip()
  for _ in range(2):
    s = _strip_trailing_units(s)
    s = s.rstrip(".;").strip()
  if "=" in s or "\\in" in s:
    s = _VAR_EQUALS.sub("", s, count=1) if s.count("=") <= 1 else s
  s = _canonical_args(s, "\\frac", 2)
  s = _canonical_args(s, "\\sqrt", 1)
  # Spaces matter only between letters (`\pi r`, `a b`); elsewhere they are formatting.
  s = re.sub(r"\s+", " ", s.strip())
  s = re.sub(r"(?<![a-zA-Z]) | (?![a-zA-Z])", "", s)
  s = s.replace("\x01", "\\\\")
  if _THOUSANDS.match(s):
    s = s.replace(",", "")
  m = re.fullmatch(r"\(([A-E])\)|([A-E])\)", s)  # Multiple choice: (C) -> C.
  if m:
    s = m.group(1) or m.group(2)
  return s


# ----------------------------------------------------------------------------------------------
# Structure: several answers, tuples, intervals, sets, matrices.

_OPEN = "([{"
_CLOSE = ")]}"


def split_top_level(s: str, sep: str) -> list[str]:
  """Splits on sep outside any (), [], {} nesting. `\\{`/`\\}` count as brackets too."""
  parts, depth, start, i = [], 0, 0, 0
  while i < len(s):
    ch = s[i]
    if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
      depth += 1 if s[i + 1] == "{" else -1
      i += 2
      continue
    if ch in _OPEN:
      depth += 1
    elif ch in _CLOSE:
      depth -= 1
    elif depth == 0 and s.startswith(sep, i):
      if not (sep.startswith("\\") and s[i + len(sep):i + len(sep) + 1].isalpha()):
        parts.append(s[start:i])
        start = i + len(sep)
        i += len(sep)
        continue
    i += 1
  parts.append(s[start:])
  return parts


def outer_pair(s: str) -> bool:
  """True when s[0] opens a bracket that closes exactly at s[-1] (any of ( [ with ) ])."""
  depth = 0
  for i, ch in enumerate(s):
    if ch in "([":
      depth += 1
    elif ch in ")]":
      depth -= 1
      if depth == 0:
        return i == len(s) - 1
  return False


_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


def _expand_pm(items: list[str]) -> list[str]:
  """`1\\pm\\sqrt{5}` -> `1+\\sqrt{5}`, `1-\\sqrt{5}` (one \\pm per item)."""
  out = []
  for item in items:
    if item.count("\\pm") == 1:
      out += [item.replace("\\pm", "+"), item.replace("\\pm", "-")]
    else:
      out.append(item)
  return out


def structure(s: str):
  """Parses a normalised answer into a nested tuple.

  ("matrix", rows) | ("ordered", "(]", items) for tuples and intervals (order and bracket kinds
  matter) | ("unordered", items) for sets, unions and comma-separated answer lists | ("scalar", s).
  """
  m = _MATRIX.match(s)
  if m:
    rows = [r for r in m.group(2).split("\\\\") if r.strip()]
    return ("matrix", tuple(tuple(_strip_var(c) for c in r.split("&")) for r in rows))
  union = split_top_level(s, "\\cup")
  if len(union) > 1:
    return ("unordered", tuple(structure(u) for u in union))
  if s.startswith("\\{") and s.endswith("\\}"):
    items = split_top_level(s[2:-2], ",")
    return ("unordered", tuple(("scalar", _strip_var(i)) for i in _expand_pm(items)))
  if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and outer_pair(s):
    items = split_top_level(s[1:-1], ",")
    if len(items) > 1:
      return ("ordered", s[0] + s[-1], tuple(structure(_strip_var(i)) for i in items))
  items = split_top_level(s, ",")
  if len(items) > 1 or "\\pm" in s:
    items = _expand_pm(items)
    if len(items) > 1:
      return ("unordered", tuple(structure(_strip_var(i)) for i in items))
  return ("scalar", s)


def _strip_var(item: str) -> str:
  """`x=3` -> `3` inside a list; leaves equations like `5x+4=0` alone."""
  item = item.strip()
  return _VAR_EQUALS.sub("", item, count=1) if item.count("=") == 1 or "\\in" in item else item

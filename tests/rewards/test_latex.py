"""Answer extraction and normalisation (r1.rewards.latex), pure string tests."""

import pytest

from r1.rewards import latex
from r1.rewards import math as math_reward


@pytest.mark.parametrize("completion,expected", [
    ("<think>2+2</think><answer>4</answer>", "4"),
    ("<think>x</think>\n<answer> \\boxed{\\frac{1}{2}} </answer>", "\\frac{1}{2}"),
    ("<answer>The final answer is 7.</answer>", "7"),
    ("first \\boxed{1}, then \\boxed{2}.", "2"),
    ("nested \\boxed{\\frac{a^{2}}{b_{1}}} done", "\\frac{a^{2}}{b_{1}}"),
    ("\\fbox{12}", "12"),
    ("\\boxed 5$", "5"),
    ("lots of work\nSo the answer is $\\sqrt{2}$.", "\\sqrt{2}"),
    ("Final Answer: 12", "12"),
    ("Janet makes 18.\n#### 18", "18"),
    ("42", "42"),
    ("long\nreasoning with no final answer", None),
    ("\\boxed{1} and a broken \\boxed{2", "1"),
    ("", None),
])
def test_extract_answer(completion, expected):
  assert math_reward.extract_answer(completion) == expected


def test_extract_answer_prefers_answer_tag_over_earlier_boxes():
  text = "<think>maybe \\boxed{3}</think><answer>5</answer>"
  assert math_reward.extract_answer(text) == "5"


def test_extract_gold_forms():
  assert latex.extract_gold("She makes 9 * 2 = $18.\n#### 18") == "18"
  assert latex.extract_gold("#### 1,234") == "1,234"
  solution = "We have $r = 3$ and so the answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$"
  assert latex.extract_gold(solution) == "\\left( 3, \\frac{\\pi}{2} \\right)"
  assert latex.extract_gold("\\frac{1}{2}") == "\\frac{1}{2}"


@pytest.mark.parametrize("raw,expected", [
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac12", "\\frac{1}{2}"),
    ("\\frac 59", "\\frac{5}{9}"),
    ("11\\sqrt2", "11\\sqrt{2}"),
    ("\\sqrt[3]{x}", "\\sqrt[3]{x}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("5.4 \\text{ cents}", "5.4"),
    ("864 \\mbox{ inches}^2", "864"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("\\$32,\\!348", "32348"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("1{,}000", "1000"),
    ("50\\%", "50%"),
    ("3.", "3"),
    ("x = 3", "3"),
    ("x \\in [-2,7]", "[-2,7]"),
    ("\\pi r^2", "\\pi r^2"),
    ("a   +  b", "a+b"),
    ("\\text{(C)}", "C"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
])
def test_normalize(raw, expected):
  assert latex.normalize(raw) == expected


def test_normalize_rejects_long_and_nul():
  assert latex.normalize("1" * (latex.MAX_ANSWER_CHARS + 1)) is None
  assert latex.normalize("1\x002") is None


def test_structure_kinds():
  assert latex.structure("(1,2]") == ("ordered", "(]", (("scalar", "1"), ("scalar", "2")))
  assert latex.structure("\\{2,1\\}")[0] == "unordered"
  assert latex.structure("1,2,3")[0] == "unordered"
  assert latex.structure("(0,1)\\cup(2,3)")[0] == "unordered"
  assert latex.structure("1\\pm\\sqrt{2}") == ("unordered", (("scalar", "1+\\sqrt{2}"),
                                                             ("scalar", "1-\\sqrt{2}")))
  assert latex.structure("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}") == (
      "matrix", (("1", "2"), ("3", "4")))
  assert latex.structure("(x+1)") == ("scalar", "(x+1)")


def test_split_top_level_respects_nesting():
  assert latex.split_top_level("(1,2),\\{3,4\\},f(5,6)", ",") == ["(1,2)", "\\{3,4\\}", "f(5,6)"]
  assert latex.split_top_level("(0,1)\\cup(2,3)", "\\cup") == ["(0,1)", "(2,3)"]
  assert latex.split_top_level("\\cupcake", "\\cup") == ["\\cupcake"]

"""Templates render exactly."""

import pytest

from r1.data import templates

# DeepSeek-R1 paper, Table 1, typed out independently of the module under test.
PAPER_TABLE_1 = ("A conversation between User and Assistant. The user asks a question, and the "
                 "Assistant solves it. The assistant first thinks about the reasoning process in "
                 "the mind and then provides the user with the answer. The reasoning process and "
                 "answer are enclosed within <think> </think> and <answer> </answer> tags, "
                 "respectively, i.e., <think> reasoning process here </think> <answer> answer "
                 "here </answer>. User: prompt. Assistant:")


def test_r1_zero_is_table_1():
  t = templates.get_template("r1_zero")
  # Table 1's red "prompt" is the placeholder: rendering the word itself gives the table back.
  assert t.render_prompt("prompt") == PAPER_TABLE_1
  rendered = t.render_prompt("What is 2 + 3?")
  assert rendered == PAPER_TABLE_1.replace("User: prompt.", "User: What is 2 + 3?.")
  assert rendered.endswith("User: What is 2 + 3?. Assistant:")


def test_r1_zero_response():
  t = templates.get_template("r1_zero")
  assert t.render_response("2 + 3 = 5", "5") == " <think>2 + 3 = 5</think> <answer>5</answer>"


def test_r1_chat_and_plain():
  chat = templates.get_template("r1_chat")
  assert chat.render_prompt("Hi?") == "<｜User｜>Hi?<｜Assistant｜>"
  assert chat.render_response("r", "a") == "<think>\nr\n</think>\n<answer>a</answer>"
  plain = templates.get_template("plain")
  assert plain.render_prompt("What is 2 + 3?") == "Question: What is 2 + 3?\nAnswer:"
  assert plain.render_response("2 + 3 = 5", "5") == " 2 + 3 = 5\n#### 5"


def test_braces_in_questions_survive():
  # LaTeX questions are full of braces; str.format would raise or eat them.
  q = r"Compute $\frac{1}{2} + {x}$ where {prompt} is literal."
  assert templates.get_template("plain").render_prompt(q) == f"Question: {q}\nAnswer:"


def test_unknown_template_names_choices():
  with pytest.raises(ValueError, match=r"unknown prompt template 'r2'.*plain.*r1_chat.*r1_zero"):
    templates.get_template("r2")

"""JSONL/Parquet sources, GSM8K and MATH-500 loaders, malformed-record handling."""

import json

import pytest

from r1.data import sources


def _write(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def test_gsm8k_gold():
  assert sources.gsm8k_gold("work\n#### 1,234") == "1234"
  assert sources.gsm8k_gold("a #### 5 then\n#### -7") == "-7"  # The last marker counts.
  with pytest.raises(ValueError, match="no '#### '"):
    sources.gsm8k_gold("no marker 42")


def test_shipped_datasets():
  test, train, math = sources.load_gsm8k("test"), sources.load_gsm8k("train"), sources.load_math500()
  assert (len(test), len(train), len(math)) == (1319, 7473, 500)
  assert test[0].gold == "18" and test[0].prompt.startswith("Janet")
  assert test[0].id == "gsm8k_test:1" and test[0].verifier == "math"
  for example in list(test) + list(train):
    assert example.gold.lstrip("-").replace(".", "", 1).isdigit(), example
  assert math[0].gold == r"\left( 3, \frac{\pi}{2} \right)"
  assert math[0].id == "test/precalculus/807.json"
  assert len({e.id for e in math}) == 500
  with pytest.raises(ValueError, match="split 'dev'"):
    sources.load_gsm8k("dev")


def test_custom_fields_and_tests(tmp_path):
  fn_test = {"fn_name": "f", "args": [], "expected": 3}
  io_test = {"input": "", "output": "x\n"}
  path = _write(tmp_path / "code.jsonl", [
      json.dumps({"q": "Write f.", "a": 3, "t": [fn_test], "uid": "p1"}),
      json.dumps({"q": "Write g.", "a": "x", "t": [io_test], "uid": "p2"}),
  ])
  src = sources.load_prompts(path, question_field="q", answer_field="a", tests_field="t",
                             id_field="uid", verifier="code")
  assert [e.id for e in src] == ["p1", "p2"]
  assert src[0] == sources.PromptExample("p1", "Write f.", "3", "code", {"tests": [fn_test]})


@pytest.mark.parametrize("tests, reason", [
    ([], "expected a non-empty list"),
    (["assert f() == 3"], "expected a dict"),
    ([{"input": "1\n"}], "output"),
    ([{"fn_name": "f", "args": [1]}], "expected"),
])
def test_bad_code_test_rows_are_named(tmp_path, tests, reason):
  good = {"q": "Write f.", "a": 3, "t": [{"fn_name": "f", "args": [], "expected": 3}]}
  path = _write(tmp_path / "code.jsonl", [json.dumps(good), json.dumps(dict(good, t=tests))])
  with pytest.raises(sources.MalformedRecordError) as info:
    sources.load_prompts(path, question_field="q", answer_field="a", tests_field="t", verifier="code")
  assert info.value.line == 2 and f"{path}:2" in str(info.value)
  assert reason in str(info.value)


@pytest.mark.parametrize("bad_line, reason", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"question": "q"}', "missing field 'answer'"),
    ('{"question": ["q"], "answer": "1"}', "field 'question' is list"),
])
def test_malformed_line_is_named(tmp_path, bad_line, reason):
  good = json.dumps({"question": "q", "answer": "1"})
  path = _write(tmp_path / "p.jsonl", [good, "", bad_line, good])
  with pytest.raises(sources.MalformedRecordError) as info:
    sources.load_prompts(path)
  assert info.value.line == 3 and info.value.path == path
  assert f"{path}:3: malformed record" in str(info.value) and reason in str(info.value)
  skipped = sources.load_prompts(path, skip_malformed=True)
  assert len(skipped) == 2 and skipped.num_skipped == 1
  assert [e.id for e in skipped] == ["p:1", "p:4"]


def test_non_utf8_line_is_named_and_skippable(tmp_path):
  good = json.dumps({"question": "q", "answer": "1"}).encode()
  path = tmp_path / "latin1.jsonl"
  # Line 2 is Latin-1 ("é" as the single byte 0xe9), as a file exported by another tool may be.
  path.write_bytes(good + b"\n" + '{"question": "caf\u00e9", "answer": "2"}'.encode("latin-1") + b"\n" + good + b"\n")
  with pytest.raises(sources.MalformedRecordError) as info:
    sources.load_prompts(str(path))
  assert (info.value.path, info.value.line) == (str(path), 2)
  assert f"{path}:2: malformed record: not UTF-8 (byte b'\\xe9' at column 18)" in str(info.value)
  skipped = sources.load_prompts(str(path), skip_malformed=True)
  assert [e.id for e in skipped] == ["latin1:1", "latin1:3"] and skipped.num_skipped == 1


def test_gsm8k_bad_answer_named(tmp_path):
  path = _write(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "12"})])
  with pytest.raises(sources.MalformedRecordError, match=r"g.jsonl:1: .*no '#### '"):
    sources.load_gsm8k(path=path)
  assert sources.load_gsm8k(path=path, skip_malformed=True).num_skipped == 1


def test_sft_source_round_trip(tmp_path):
  pairs = [sources.SFTExample(f"s{i}", f"q{i}", f" <think>r{i}</think> <answer>{i}</answer>")
           for i in range(3)]
  path = str(tmp_path / "sft.jsonl")
  sources.write_jsonl(path, pairs)
  assert list(sources.load_sft(path, id_field="id")) == pairs
  with pytest.raises(sources.MalformedRecordError, match="missing field 'completion'"):
    sources.load_sft(path, response_field="completion")


def test_parquet(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  path = str(tmp_path / "p.parquet")
  pq.write_table(pa.table({"problem": ["1+1?", "2+2?", None], "solution": ["2", "4", "x"]}), path)
  with pytest.raises(sources.MalformedRecordError, match=r"p.parquet:3: .*'problem' is NoneType"):
    sources.load_prompts(path, question_field="problem", answer_field="solution")
  src = sources.load_prompts(path, question_field="problem", answer_field="solution",
                             skip_malformed=True)
  assert [(e.prompt, e.gold) for e in src] == [("1+1?", "2"), ("2+2?", "4")]
  assert src.num_skipped == 1


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    sources.load_prompts("/nonexistent/nope.jsonl")

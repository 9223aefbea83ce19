"""Report files: a damaged one is named, and the stages that read one evaluate again instead of failing."""

import json

import pytest

from r1.eval import report as report_lib
from r1.stages import grpo


def test_a_malformed_report_is_an_error_naming_the_file_and_position(tmp_path):
  path = tmp_path / "eval_report.json"
  path.write_text('{"config": {"k": 4},\n "datasets": {"held_out": ')   # truncated mid-write
  with pytest.raises(report_lib.ReportError, match=rf"{path}: not a report: malformed JSON at line 2 column"):
    report_lib.read_report(str(path))
  path.write_text("[1, 2]")
  with pytest.raises(report_lib.ReportError, match="a JSON list, expected an object"):
    report_lib.read_report(str(path))
  path.write_bytes(b'{"config": "\xff\xfe"}')
  with pytest.raises(report_lib.ReportError, match="not UTF-8 at byte 12"):
    report_lib.read_report(str(path))
  assert report_lib.read_report_if_any(str(path)) is None                    # damaged: none to use
  assert report_lib.read_report_if_any(str(tmp_path / "missing.json")) is None
  report = {"config": {"k": 4}, "datasets": {}}
  report_lib.write_report(str(path), report)
  assert report_lib.read_report(str(path)) == report == report_lib.read_report_if_any(str(path))


def test_a_damaged_starting_evaluation_is_evaluated_again(tmp_path):
  (tmp_path / report_lib.BEFORE_FILE).write_text('{"datasets": ')
  fresh = {"config": {}, "datasets": {"held_out": {"n_eval": 4, "k": 2, "pass@1": 0.5}}}
  report, reused = grpo._start_evaluation(str(tmp_path), 0, 4, 2, evaluate=lambda: fresh, reuse=lambda: None)
  assert (report, reused) == (fresh, False)
  with open(tmp_path / report_lib.BEFORE_FILE) as f:
    assert json.load(f) == fresh                # rewritten whole
  # Resumed past step 0, a damaged file is as good as none: the run goes on, without a 'before'.
  (tmp_path / report_lib.BEFORE_FILE).write_text("not json")
  assert grpo._start_evaluation(str(tmp_path), 3, 4, 2, evaluate=None, reuse=None) == (None, False)

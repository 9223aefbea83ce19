"""Code reward and its sandbox: scoring, test-row validation, parallel completions, and what a
program sees inside each backend this machine can run (hostile programs: test_code_hostile.py)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from r1.data import sources
from r1.rewards import code, sandbox
from tests.rewards.conftest import DATASETS, child_pids, recording_run_uids
from tests.rewards.test_code_hostile import bwrap_usable_by, processes_of

FAST = code.SandboxLimits(cpu_s=1, wall_s=2.0)
ROOT = os.geteuid() == 0
PROJECT = pathlib.Path(code.__file__).resolve().parents[2]
ADD_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": "10"},
             {"input": "-1 1", "output": "0"}]


def _backends():
  # Root's bwrap runs as a per-run uid, so it needs user namespaces for an unprivileged uid.
  bwrap_ok = bwrap_usable_by(sandbox._UID_BASE if ROOT else None)
  return [pytest.param("namespaces", marks=pytest.mark.skipif(not ROOT, reason="needs root")),
          pytest.param("bwrap", marks=pytest.mark.skipif(
              not bwrap_ok, reason="bwrap or user namespaces unavailable (refusal is tested in "
              "test_code_hostile.py)"))]


@pytest.fixture(params=_backends())
def limits(request):
  return code.SandboxLimits(cpu_s=1, wall_s=2.0, backend=request.param)


@pytest.fixture(autouse=True)
def no_leftovers(monkeypatch):
  """Every per-run uid handed out during the test has no process left afterwards, zombies too."""
  used = []
  monkeypatch.setattr(sandbox, "_run_uid", recording_run_uids(sandbox._run_uid, used))
  before = child_pids()
  yield used
  assert child_pids() - before == set(), "a sandbox process was left behind"
  assert processes_of(set(used)) == []


def run(source: str, limits, stdin: str = "") -> code.RunResult:
  return code.run_program({"main.py": source}, "main.py", stdin, limits)


def test_correct_wrong_and_partial_programs():
  good = "a, b = map(int, input().split())\nprint(a + b)\n"
  assert code.run_tests(good, ADD_TESTS, FAST) == 1.0
  assert code.run_tests("print(3)", ADD_TESTS, FAST) == pytest.approx(1 / 3)
  assert code.run_tests("print(3)", ADD_TESTS, FAST, all_or_nothing=True) == 0.0
  assert code.run_tests("raise SystemExit(1)", ADD_TESTS, FAST) == 0.0
  assert code.run_tests("syntax error(", ADD_TESTS, FAST) == 0.0


def test_function_call_style():
  tests = [{"fn_name": "pair", "args": [1, 2], "expected": [1, 2]},
           {"fn_name": "pair", "args": ["a", None], "expected": ["a", None]},
           {"fn_name": "pair", "args": [1, 2], "expected": [2, 1]}]
  source = "def pair(a, b):\n  return (a, b)\n"
  assert code.run_tests(source, tests, FAST) == pytest.approx(2 / 3)
  assert code.run_tests("def other(): pass", tests, FAST) == 0.0


def test_code_reward_extracts_fenced_block_and_returns_f32():
  completions = ["<think>sum</think><answer>```python\nprint(sum(map(int, input().split())))\n"
                 "```</answer>",
                 "```python\nprint(0)\n```"]
  rewards = code.code_reward(completions, [{"tests": ADD_TESTS}] * 2, limits=FAST)
  assert rewards.dtype == np.float32
  np.testing.assert_allclose(rewards, [1.0, 1 / 3])


def test_completions_run_in_parallel_and_keep_their_order():
  # Each program sleeps 1 s (no CPU, so parallel even on 2 cores); one at a time would take 8 s.
  limits = code.SandboxLimits(cpu_s=1, wall_s=4.0, max_parallel=8)
  completions = [f"import time\ntime.sleep(1)\nprint({k})" for k in range(8)]
  examples = [{"tests": [{"input": "", "output": str(k if k % 2 == 0 else k + 1)}]}
              for k in range(8)]
  code.code_reward(completions[:1], examples[:1], limits=limits)  # Self-test outside the timing.
  start = time.monotonic()
  rewards = code.code_reward(completions, examples, limits=limits)
  assert time.monotonic() - start < 5
  np.testing.assert_array_equal(rewards, [1, 0, 1, 0, 1, 0, 1, 0])


@pytest.mark.parametrize("tests, reason", [
    ([], "non-empty list"),
    ("print(1)", "non-empty list"),
    (["assert f() == 3"], "expected a dict"),
    ([{"input": "1"}], "has no 'output'"),
    ([{"input": "1", "output": None}], "has no 'output'"),
    ([{"input": 1, "output": "1"}], "'input' is int"),
    ([{"fn_name": "f", "args": [1]}], "has no 'expected'"),
    ([{"fn_name": "", "expected": 1}], "'fn_name' must be"),
    ([{"fn_name": "f", "args": 1, "expected": 1}], "'args' is int"),
])
def test_validate_tests_rejects_bad_rows(tests, reason):
  with pytest.raises(ValueError, match=reason):
    code.validate_tests(tests)
  with pytest.raises(ValueError, match=reason):
    code.code_reward(["print(1)"], [{"tests": tests}], limits=FAST)


def test_bad_test_rows_are_rejected_at_load_with_file_and_line(tmp_path):
  path = tmp_path / "code.jsonl"
  rows = [{"question": "q", "answer": "", "tests": [{"input": "1", "output": "1"}]},
          {"question": "q", "answer": "", "tests": [{"input": "1"}]}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(sources.MalformedRecordError, match=rf"{path}:2: .*has no 'output'"):
    sources.load_prompts(str(path), tests_field="tests", verifier="code")
  loaded = sources.load_prompts(str(path), tests_field="tests", verifier="code",
                                skip_malformed=True)
  assert len(loaded) == 1 and loaded.num_skipped == 1


def test_run_tests_rejects_empty_tests():
  with pytest.raises(ValueError, match="no test cases"):
    code.run_tests("print(1)", [], FAST)


_VIEW = r"""
import json, os
with open("/proc/self/status") as f:
  status = dict(line.split(":", 1) for line in f)
with open("/proc/net/dev") as f:
  interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
print(json.dumps(dict(uid=os.getuid(), pid=os.getpid(), ppid=os.getppid(),
                      root=sorted(os.listdir("/")),
                      pids=sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                      nnp=status["NoNewPrivs"].strip(), caps=status["CapEff"].strip(),
                      interfaces=interfaces, env=sorted(set(os.environ) - {"LC_CTYPE"}),
                      cwd=os.getcwd(), files=sorted(os.listdir(".")))))
"""


def test_what_a_program_sees(limits):
  result = run(_VIEW, limits)
  assert result.returncode == 0, result
  seen = json.loads(result.stdout)
  # Its own PID namespace: its parent is that namespace's pid 1, and nothing else is visible.
  assert seen["ppid"] == 1 and seen["pid"] == 2 and seen["pids"] == [1, 2]
  assert seen["nnp"] == "1" and int(seen["caps"], 16) == 0
  assert seen["interfaces"] == ["lo"] and seen["env"] == []
  assert seen["cwd"] == "/tmp" and seen["files"] == ["main.py"]
  assert set(seen["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                               "sbin", "tmp", "usr", "root", "opt"}
  if limits.backend == "bwrap":
    assert seen["uid"] == sandbox.INSIDE_UID
  else:
    assert seen["uid"] >= sandbox._UID_BASE


def test_project_and_data_are_hidden(limits, tmp_path):
  gold = tmp_path / "gold.jsonl"
  gold.write_text('{"output": "GOLD"}\n')
  targets = [str(PROJECT), str(PROJECT / "setup.py"), str(DATASETS / "math500.jsonl"), str(gold),
             str(pathlib.Path(sandbox.__file__)), "/usr/share/doc"]
  source = ("import json, os\nout = {}\nfor p in %r:\n  try:\n"
            "    out[p] = os.listdir(p) if os.path.isdir(p) else open(p).read(100)\n"
            "  except OSError as e:\n    out[p] = None\nprint(json.dumps(out))" % targets)
  hide_doc = code.SandboxLimits(**{**limits.__dict__, "hidden_paths": ("/usr/share/doc",)})
  seen = json.loads(run(source, hide_doc).stdout)
  assert {p: v for p, v in seen.items() if v} == {}
  # /usr/share/doc is inside the bound /usr: hidden by an empty mount, its siblings still there.
  assert os.listdir("/usr/share/doc") and run("import os\nprint(len(os.listdir('/usr/share')))",
                                               hide_doc).stdout.strip() not in ("", "0")


def test_tmpfs_is_size_capped(limits):
  capped = code.SandboxLimits(**{**limits.__dict__, "tmpfs_bytes": 8 << 20})
  source = ("n = 0\ntry:\n  for i in range(64):\n    with open(f'f{i}', 'wb') as f:\n"
            "      f.write(b'x' * (1 << 20))\n    n += 1\nexcept OSError as e:\n"
            "  print(e.errno)\nprint(n)")
  out = run(source, capped).stdout.split()
  assert out[0] == "28" and int(out[1]) < 8  # ENOSPC before 8 MiB.


def test_writes_stay_inside(limits, tmp_path):
  scratch = [f"/tmp/r1_inside_{os.getpid()}", f"/var/tmp/r1_inside_{os.getpid()}"]
  source = ("import os\nfor p in %r:\n  try:\n    open(p, 'w').write('x')\n  except OSError:\n"
            "    pass\nopen('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())"
            % ([str(tmp_path / "escape"), str(PROJECT / "r1_escape")] + scratch))
  result = run(source, limits)
  assert result.returncode == 0 and result.stdout.split() == ["ok"]
  for target in [tmp_path / "escape", PROJECT / "r1_escape"] + scratch:
    assert not os.path.exists(target), target


def test_fork_bomb_is_capped_by_max_processes(limits):
  source = ("import os, time\nn = 0\ntry:\n  for _ in range(200):\n    if os.fork() == 0:\n"
            "      time.sleep(30)\n      os._exit(0)\n    n += 1\nexcept OSError:\n  pass\n"
            "print(n)")
  out = run(source, limits).stdout.split()
  assert out and 0 < int(out[0]) < limits.max_processes


def test_concurrent_runs_get_distinct_uids(monkeypatch):
  if not ROOT:
    pytest.skip("per-run uids need root")
  many = code.SandboxLimits(cpu_s=1, wall_s=4.0, max_parallel=8, backend="namespaces")
  seen = []  # The uid each run reports on its stdout, all 8 alive at once.
  original = code.run_program

  def recording(*args, **kwargs):
    result = original(*args, **kwargs)
    seen.append(int(result.stdout))
    return result

  monkeypatch.setattr(code, "run_program", recording)
  code.run_tests("import os, time\ntime.sleep(0.3)\nprint(os.getuid())",
                 [{"input": "", "output": "x"}] * 8, many)
  assert len(seen) == 8 and len(set(seen)) == 8 and min(seen) >= sandbox._UID_BASE


def test_uid_lock_skips_uids_held_elsewhere(monkeypatch):
  if not ROOT:
    pytest.skip("per-run uids need root")
  draws = iter([5, 5, 7, 7, 9])
  monkeypatch.setattr(sandbox.secrets, "randbelow", lambda n: next(draws))
  with sandbox._run_uid() as first:
    with sandbox._run_uid() as second:  # 5 is held (by this process): drawn again, skipped.
      assert (first, second) == (sandbox._UID_BASE + 5, sandbox._UID_BASE + 7)
  # Held by another process: a forked child takes 7 and keeps it while we draw.
  read_fd, write_fd = os.pipe()
  monkeypatch.setattr(sandbox.secrets, "randbelow", lambda n: 7)
  pid = os.fork()
  if pid == 0:
    with sandbox._run_uid():
      os.write(write_fd, b"held")
      time.sleep(2)
    os._exit(0)
  assert os.read(read_fd, 4) == b"held"
  draws = iter([7, 9])
  monkeypatch.setattr(sandbox.secrets, "randbelow", lambda n: next(draws))
  with sandbox._run_uid() as third:
    assert third == sandbox._UID_BASE + 9
  os.waitpid(pid, 0)
  # A uid that still owns a process (a crashed run) is skipped too.
  monkeypatch.setattr(sandbox, "_processes_of_uid", lambda uid: [1] if uid % 2 else [])
  draws = iter([11, 12])
  with sandbox._run_uid() as fourth:
    assert fourth == sandbox._UID_BASE + 12


def _world_readable_dir(prefix: str) -> str:
  path = tempfile.mkdtemp(prefix=prefix)
  os.chmod(path, 0o755)
  return path


def test_self_test_stops_an_interpreter_that_cannot_run_inside(limits):
  # Runs outside (the marker exists on the host) but not inside, where that path is not visible.
  base = _world_readable_dir("r1_sandbox_python_")
  try:
    marker = pathlib.Path(base, "host_only", "marker")
    marker.parent.mkdir()
    marker.touch()
    wrapper = pathlib.Path(base, "bin", "python")
    wrapper.parent.mkdir(mode=0o755)
    wrapper.write_text(f"#!/bin/sh\n[ -e {marker} ] || exit 3\nexec /usr/bin/python3 \"$@\"\n")
    wrapper.chmod(0o755)
    broken = code.SandboxLimits(**{**limits.__dict__, "python": str(wrapper)})
    with pytest.raises(code.SandboxUnavailableError, match="known-good program") as info:
      code.run_tests("print(1)", [{"input": "", "output": "1"}], broken)
    assert str(wrapper) in str(info.value)
  finally:
    shutil.rmtree(base)


def test_venv_under_tmp_runs_inside(limits):
  # The sandbox's /tmp is a fresh tmpfs; an interpreter living under the host's /tmp is bound in.
  # A root bwrap binds as the run's uid, so its venv needs a world-readable base interpreter.
  base_python = sys.executable if limits.backend == "namespaces" or not ROOT else "/usr/bin/python3"
  venv = pathlib.Path(_world_readable_dir("r1_sandbox_venv_"), "venv")
  try:
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    in_venv = code.SandboxLimits(**{**limits.__dict__, "python": str(venv / "bin" / "python")})
    result = run("import sys\nprint(sys.prefix)", in_venv)
    assert result.returncode == 0 and result.stdout.strip() == str(venv)
  finally:
    shutil.rmtree(venv.parent)

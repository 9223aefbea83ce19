"""Two CPU processes joined with jax.distributed.initialize on localhost (4 fake devices each) run
sharded GRPO steps, each feeding only its own rows of the batch, save and restore a multi-host
orbax checkpoint, and agree with one 8-device process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.child_env import child_env
from tests.multidevice.test_sharded_model import ROOT

SCRIPT = os.path.join(os.path.dirname(__file__), "multiprocess_grpo.py")


def _env(devices):
  return child_env(devices)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_together(commands, envs):
  """Starts the processes at once (they join one JAX job), waits for all; [(stdout, stderr)].
  Every one must exit 0; a hung one is killed."""
  procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for argv, env in zip(commands, envs)]
  try:
    outputs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  return outputs


def _load(out_dir):
  with open(os.path.join(out_dir, "result.json")) as f:
    result = json.load(f)
  with np.load(os.path.join(out_dir, "params.npz")) as params:
    result["params"] = dict(params)
  return result


def test_two_processes_agree_with_one(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  single.mkdir()
  multi.mkdir()
  proc = subprocess.run([sys.executable, SCRIPT, str(single)], env=_env(8), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  port = str(_free_port())
  _run_together([[sys.executable, SCRIPT, str(multi), port, str(i), "2"] for i in range(2)], [_env(4)] * 2)

  one, two = _load(single), _load(multi)
  assert one["process_count"] == 1 and two["process_count"] == 2
  for i in range(2):
    with open(multi / f"process_{i}.json") as f:
      process = json.load(f)
    # Each process fed half the batch (its 4 devices' rows) and read back its own shards.
    assert process["local_devices"] == 4 and process["local_rows"] == [8 * i, 8 * i + 8], process
    assert process["restored_equal"], process
  assert len(one["losses"]) == len(two["losses"]) == 3
  for a, b in zip(one["losses"], two["losses"]):
    assert abs(a["loss"] - b["loss"]) <= 1e-6, (a, b)  # ~0 on policy: compare on the |A| ~ 1 scale
    for key in ("kl", "entropy", "grad_norm"):
      assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), (key, a, b)
  assert sorted(one["params"]) == sorted(two["params"])
  for key, x in one["params"].items():
    y = two["params"][key]
    assert np.abs(x - y).max() <= 1e-5 * np.abs(x).max(), key


def test_multihost_flag():
  from r1 import main  # pylint: disable=g-import-not-at-top
  assert main.should_initialize_distributed("true", {})
  assert not main.should_initialize_distributed("false", {"JAX_COORDINATOR_ADDRESS": "h:1234"})
  assert main.should_initialize_distributed("auto", {"JAX_COORDINATOR_ADDRESS": "h:1234"})


def test_main_joins_processes_and_prints_once(tmp_path):
  # Every worker runs the same command; the environment says who is who (on TPU VMs: the metadata).
  port = _free_port()
  argv = [sys.executable, "-m", "r1.main", "--config=configs/model_report.py", f"--workdir={tmp_path}"]
  outputs = _run_together([argv] * 2, [dict(_env(4), JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                             JAX_PROCESS_ID=str(i)) for i in range(2)])
  assert "forward [" in outputs[0][0], outputs[0]
  # Process 1 prints nothing: it joined the job (alone it would be process 0 and print the report).
  assert outputs[1][0] == "", outputs[1][0]
  with open(tmp_path / "model_report.json") as f:
    assert json.load(f)["params"]["total"] > 0

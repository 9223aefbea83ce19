"""TrainCheckpointer: exact round trips, retention, resume, grain position, SIGTERM, sharding."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1.checkpoints.manager import TrainCheckpointer
from tests.child_env import child_env

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_state(seed: int):
  rng = np.random.default_rng(seed)
  params = {
      "embed": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
      "layers": {"0": {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.bfloat16),
                       "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}},
  }
  tx = optax.adamw(1e-2)
  opt_state = tx.init(params)
  # One real update so Adam's moments and count are not their zero initial values.
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)
  return {
      "params": params,
      "ref_params": jax.tree.map(lambda x: x * 2, params),
      "opt_state": opt_state,
      "moe_bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
      "rng": jax.random.key(seed),
      "step": 7 + seed,
  }


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if isinstance(x, int):
      assert type(y) is int and x == y
      continue
    assert x.dtype == y.dtype, (x.dtype, y.dtype)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_exact_values_dtypes_keys_and_opt_state(tmp_path):
  state = _train_state(0)
  with TrainCheckpointer(tmp_path, save_every=1, async_save=True) as ckpt:
    assert ckpt.save(3, state, metadata={"config": {"lr": 0.01}})
    ckpt.wait()
  # A different state of the same structure as target: restored values must come from disk.
  target = _train_state(1)
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    restored = ckpt.restore(target_state=target)
    assert ckpt.metadata() == {"config": {"lr": 0.01}}
  _assert_same(state, restored)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert restored["params"]["layers"]["0"]["w"].dtype == jnp.bfloat16
  # The key still works as a key, and draws what the original draws.
  np.testing.assert_array_equal(jax.random.uniform(restored["rng"], (3,)),
                                jax.random.uniform(state["rng"], (3,)))


def test_restore_into_abstract_target_keeps_shardings(tmp_path):
  state = _train_state(0)
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, state)
    ckpt.wait()
    abstract = jax.eval_shape(lambda: _train_state(0))
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, int) else jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
        abstract)
    abstract["step"] = 0
    restored = ckpt.restore(1, target_state=abstract)
  _assert_same(state, restored)
  assert restored["moe_bias"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_save_period_force_and_duplicate_step(tmp_path):
  with TrainCheckpointer(tmp_path, save_every=5, async_save=False) as ckpt:
    saved = [s for s in range(1, 13) if ckpt.save(s, {"x": jnp.float32(s)})]
    assert saved == [5, 10]
    assert ckpt.save(12, {"x": jnp.float32(12)}, force=True)
    assert not ckpt.save(12, {"x": jnp.float32(-1)}, force=True)  # already saved: kept as is
    assert ckpt.all_steps() == [5, 10, 12]
    assert float(ckpt.restore(target_state={"x": jnp.float32(0)})["x"]) == 12.0


def test_keep_last_k_and_best_even_when_old(tmp_path):
  with TrainCheckpointer(tmp_path, save_every=1, keep=2, async_save=True) as ckpt:
    evals = {2: 0.9, 4: 0.3, 6: 0.5}  # step 2 is best and becomes old
    for step in range(1, 8):
      metrics = {"eval/pass@1": evals[step], "eval/other": 1.0} if step in evals else None
      ckpt.save(step, {"x": jnp.float32(step)}, eval_metrics=metrics)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 6, 7]
    assert ckpt.best_step() == 2
  assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [2, 6, 7]


def test_best_mode_min_and_no_keep_best(tmp_path):
  with TrainCheckpointer(tmp_path / "min", save_every=1, keep=1, best_metric="eval/loss",
                         best_mode="min", async_save=False) as ckpt:
    for step, loss in [(1, 2.0), (2, 1.0), (3, 3.0), (4, 4.0)]:
      ckpt.save(step, {"x": jnp.float32(step)}, eval_metrics={"eval/loss": loss})
    assert ckpt.all_steps() == [2, 4]
  with TrainCheckpointer(tmp_path / "nobest", save_every=1, keep=1, keep_best=False,
                         async_save=False) as ckpt:
    for step, acc in [(1, 0.9), (2, 0.1)]:
      ckpt.save(step, {"x": jnp.float32(step)}, eval_metrics={"eval/pass@1": acc})
    assert ckpt.all_steps() == [2]


def test_latest_step_after_reopening(tmp_path):
  with TrainCheckpointer(tmp_path, save_every=2) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      ckpt.restore(target_state={"x": jnp.float32(0)})
    for step in range(1, 10):
      ckpt.save(step, {"x": jnp.float32(step)})
  with TrainCheckpointer(tmp_path, save_every=2) as resumed:
    assert resumed.latest_step() == 8
    assert resumed.all_steps() == [4, 6, 8]
    assert float(resumed.restore(target_state={"x": jnp.float32(0)})["x"]) == 8.0
    with pytest.raises(FileNotFoundError, match="step 2 .* saved steps: \\[4, 6, 8\\]"):
      resumed.restore(2, target_state={"x": jnp.float32(0)})


def _batches():
  return grain.MapDataset.range(100).shuffle(seed=0).batch(4)


def test_grain_iterator_position_restored(tmp_path):
  uninterrupted = iter(_batches())
  expected = [next(uninterrupted) for _ in range(6)]

  it = iter(_batches())
  for _ in range(3):
    next(it)
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(3, {"x": jnp.float32(3)}, iterator=it)
    next(it)  # the live iterator moves on; the checkpoint must not
  fresh = iter(_batches())
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    ckpt.restore(target_state={"x": jnp.float32(0)}, iterator=fresh)
  for want in expected[3:]:
    np.testing.assert_array_equal(next(fresh), want)
  # The restored position really is not the start.
  assert not np.array_equal(expected[3], expected[0])


def test_restore_iterator_from_checkpoint_without_one_names_the_problem(tmp_path):
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, {"x": jnp.float32(1)})
    ckpt.wait()
    with pytest.raises(FileNotFoundError, match="step 1 .* no data-iterator state"):
      ckpt.restore(target_state={"x": jnp.float32(0)}, iterator=iter(_batches()))


def test_bad_options_are_named(tmp_path):
  with pytest.raises(ValueError, match="save_every=0"):
    TrainCheckpointer(tmp_path, save_every=0)
  with pytest.raises(ValueError, match="best_mode='best'"):
    TrainCheckpointer(tmp_path, save_every=1, best_mode="best")


def test_should_stop_after_handled_signal_and_handler_restored(tmp_path):
  before = signal.getsignal(signal.SIGUSR1)
  with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
    ckpt.install_preemption_handler(signums=(signal.SIGUSR1,))
    assert not ckpt.should_stop(1)
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary in the main thread.
    assert ckpt.should_stop(2)
  assert signal.getsignal(signal.SIGUSR1) is before


# A toy run: state = a counter updated by a non-commutative rule, so resuming at the wrong step or
# with the wrong value changes the final number. Each step sleeps so that SIGTERM lands mid-run.
_TOY_LOOP = textwrap.dedent("""
    import sys, time
    import jax.numpy as jnp
    from r1.checkpoints.manager import TrainCheckpointer

    directory, total_steps, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ckpt = TrainCheckpointer(directory, save_every=5, keep=2)
    ckpt.install_preemption_handler()
    state = {"counter": jnp.float32(1.0), "step": 0}
    start = ckpt.latest_step() or 0
    if start:
      state = ckpt.restore(start, target_state=state)
      assert state["step"] == start, (state["step"], start)
    print(f"START {start}", flush=True)
    for step in range(start, total_steps):
      state = {"counter": state["counter"] * 1.5 + step, "step": step + 1}
      time.sleep(sleep)
      print(f"STEP {step + 1}", flush=True)
      stop = ckpt.should_stop(step + 1)
      ckpt.save(step + 1, state, force=stop or step + 1 == total_steps)
      if stop:
        print(f"STOPPED {step + 1}", flush=True)
        break
    ckpt.close()
    print(f"FINAL {float(state['counter'])!r} {state['step']}", flush=True)
""")


def _run_toy(script, directory, total, sleep):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, str(script), str(directory), str(total), str(sleep)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_sigterm_saves_and_resumed_run_matches_uninterrupted(tmp_path):
  script = tmp_path / "toy_loop.py"
  script.write_text(_TOY_LOOP)
  total = 40

  reference = _run_toy(script, tmp_path / "reference", total, 0.0)
  out, err = reference.communicate(timeout=60)
  assert reference.returncode == 0, err
  final_reference = out.strip().splitlines()[-1]
  assert final_reference.startswith("FINAL") and final_reference.endswith(f" {total}")

  run = _run_toy(script, tmp_path / "preempted", total, 0.05)
  lines = []
  for line in run.stdout:  # Wait until the loop is past its first periodic save.
    lines.append(line.strip())
    if line.startswith("STEP 7"):
      break
  run.send_signal(signal.SIGTERM)
  out, err = run.communicate(timeout=60)
  lines += out.strip().splitlines()
  assert run.returncode == 0, err
  stopped = [int(l.split()[1]) for l in lines if l.startswith("STOPPED")]
  assert len(stopped) == 1 and 7 <= stopped[0] < total, lines
  # The newest checkpoint is the stop step (usually not a multiple of save_every: the SIGTERM save).
  with TrainCheckpointer(tmp_path / "preempted", save_every=5) as ckpt:
    assert ckpt.latest_step() == stopped[0]

  resumed = _run_toy(script, tmp_path / "preempted", total, 0.0)
  out, err = resumed.communicate(timeout=60)
  assert resumed.returncode == 0, err
  lines = out.strip().splitlines()
  assert lines[0] == f"START {stopped[0]}"
  assert lines[-1] == final_reference


_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from r1.checkpoints.manager import TrainCheckpointer

    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "fsdp"))
    w_sharding = NamedSharding(mesh, P("fsdp", None))
    state = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), w_sharding),
             "key": jax.device_put(jax.random.key(0), NamedSharding(mesh, P()))}
    with TrainCheckpointer(sys.argv[1], save_every=1) as ckpt:
      ckpt.save(1, state)
      ckpt.wait()
      # Restore into a different layout than saved: the target's sharding wins.
      target = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32,
                                          sharding=NamedSharding(mesh, P("data", "fsdp"))),
                "key": jax.eval_shape(lambda: jax.random.key(1))}
      restored = ckpt.restore(target_state=target)
    print(json.dumps({
        "equal": bool((np.asarray(restored["w"]) == np.arange(32.0).reshape(8, 4)).all()),
        "spec": list(restored["w"].sharding.spec),
        "shard_shape": list(restored["w"].addressable_shards[0].data.shape),
        "key_equal": bool((jax.random.key_data(restored["key"]) ==
                           jax.random.key_data(jax.random.key(0))).all()),
    }))
""")


def test_sharded_state_restores_with_target_sharding(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(_SHARDED)
  env = child_env(4)
  proc = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")], capture_output=True,
                        text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["equal"] and r["key_equal"], r
  assert r["spec"] == ["data", "fsdp"], r
  assert r["shard_shape"] == [4, 2], r

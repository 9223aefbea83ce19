"""One process of the multi-process GRPO test (test_multiprocess.py), or the single-process run it
is compared with.

  python multiprocess_grpo.py OUT_DIR                       # one process, 8 devices
  python multiprocess_grpo.py OUT_DIR PORT PROCESS_ID N     # process PROCESS_ID of N, joined on
                                                            # localhost:PORT, 8 devices in all

Both run 3 GRPO steps of tiny_v3 on the mesh (data=2, fsdp=2, expert=2) from the same seed: every
process builds the identical initial state and global batch, but places only its own rows of the
batch (sharding.place_host_batch, as a per-host data pipeline would). Then the state is saved with
the multi-host orbax checkpointer and restored. Process 0 writes the losses and the gathered
params to OUT_DIR, every process whether its restored shards equal its state's.
"""

import json
import os
import sys

import jax
import numpy as np

from r1 import grpo
from r1 import optim
from r1 import sharding
from r1 import train_state
from r1.checkpoints.manager import TrainCheckpointer
from r1.model import get_model_config, init_variables
from tests.multidevice.grpo_sharded import KW, make_batch


def global_array(x, target_sharding):
  """A host value every process holds identically, as a global array with `target_sharding`."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, target_sharding, lambda index: x[index])


def main(out_dir, port=None, process_id=0, num_processes=1):
  if port is not None:
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                               process_id=process_id)
  assert jax.device_count() == 8 and jax.process_count() == num_processes, (jax.devices(), jax.process_count())
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "expert": 2})
  config = get_model_config("tiny_v3", num_hidden_layers=2)
  opt, sched = optim.make_optimizer(1e-3, warmup_steps=1, decay_steps=10, eps=1e-3)
  state_sh = train_state.train_state_shardings(config, opt, mesh)

  # Identical on every process: the initial variables (on the host) and the global batch.
  variables = jax.device_get(init_variables(config, jax.random.key(0)))
  variables = {"params": jax.tree.map(global_array, variables["params"], state_sh.params),
               "moe_bias": jax.tree.map(global_array, variables["moe_bias"], state_sh.moe_bias)}
  state = jax.device_put(train_state.init_train_state(variables, opt), state_sh)
  batch = make_batch()
  # This process's rows: those its devices hold under the batch sharding (contiguous here).
  row_sharding = sharding.logical_to_sharding(jax.sharding.PartitionSpec("batch"), mesh)
  slices = [i[0] for i in row_sharding.addressable_devices_indices_map((len(batch["tokens"]),)).values()]
  lo, hi = min(s.start or 0 for s in slices), max(s.stop or len(batch["tokens"]) for s in slices)
  local = {k: v[lo:hi] for k, v in batch.items()}
  batch = sharding.place_host_batch(local, mesh)

  step = grpo.make_grpo_step(config, opt, sched, **KW, state_shardings=state_sh, mesh=mesh)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append({k: float(metrics[k]) for k in ("loss", "kl", "entropy", "grad_norm")})

  # Multi-host orbax: every process writes its shards, then reads them back into the sharded target.
  checkpointer = TrainCheckpointer(os.path.join(out_dir, "ckpt"), save_every=1, keep_best=False)
  checkpointer.save(3, state)
  checkpointer.wait()
  restored = checkpointer.restore(3, target_state=jax.eval_shape(lambda s: s, state))
  checkpointer.close()
  same = jax.tree.map(lambda a, b: all(np.array_equal(x.data, y.data) for x, y in zip(
      a.addressable_shards, b.addressable_shards)), restored, state)

  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  params = multihost_utils.process_allgather(state.params, tiled=True)
  with open(os.path.join(out_dir, f"process_{jax.process_index()}.json"), "w") as f:
    json.dump({"restored_equal": all(jax.tree.leaves(same)), "local_rows": [lo, hi],
               "local_devices": jax.local_device_count()}, f)
  if jax.process_index() == 0:
    np.savez(os.path.join(out_dir, "params.npz"),
             **{jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]})
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump({"losses": losses, "process_count": jax.process_count()}, f)


if __name__ == "__main__":
  main(sys.argv[1], *([sys.argv[2], int(sys.argv[3]), int(sys.argv[4])] if len(sys.argv) > 2 else []))

"""One process of the multi-process reward-model test (test_multiprocess_stages.py), or the
single-process run it is compared with.

  python multiprocess_reward_model.py RM_DIR OUT_DIR                      # one process, 8 devices
  python multiprocess_reward_model.py RM_DIR OUT_DIR PORT PROCESS_ID N    # process PROCESS_ID of N

The reward model in RM_DIR is loaded on a data=2 x fsdp=4 mesh and scores 16 sequences of mixed
lengths (right padding, segment 0). One process scores them all; several each score their own
rows of the batch (sharding.host_batch_rows), cut to their own longest sequence, in chunks of 4
rows, as the GRPO stage's processes score their completions. Each writes its scores to OUT_DIR.
"""

import json
import os
import sys

import jax
import numpy as np

from r1 import sharding
from r1 import reward_model as rm_lib

ROWS, WIDTH = 16, 12


def sequences():
  """tokens, positions, segment_ids int32[16, 12]: real lengths 3..12, the first 8 rows short."""
  rng = np.random.default_rng(0)
  lengths = np.concatenate([rng.integers(3, 7, ROWS // 2), rng.integers(7, WIDTH + 1, ROWS // 2)])
  segment_ids = (np.arange(WIDTH)[None] < lengths[:, None]).astype(np.int32)
  tokens = rng.integers(3, 400, (ROWS, WIDTH)).astype(np.int32) * segment_ids
  positions = np.broadcast_to(np.arange(WIDTH, dtype=np.int32), (ROWS, WIDTH))
  return tokens, positions, segment_ids


def main(rm_dir, out_dir, port=None, process_id=0, num_processes=1):
  if port is not None:
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                               process_id=process_id)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "expert": 1, "tensor": 1})
  rm = rm_lib.load_reward_model(rm_dir, mesh=mesh)
  start, stop = sharding.host_batch_rows(ROWS, mesh)
  tokens, positions, segment_ids = (a[start:stop] for a in sequences())
  width = int(segment_ids.sum(axis=1).max())  # Processes hold batches of different widths.
  batch = {"tokens": tokens[:, :width], "positions": positions[:, :width], "segment_ids": segment_ids[:, :width]}
  scores = rm.score_batch(batch, batch_size=4 if port else 8)  # Two chunks either way.
  with open(os.path.join(out_dir, f"process_{process_id}.json"), "w") as f:
    json.dump({"rows": [start, stop], "width": width, "scores": scores.tolist()}, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], *(sys.argv[3:4] + [int(a) for a in sys.argv[4:]]))

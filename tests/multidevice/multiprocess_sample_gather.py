"""One process of the multi-process rejection-sampling merge test (test_multiprocess_stages.py).

  python multiprocess_sample_gather.py OUT_DIR PORT PROCESS_ID N

Six scripted arithmetic prompts whose completions pass or fail the filter for known reasons
(tests/stages/test_sample_stage.py) are split over the processes as the sample stage's sampler
batches split them (each process a block of rows of every batch of 4, so its prompts interleave
with the others'); each process filters its own (r1.stages.sample.select_samples), then
sample.gather_selection merges them. Every process writes what it got to OUT_DIR.
"""

import json
import os
import sys

import jax
import numpy as np

from r1.stages import sample
from tests.stages.test_sample_stage import _example, arithmetic_script

EXAMPLES = [_example(12, "+", 30), _example(9, "-", 4), _example(40, "+", 2), _example(7, "+", 7),
            _example(15, "-", 8), _example(3, "+", 60)]
BATCH = 4


def scripted_selection(indices):
  """select_samples and sft_rows of the prompts `indices` of EXAMPLES, with fixed lengths."""
  examples = [EXAMPLES[i] for i in indices]
  completions = [arithmetic_script(ex.prompt) for ex in examples]
  stopped = np.ones((len(examples), 8), bool)
  stopped[:, 6] = False
  kept, stats = sample.select_samples(examples, completions, stopped, min_language=0.9, max_per_prompt=2)
  lengths = np.asarray([[10 * i + g for g in range(8)] for i in indices], np.int32).reshape(len(examples), 8)
  rows = sample.sft_rows(kept, examples, lengths, source_policy="scripted", seed=0)
  return rows, [indices[s.prompt_index] for s in kept], stats, lengths


def main(out_dir, port, process_id, num_processes):
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                             process_id=process_id)
  per_process = BATCH // num_processes
  indices = [start + p for start in range(0, len(EXAMPLES), BATCH)
             for p in range(process_id * per_process, (process_id + 1) * per_process) if start + p < len(EXAMPLES)]
  rows, row_prompts, stats, lengths = scripted_selection(indices)
  rows, stats, lengths = sample.gather_selection(rows, row_prompts, stats, lengths, indices)
  with open(os.path.join(out_dir, f"process_{process_id}.json"), "w") as f:
    json.dump({"indices": indices, "rows": rows, "stats": stats, "lengths": lengths.tolist()}, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

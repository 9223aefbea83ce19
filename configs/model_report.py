"""Parameter report and a timed forward pass of one model config (the README's first command).

Runs on any machine: counts come from `jax.eval_shape` (no allocation), so even `deepseek_v3`
reports its 671B / 37B in seconds; the forward pass runs only for models that fit in memory
(the tiny ones take ~10 s on a 2-core CPU, mostly compilation).

  python -m r1.main --config=configs/model_report.py --workdir=/tmp/r1_report
  python -m r1.main --config=configs/model_report.py:deepseek_v3 --workdir=/tmp/r1_report
  python -m r1.main --config=configs/model_report.py --config.init.hf_dir=/path/to/DeepSeek-V2-Lite
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  config = ml_collections.ConfigDict()
  config.stage = "model_report"
  config.seed = 0

  # Model: a name from r1/model/presets.py, plus ModelConfig field overrides. Command-line
  # overrides need the key to exist, so the usual ones are listed with their defaults.
  config.model = common.model(arg or "tiny_v3",
                              dtype="float32",    # activations / matmuls; "bfloat16" on TPU
                              moe_impl="einsum",  # "ragged" (grouped GEMM) on TPU/GPU
                              remat="none")

  # Where the weights come from: random init unless a local HF checkpoint directory is given.
  config.init = ml_collections.ConfigDict({"hf_dir": ""})

  # The forward pass: a random batch of this shape, skipped above max_forward_params.
  config.forward = ml_collections.ConfigDict()
  config.forward.batch_size = 2
  config.forward.seq_len = 64
  config.forward.max_forward_params = 2_000_000_000  # ~8 GB of float32 weights
  return config

"""The sampler on 8 fake CPU devices (data=2, fsdp=2, expert=2) gives the single-device tokens."""

import os

from tests.multidevice.test_sharded_model import FIXTURES, run_on_8_devices


def test_sharded_generate_equals_single_device():
  result = run_on_8_devices("sharded_generate.py", os.path.join(FIXTURES, "v3_qlora_yarn_groups"))
  assert result["tokens_equal"] and result["greedy_equal"], result
  assert result["max_logprob_diff"] <= 1e-4, result
  assert result["num_devices_holding_tokens"] == 8, result

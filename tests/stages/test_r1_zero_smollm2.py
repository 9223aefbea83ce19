"""configs/r1_zero_smollm2.py on the real SmolLM2-135M-Instruct (converted from its GGUF by the
session fixture). Its :quick run end to end is the SmolLM2 notebook's CI run (tests/test_notebooks.py)."""

import pytest

from configs import r1_zero_smollm2
from r1.stages import common


def test_stop_at_answer_needs_a_single_token(smollm2):
  # '</answer>' is 3 tokens in SmolLM2's vocabulary: stopping on it cannot work, so it is refused.
  _, tok = smollm2
  config = r1_zero_smollm2.get_config()
  assert common.stop_tokens(config, tok) == [tok.eos_id]
  config.rollout.stop_at_answer = True
  with pytest.raises(ValueError, match=r"'</answer>' is 3 tokens .*stop_at_answer=false"):
    common.stop_tokens(config, tok)

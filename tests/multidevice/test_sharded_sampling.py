"""The sampler on 8 fake CPU devices gives the single-device tokens on every mesh of
meshes.MESHES, in the training layout and in the decode layout (SAMPLE_RULES, no FSDP)."""

import os

import pytest

from tests.multidevice import meshes
from tests.multidevice.meshes import MESHES
from tests.multidevice.test_sharded_model import FIXTURES, run_on_8_devices


@pytest.mark.parametrize("names", [meshes.CI_MESHES, pytest.param(meshes.SLOW_MESHES, marks=pytest.mark.slow)],
                         ids=["+".join(meshes.CI_MESHES), "+".join(meshes.SLOW_MESHES)])
def test_sharded_generate_equals_single_device(names):
  results = run_on_8_devices("sharded_generate.py", os.path.join(FIXTURES, "v3_qlora_yarn_groups"), *names)
  assert sorted(results) == sorted(f"{m}/{r}" for m in names for r in ("train", "sample"))
  for key, r in results.items():
    assert r["tokens_equal"] and r["greedy_equal"], (key, r)
    assert r["logprob_rel"] <= 1e-5, (key, r)
    assert r["num_devices_holding_tokens"] == 8, (key, r)
    _, fsdp, expert, tensor = MESHES[key.split("/")[0]]
    # Train layout: experts [E, D, F] over (expert, fsdp, tensor); decode layout: D unsharded.
    e, d, f = r["expert_global_shape"]
    d_split = fsdp if key.endswith("/train") else 1
    assert r["expert_shard_shape"] == [e // expert, d // d_split, f // tensor], (key, r)

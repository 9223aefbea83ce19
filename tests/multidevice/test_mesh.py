"""Mesh shapes (one slice and multi-slice) and moving weights between the training and decode
layouts."""

import pytest

from r1 import sharding
from tests.multidevice.test_sharded_model import run_on_8_devices


def test_mesh_shape():
  assert sharding.mesh_shape(None, 8) == (8, 1, 1, 1)
  assert sharding.mesh_shape({"fsdp": -1, "expert": 2}, 8) == (1, 4, 2, 1)
  with pytest.raises(ValueError, match="needs 4 devices, have 8"):
    sharding.mesh_shape({"fsdp": 2, "expert": 2}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes"):
    sharding.mesh_shape({"model": 2}, 8)


def test_dcn_mesh_and_reshard():
  r = run_on_8_devices("mesh_layouts.py")
  assert r["shape"] == {"data": 2, "fsdp": 2, "expert": 2, "tensor": 1}, r
  # Slice-major: each data index is one slice's 4 devices, so only the data axis crosses slices.
  assert r["slice_devices"] == [[0, 1, 2, 3], [4, 5, 6, 7]], r
  # Training: q_b_proj [q_lora, H, d] splits q_lora over fsdp x expert; decoding: no FSDP.
  assert r["train_spec"] == [["fsdp", "expert"], "tensor", None], r
  assert r["sample_spec"] == [None, "tensor", None], r
  # Experts [E, D, F]: E over `expert`, F over `tensor`, D whole (it is `fsdp` in training).
  assert r["sample_expert_spec"] == ["expert", None, "tensor"], r
  assert r["round_trip_equal"] and r["round_trip_same_sharding"], r

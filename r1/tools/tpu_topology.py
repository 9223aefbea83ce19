"""TPU slices: chips, hosts and runtime version of an accelerator type ("v5p-1024" -> 512 chips, 128 hosts).

The number in an accelerator type counts TensorCores on v4 and v5p (two per chip) and chips on
v5e and v6e (cloud.google.com/tpu/docs/v4, /v5p, /v5e, /v6e). A v4/v5p host has 4 chips; v5e and
v6e slices of up to 8 chips are one host, larger ones have 4 chips per host. Runtime (software)
versions for JAX: cloud.google.com/tpu/docs/runtimes.

Used by the memory planner (r1.tools.plan) and by the experiment launcher (experiments/launcher.py).
"""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class _Generation:
  prefix: str               # as written in accelerator types: v4-8, v5p-1024, v5litepod-16, v6e-8
  cores_per_chip: int       # what the accelerator type's number counts per chip
  max_single_host_chips: int
  runtime_version: str


_GENERATIONS = {
    "v4": _Generation("v4", 2, 4, "tpu-ubuntu2204-base"),
    "v5p": _Generation("v5p", 2, 4, "v2-alpha-tpuv5"),
    "v5e": _Generation("v5litepod", 1, 8, "v2-alpha-tpuv5-lite"),
    "v6e": _Generation("v6e", 1, 8, "v2-alpha-tpuv6e"),
}
_CHIPS_PER_HOST = 4


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice: its accelerator type, generation, chips, hosts (VMs) and runtime version."""
  accelerator_type: str
  generation: str
  chips: int
  hosts: int
  runtime_version: str

  def __str__(self):
    hosts = f"{self.hosts} hosts" if self.hosts > 1 else "1 host"
    return f"{self.accelerator_type}: {self.chips} chips, {hosts}, runtime {self.runtime_version}"


def tpu_topology(accelerator_type: str) -> Topology:
  """Chips, hosts and runtime version of a TPU accelerator type, e.g. "v5p-1024" -> 512 chips, 128 hosts."""
  for generation, g in _GENERATIONS.items():
    match = re.fullmatch(rf"{g.prefix}-(\d+)", accelerator_type)
    if match:
      count = int(match[1])
      if count % g.cores_per_chip:
        break
      chips = count // g.cores_per_chip
      if chips > g.max_single_host_chips and chips % _CHIPS_PER_HOST:
        break
      hosts = 1 if chips <= g.max_single_host_chips else chips // _CHIPS_PER_HOST
      return Topology(accelerator_type, generation, chips, hosts, g.runtime_version)
  known = ", ".join(f"{g.prefix}-N" for g in _GENERATIONS.values())
  raise ValueError(f"accelerator type {accelerator_type!r}: expected one of {known} (e.g. v5p-8, v6e-8)")

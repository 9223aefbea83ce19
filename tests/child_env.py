"""The environment of a child JAX process a test starts: one place for the fake device count, the
repository on PYTHONPATH and the test session's compile settings (tests/conftest.py)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(devices: int | None = None, **extra: str) -> dict[str, str]:
  """os.environ for `python ...` run by a test: the CPU backend, the repository importable, the
  session's XLA flags and compilation cache kept, and `devices` fake CPU devices if given."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if devices is not None:
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={devices}", *flags])
  env.update(extra)
  return env

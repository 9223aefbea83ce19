"""Rule-based rewards (R1 §2.2.2): math accuracy, format, language consistency, code; no JAX.

Import the submodules directly (`from r1.rewards import math`); `registry` combines them by name.
"""

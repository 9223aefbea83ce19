"""The layering of ../shared/STYLE.md, kept true: dependency arrows point down only.

`model` knows nothing of GRPO, `grpo` nothing of rewards, `rewards` nothing of JAX, and the stages
are where they meet: only the entry points (r1.main, r1.tools) import them. Every import counts,
including those inside functions (a lazy import is still a dependency).
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_STACK = ("jax", "flax", "optax", "orbax", "grain")
STAGES = "r1.stages"

# module (or package) -> the packages and modules it may not import.
FORBIDDEN = {
    "r1.rewards": (*JAX_STACK, "r1.model", "r1.policy", "r1.sampling", "r1.grpo", "r1.sft", "r1.train_state",
                   "r1.logprobs", "r1.checkpoints", "r1.eval", "r1.reward_model", "r1.data.pipeline", STAGES),
    "r1.model": ("r1.grpo", "r1.sft", "r1.train_state", "r1.logprobs", "r1.sampling", "r1.policy", "r1.rewards",
                 "r1.reward_model", "r1.checkpoints", "r1.eval", "r1.data", "r1.tools", STAGES),
    "r1.grpo": ("r1.rewards", "r1.reward_model", "r1.data", "r1.eval", "r1.checkpoints", "r1.sampling", STAGES),
    "r1.sft": ("r1.rewards", "r1.reward_model", "r1.data", "r1.eval", "r1.checkpoints", "r1.sampling", STAGES),
    "r1.logprobs": ("r1.grpo", "r1.sft", "r1.rewards", "r1.data", "r1.eval", STAGES),
    "r1.train_state": ("r1.grpo", "r1.sft", "r1.rewards", "r1.data", "r1.eval", STAGES),
    "r1.sampling": ("r1.grpo", "r1.sft", "r1.train_state", "r1.rewards", "r1.data", "r1.eval", STAGES),
    "r1.checkpoints": ("r1.grpo", "r1.sft", "r1.rewards", "r1.eval", STAGES),
    "r1.eval": ("r1.grpo", "r1.sft", "r1.train_state", STAGES),
    "r1.data": ("r1.model", "r1.grpo", "r1.sft", "r1.eval", STAGES),
    "r1.sharding": ("r1.model", "r1.grpo", "r1.rewards", "r1.data", "r1.eval", STAGES),
    "r1.metrics": ("r1.grpo", "r1.rewards", "r1.eval", STAGES),
}
# What may import the stages: the entry points.
STAGE_IMPORTERS = ("r1.main", "r1.tools", STAGES)


def _module_name(path: str) -> str:
  name = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _imports(path: str) -> set[str]:
  """Absolute names of everything `path` imports (`from a import b` counts as a and a.b)."""
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def _library_imports() -> dict[str, set[str]]:
  out = {}
  for directory, _, files in os.walk(os.path.join(ROOT, "r1")):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(directory, f)
        out[_module_name(path)] = _imports(path)
  return out


def test_dependency_arrows_point_down():
  graph = _library_imports()
  assert "r1.grpo" in graph and "r1.rewards.math" in graph, sorted(graph)[:20]
  broken = []
  for module, imports in sorted(graph.items()):
    for layer, forbidden in FORBIDDEN.items():
      if _within(module, layer):
        broken += [f"{module} imports {name} (STYLE: {layer} may not import {bad})"
                   for name in sorted(imports) for bad in forbidden if _within(name, bad)]
    if not any(_within(module, p) for p in STAGE_IMPORTERS):
      broken += [f"{module} imports the stage module {name}: only {STAGE_IMPORTERS} may"
                 for name in sorted(imports) if _within(name, STAGES)]
  assert not broken, "\n".join(broken)


def test_the_check_sees_a_broken_arrow(tmp_path):
  """The AST walk finds imports inside functions too, so a lazy import cannot hide a dependency."""
  path = tmp_path / "m.py"
  path.write_text("def f():\n  from r1.stages import grpo\n  import jax.numpy as jnp\n")
  assert {"r1.stages", "r1.stages.grpo", "jax.numpy"} <= _imports(str(path))


REWARD_MODULES = ("r1.rewards.registry", "r1.rewards.math", "r1.rewards.code", "r1.rewards.accuracy",
                  "r1.rewards.format", "r1.rewards.language")


def test_rewards_import_without_jax():
  # One fresh process for all of them (each is checked on its own by the import table above).
  code = (f"import sys; import {', '.join(REWARD_MODULES)}; "
          f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({JAX_STACK!r})); "
          "print(loaded); sys.exit(1 if loaded else 0)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, f"the rewards load {proc.stdout.strip()} {proc.stderr[-2000:]}"

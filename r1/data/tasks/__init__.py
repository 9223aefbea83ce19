"""Synthetic verifiable tasks for CPU-scale repros, chosen by name (`config.data.task`).

Each task is a frozen dataclass of difficulty knobs with:
  example(seed, index) -> PromptExample     random access, deterministic in (seed, index)
  worked_solution(example) -> (str, str)    a worked chain of thought and the answer it reaches
  verify(answer, gold, meta) -> bool        is an extracted answer right

No JAX or grain here: reward workers import these verifiers.
"""

from collections.abc import Callable, Sequence

from r1.data.sources import PromptExample, SFTExample
from r1.data.tasks.arithmetic import ArithmeticTask, verify_integer
from r1.data.tasks.countdown import CountdownTask, verify_countdown
from r1.data.templates import Template

TASKS = {"arithmetic": ArithmeticTask, "countdown": CountdownTask}

Verifier = Callable[[str, str, dict], bool]


def make_task(name: str, **knobs):
  """The task called `name` with difficulty `knobs` (its dataclass fields)."""
  if name not in TASKS:
    raise ValueError(f"unknown synthetic task {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name](**knobs)


def get_verifier(name: str) -> Verifier:
  """verify(answer, gold, meta) for a synthetic task's `PromptExample.verifier` name."""
  if name not in TASKS:
    raise ValueError(f"no synthetic verifier {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name].verify


class SyntheticSource(Sequence):
  """`size` examples of `task`, generated on access (a grain random-access source)."""

  def __init__(self, task, size: int, seed: int = 0):
    if size < 1:
      raise ValueError(f"SyntheticSource size must be >= 1, got {size}")
    self.task, self.size, self.seed = task, size, seed
    self.num_skipped = 0

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> PromptExample:
    if not -self.size <= index < self.size:
      raise IndexError(f"SyntheticSource index {index} out of range [0, {self.size})")
    return self.task.example(self.seed, index % self.size)


def sft_example(task, example: PromptExample, template: Template) -> SFTExample:
  """The task's worked solution to `example` as an SFT pair in `template`'s response format."""
  response = template.render_response(*task.worked_solution(example))
  return SFTExample(example.id, example.prompt, response)


class SyntheticSFTSource(SyntheticSource):
  """`size` worked-solution SFT pairs of `task` (cold-start data), generated on access."""

  def __init__(self, task, size: int, template: Template, seed: int = 0):
    super().__init__(task, size, seed)
    self.template = template

  def __getitem__(self, index: int) -> SFTExample:
    return sft_example(self.task, super().__getitem__(index), self.template)


__all__ = ["ArithmeticTask", "CountdownTask", "SyntheticSFTSource", "SyntheticSource", "TASKS",
           "get_verifier", "make_task", "sft_example", "verify_countdown", "verify_integer",
           "PromptExample"]

"""The update steps under their first module's name: `r1.train_step.make_grpo_step` is
`r1.grpo.make_grpo_step` (the GRPO update lives with the GRPO loss), and the SFT and distillation
steps are r1.sft's. Import from r1.grpo / r1.sft in new code."""

from r1.grpo import make_grpo_step
from r1.sft import make_sft_step

__all__ = ["make_grpo_step", "make_sft_step"]

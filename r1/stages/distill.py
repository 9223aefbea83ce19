"""Logit distillation for the SFT stage: a teacher beside the student (config.sft.distill).

R1 distils by SFT on the teacher's samples only (R1 section 2.4: sequence-level). When the teacher
fits beside the student and shares its vocabulary, the student can also match the teacher's
whole next-token distribution on those samples (Hinton et al. arXiv:1503.02531; the supervised
forward-KL baseline of GKD, arXiv:2306.13649): loss = nll + weight * tau^2 * KL(p_T || p_S), the KL a
token mean over the response tokens (r1.sft.make_sft_step).

  config.sft.distill = {"teacher_dir": "/ckpt/teacher/policy", "weight": 1.0, "temperature": 1.0}

teacher_dir is a Hugging Face policy directory (a stage's <workdir>/policy, or a downloaded
checkpoint); "" or weight 0 turns distillation off (the plain SFT step, bit for bit). Optional
"dtype" (default: the student's compute dtype) is the teacher's parameter and compute dtype.
"""

import json
import os

from absl import logging

import r1
from r1.model import ModelConfig
from r1.tokenizer import Tokenizer, load_tokenizer

# Text whose token ids must agree between the student's and the teacher's tokenizers: same
# vocabulary size is not the same vocabulary.
_PROBE_TEXT = "<think> 12 + 34 = 46 </think> <answer>46</answer> Über naïve café, 数学."


def enabled(config) -> bool:
  """Whether config.sft.distill asks for a teacher: a teacher_dir and a non-zero weight."""
  d = config.sft.distill
  return bool(d.teacher_dir) and float(d.weight) != 0.0


def _check_tokenizers(teacher_dir: str, tokenizer: Tokenizer | None):
  """Raises if the teacher's tokenizer (if found) encodes differently from the student's."""
  if tokenizer is None:
    return
  # A downloaded checkpoint holds its tokenizer; a stage's exported <workdir>/policy has it beside,
  # in <workdir>/tokenizer (r1.stages.common.export_policy).
  teacher_tokenizer = None
  for path in (teacher_dir, os.path.join(os.path.dirname(os.path.normpath(teacher_dir)), "tokenizer")):
    try:
      teacher_tokenizer = load_tokenizer(path)
      break
    except (FileNotFoundError, ImportError):
      continue
  if teacher_tokenizer is None:
    logging.warning("distillation teacher %s has no tokenizer to compare with the student's", teacher_dir)
    return
  student_ids, teacher_ids = tokenizer.encode(_PROBE_TEXT), teacher_tokenizer.encode(_PROBE_TEXT)
  if student_ids != teacher_ids or tokenizer.vocab_size != teacher_tokenizer.vocab_size:
    raise ValueError(f"distillation teacher {teacher_dir}: its tokenizer differs from the student's "
                     f"(vocab {teacher_tokenizer.vocab_size} vs {tokenizer.vocab_size}; {_PROBE_TEXT!r} -> "
                     f"{teacher_ids[:12]}... vs {student_ids[:12]}...): logit distillation needs one vocabulary")


def load_teacher(config, student_config: ModelConfig, tokenizer: Tokenizer | None = None,
                 mesh=None) -> r1.Policy | None:
  """The teacher of config.sft.distill, or None when distillation is off.

  Checks, before reading any weights, that the teacher's config.json has the student's vocab_size
  and that its tokenizer (if it ships one) encodes like `tokenizer`. With a mesh the variables are
  loaded straight into a policy's sharding (r1.sft.teacher_shardings).
  """
  if not enabled(config):
    return None
  d = config.sft.distill
  teacher_dir = d.teacher_dir
  config_path = os.path.join(teacher_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"sft.distill.teacher_dir={teacher_dir!r}: no config.json (expected an exported "
                            "Hugging Face policy directory)")
  with open(config_path) as f:
    teacher_vocab = json.load(f).get("vocab_size")
  if teacher_vocab != student_config.vocab_size:
    raise ValueError(f"sft.distill.teacher_dir={teacher_dir!r}: teacher vocab_size {teacher_vocab} != student "
                     f"vocab_size {student_config.vocab_size}; logit distillation needs one vocabulary")
  _check_tokenizers(teacher_dir, tokenizer)
  # The teacher's MTP modules are never run: it only scores the next token. With a mesh the loader
  # places each tensor with a policy's sharding (r1.sft.teacher_shardings: the same rules).
  teacher = r1.load_hf_checkpoint(teacher_dir, d.dtype or student_config.dtype, mesh=mesh,
                                  load_mtp=False)
  logging.info("distillation teacher %s: %s, weight %s, temperature %s", teacher_dir,
               teacher.config.architecture, d.weight, d.temperature)
  return teacher


def sft_step_kwargs(config, teacher: r1.Policy | None) -> dict:
  """make_sft_step's distillation arguments: {} without a teacher."""
  if teacher is None:
    return {}
  d = config.sft.distill
  return {"teacher_config": teacher.config, "distill_weight": float(d.weight),
          "distill_temperature": float(d.temperature)}


def with_teacher(update, teacher: r1.Policy | None):
  """update(state, batch) for the training loop: a distilling step gets the teacher's variables as
  its third argument (the jitted step's input, not a constant); without a teacher, `update`."""
  if teacher is None:
    return update
  return lambda state, batch: update(state, batch, teacher.variables)

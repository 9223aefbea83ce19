"""TRL's GRPOTrainer on an r1-written Hugging Face checkpoint, timed per training step.

Only bench_grpo_iteration.py imports this (torch, transformers and trl are the `fixtures` extra).
"""

import os
import time


def word_level_tokenizer(vocab_size: int):
  """A transformers tokenizer whose token i is the word "t{i}": ids map 1:1 and text is trivial.

  t0 is padding and t1 end-of-sequence; the benchmark's prompts never contain either.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  vocab = {f"t{i}": i for i in range(vocab_size)}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1")


def seconds_per_step(checkpoint_dir: str, prompts: list[list[int]], reward_fn, *, num_generations: int,
                     max_new_tokens: int, beta: float, steps: int = 2, output_dir: str) -> dict:
  """Runs `steps` GRPOTrainer steps of len(prompts) // steps prompts each; times the last one.

  Args:
    checkpoint_dir: an HF checkpoint (config.json + safetensors: DeepseekV3, Llama), loaded as policy and reference.
    prompts: token-id lists, `steps` batches' worth (each batch is one generation + one update).
    reward_fn: list of completion token ids -> float, the same rule the r1 side scores with.
    output_dir: scratch space for the trainer (nothing is saved there).
  Returns:
    {"version", "seconds_per_step", "first_step_seconds", "generate_seconds", "reward_seconds",
     "update_seconds"} for the last step; "update" is everything else in the step (reference and
    policy forwards, backward, optimizer).
  """
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  config = transformers.AutoConfig.from_pretrained(checkpoint_dir)
  tokenizer = word_level_tokenizer(config.vocab_size)
  dataset = datasets.Dataset.from_dict({"prompt": [" ".join(f"t{i}" for i in p) for p in prompts]})
  per_step = len(prompts) // steps

  def distinct_tokens(completion_ids, **unused_kwargs):
    return [reward_fn(ids) for ids in completion_ids]

  args = trl.GRPOConfig(
      output_dir=output_dir,
      use_cpu=True, bf16=False, fp16=False,
      # Off for TRL's fastest step: recomputing activations only saves memory, which is plentiful here.
      gradient_checkpointing=False,
      per_device_train_batch_size=per_step * num_generations, gradient_accumulation_steps=1,
      num_generations=num_generations, max_completion_length=max_new_tokens,
      # No early stop, as on the r1 side: the end-of-sequence ids are masked for all N tokens.
      generation_kwargs={"min_new_tokens": max_new_tokens},
      temperature=1.0, top_p=1.0, top_k=0,
      beta=beta, num_iterations=1, loss_type="grpo", scale_rewards="group",
      learning_rate=1e-6, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
      shuffle_dataset=False, seed=0, dataloader_num_workers=0, disable_tqdm=True)

  times = {"generate": [], "reward": []}

  class Timed(trl.GRPOTrainer):
    """Records the wall time of generation and of reward scoring inside each step."""

    def _generate_single_turn(self, *a, **kw):
      t0 = time.perf_counter()
      out = super()._generate_single_turn(*a, **kw)
      times["generate"].append(time.perf_counter() - t0)
      return out

    def _calculate_rewards(self, *a, **kw):
      t0 = time.perf_counter()
      out = super()._calculate_rewards(*a, **kw)
      times["reward"].append(time.perf_counter() - t0)
      return out

  step_times = []

  class StepTimer(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
      self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      step_times.append(time.perf_counter() - self.start)

  trainer = Timed(model=checkpoint_dir, reward_funcs=distinct_tokens, args=args, train_dataset=dataset,
                  processing_class=tokenizer, callbacks=[StepTimer()])
  trainer.train()
  if len(step_times) != steps or len(times["generate"]) != steps:
    raise RuntimeError(f"expected {steps} steps with one generation each, timed {len(step_times)} steps and "
                       f"{len(times['generate'])} generations")
  last = step_times[-1]
  return {"version": trl.__version__, "seconds_per_step": last, "first_step_seconds": step_times[0],
          "generate_seconds": times["generate"][-1], "reward_seconds": times["reward"][-1],
          "update_seconds": last - times["generate"][-1] - times["reward"][-1]}

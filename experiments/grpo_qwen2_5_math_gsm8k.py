"""RL on a small dense model, R1's Table 6 comparison on one TPU v5p-8 host: GRPO on GSM8K from
Qwen2.5-Math-1.5B (configs/grpo_qwen2_5_math_gsm8k.py: G=16, KL 0.001, bf16, FSDP over 4 chips),
sweeping the learning rate. Compare with the distilled model (configs/distill_qwen2_5_math_1_5b.py
or DeepSeek-R1-Distill-Qwen-1.5B itself, evaluated with --config.stage=eval).

  python experiments/launch.py experiments/grpo_qwen2_5_math_gsm8k.py --tpu=qwen-rl --zone=us-east5-a \\
    --workdir_root=gs://YOUR_BUCKET/r1

prints the gcloud lines: create the v5p-8 VM, copy and install r1, one run per learning rate, delete.
The checkpoint must be on the VM's disk (r1 reads no model hub).
"""

from experiments import launcher


def get_experiment(arg=None):
  """arg: the Qwen2.5-Math-1.5B checkpoint directory on the TPU VM (default /mnt/ckpt/Qwen2.5-Math-1.5B)."""
  return launcher.Experiment(
      name="grpo_qwen2_5_math_gsm8k_lr",
      config="configs/grpo_qwen2_5_math_gsm8k.py",
      overrides={"init.hf_dir": arg or "/mnt/ckpt/Qwen2.5-Math-1.5B"},
      sweep=launcher.sweep("optimizer.learning_rate", [1e-6, 3e-6]),
      topology="v5p-8",
      workdir_root="gs://YOUR_BUCKET/r1",
  )

"""GRPO on GSM8K from DeepSeek-V2-Lite on one TPU v5p-8 host: a sweep over the KL coefficient.

configs/grpo_deepseek_v2_lite_gsm8k.py (500 steps, G=8, bf16, FSDP over the host's 4 chips) with
kl_coef in {0, 0.001 (R1), 0.04 (TRL's default)}: does the KL term matter at this size? The three
work units run one after another on the same host. The checkpoint must be on the VM's disk.

  python experiments/launch.py experiments/grpo_v2_lite_gsm8k.py --tpu=v2lite --zone=us-east5-a \\
    --workdir_root=gs://YOUR_BUCKET/r1

prints the gcloud lines: create the v5p-8 VM, copy and install r1, one run per kl_coef, delete.
"""

from experiments import launcher


def get_experiment(arg=None):
  """arg: the DeepSeek-V2-Lite checkpoint directory on the TPU VM (default /mnt/ckpt/DeepSeek-V2-Lite)."""
  return launcher.Experiment(
      name="grpo_v2_lite_gsm8k_kl",
      config="configs/grpo_deepseek_v2_lite_gsm8k.py",
      overrides={"init.hf_dir": arg or "/mnt/ckpt/DeepSeek-V2-Lite"},
      sweep=launcher.sweep("grpo.kl_coef", [0.0, 0.001, 0.04]),
      topology="v5p-8",
      workdir_root="gs://YOUR_BUCKET/r1",
  )

"""DeepSeek-R1-Zero from DeepSeek-V3-Base on a TPU v5p-1024 slice (512 chips, 128 hosts).

configs/r1_zero_deepseek_v3.py as one work unit: the paper's recipe (G=16, lr 3e-6, KL 0.001,
clip 10, 32k new tokens, 10,400 steps) on the config's mesh (fsdp 32 x expert 8 x data 2). The
checkpoint and the prompts must be on every host's disk (or a GCS-fuse mount) at the paths below.

  python experiments/launch.py experiments/r1_zero_v3.py --tpu=r1-zero --zone=us-east5-a \\
    --workdir_root=gs://YOUR_BUCKET/r1

prints the gcloud lines; every line after `create` runs on all 128 workers (`--worker=all`), the
same command on each host, which r1.main joins into one JAX job.
"""

from experiments import launcher


def get_experiment(arg=None):
  """One work unit; arg is unused."""
  del arg
  return launcher.Experiment(
      name="r1_zero_deepseek_v3",
      config="configs/r1_zero_deepseek_v3.py",
      overrides={"init.hf_dir": "/mnt/ckpt/DeepSeek-V3-Base", "data.path": "/mnt/data/math_prompts.jsonl"},
      topology="v5p-1024",
      workdir_root="gs://YOUR_BUCKET/r1",
  )

"""How faithful is a policy's arithmetic working? Held-out completions checked line by line.

The outcome reward grades the answer only. This samples each policy on the held-out problems of
configs/tiny_r1_zero.py (R1's protocol: k=4 at T=0.6 / top-p 0.95, the GRPO stage's eval seed)
and counts, with r1.data.tasks.arithmetic.addition_working_errors, the correct completions whose
working has a false column (`2 + 5 + 0 = 8`) or a carry not carried: the README's last column.

  python -m r1.tools.arithmetic_working /tmp/distill_tiny/1_grpo /tmp/distill_tiny/5_grpo ...

Each argument is a stage workdir holding policy/ and tokenizer/.
"""

import argparse
import os

import r1
from r1.data import splits
from r1.data.tasks import arithmetic
from r1.eval import protocol
from r1.tokenizer import load_tokenizer
from r1.stages import common
from configs import tiny_r1_zero  # run from the repository root, as the command above is


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("stage_dirs", nargs="+")
  parser.add_argument("--num_examples", type=int, default=256)
  parser.add_argument("--k", type=int, default=4)
  args = parser.parse_args()
  config = tiny_r1_zero.get_config()
  examples = list(splits.prompt_source(config.data, "eval"))[:args.num_examples]
  print(f"{'stage':40s} {'pass@1':>7s} {'correct':>8s} {'false column':>13s} {'carry dropped':>14s}")
  for stage_dir in args.stage_dirs:
    policy = r1.load_hf_checkpoint(os.path.join(stage_dir, "policy"))
    tokenizer = load_tokenizer(os.path.join(stage_dir, "tokenizer"))
    report = protocol.evaluate(policy, tokenizer, config.data.template, examples, k=args.k,
                                temperature=config.eval.temperature, top_p=config.eval.top_p,
                                max_new_tokens=config.rollout.max_new_tokens, seed=config.eval.seed,
                                stop_tokens=common.stop_tokens(config, tokenizer), num_report_samples=len(examples))
    metrics = next(iter(report["datasets"].values()))
    correct = false_column = dropped = 0
    for sample in metrics["samples"]:
      for completion, ok in zip(sample["completions"], sample["correct"]):
        errors = arithmetic.addition_working_errors(completion)
        correct += ok
        false_column += ok and errors["false_columns"] > 0
        dropped += ok and errors["dropped_carries"] > 0
    print(f"{stage_dir:40s} {metrics['pass@1']:7.3f} {correct:8d} {false_column:13d} {dropped:14d}")


if __name__ == "__main__":
  main()

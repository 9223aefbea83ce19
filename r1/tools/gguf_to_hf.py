"""Converts a GGUF file (llama.cpp) into a Hugging Face checkpoint directory r1 loads.

  python -m r1.tools.gguf_to_hf SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2
  python -c "import r1; print(r1.load_hf_checkpoint('/tmp/smollm2').config)"

Writes config.json, model.safetensors (float32, dequantised), tokenizer.json and
tokenizer_config.json (with the file's chat template). Needs the `gguf` extra; no torch.
"""

import argparse
import sys
import time

from r1.checkpoints import gguf


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("gguf_file")
  parser.add_argument("out_dir")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    gguf.convert(args.gguf_file, args.out_dir)
  except gguf.GGUFError as e:
    print(f"gguf_to_hf: {args.gguf_file}: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out_dir} ({time.perf_counter() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""r1: DeepSeek-R1 / R1-Zero reasoning RL in JAX."""

import setuptools

setuptools.setup(
    name="r1",
    version="0.1.0",
    description="Reproduce DeepSeek-R1 and R1-Zero (GRPO with verifiable rewards) in JAX/Flax on TPU.",
    packages=setuptools.find_packages(include=["r1", "r1.*"]),
    package_data={"r1": ["data/datasets/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6.0",
        "flax>=0.10.4",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.12.0",
        "grain>=0.2.10",
        "sentencepiece>=0.2.0",
        # sympy's LaTeX parser is the antlr4 one; its generated parser needs exactly the 4.11 runtime.
        "sympy>=1.13",
        "antlr4-python3-runtime==4.11.*",
        # The field's answer grader (TRL, open-r1), run beside r1's own in the sympy workers. Pinned:
        # its verdicts are the reward. Its latex2sympy2_extended ships parsers for antlr 4.9.3, 4.11
        # and 4.13.2 and loads the one installed, so the 4.11 runtime above serves both parsers.
        "math-verify==0.9.0",
        "absl-py>=2.1.0",
        "ml-collections>=1.0.0",
        "tensorboardX>=2.6.2",
        "numpy>=1.26",
        # bfloat16 / float8 numpy dtypes for reading and writing safetensors checkpoints.
        "ml_dtypes>=0.5.0",
        # The training curves PNG every run writes (imported lazily by r1.metrics.plot_curves).
        "matplotlib>=3.7",
    ],
    extras_require={
        # Hugging Face tokenizer.json (DeepSeek-V3, Qwen) and Parquet prompt sources; jinja2 renders a
        # tokenizer's chat_template (the `hf_chat` prompt template of distillation students).
        "hf": ["tokenizers>=0.20", "pyarrow>=15", "jinja2>=3.1"],
        # GGUF files (llama.cpp) -> HF checkpoints: python -m r1.tools.gguf_to_hf (numpy only, no torch).
        "gguf": ["gguf>=0.17", "tokenizers>=0.20"],
        # nbclient + ipykernel: CI executes the notebooks in a real kernel, as Colab would; jinja2 for
        # the hf_chat template tests.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "tokenizers>=0.20", "pyarrow>=15", "jinja2>=3.1",
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "gguf>=0.17"],
        # Only to regenerate tests/fixtures and for side-by-side benchmarks; never imported by r1.
        "fixtures": ["torch>=2.5", "transformers>=4.57", "accelerate>=1.10.1", "trl>=1.16"],
    },
)

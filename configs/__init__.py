"""Experiment configs: `get_config(arg)` files for `--config=configs/<name>.py[:arg]`, their shared
sections built by configs/common.py."""

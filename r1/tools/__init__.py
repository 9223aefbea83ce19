"""Command-line tools that read an experiment config without running it (`python -m r1.tools.plan`)."""

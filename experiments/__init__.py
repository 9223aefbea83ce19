"""Experiment files (launch descriptions and sweeps) and the launcher that runs them."""

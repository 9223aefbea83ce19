"""r1.eval: R1's evaluation protocol, in one place.

  metrics.py     pass@k, pass@1 over k samples, cons@k's vote, confidence intervals (pure numpy)
  grading.py     correctness of each sample and the answer equivalence behind the vote
  protocol.py    sample k completions per problem, grade, measure; `evaluate_config`: what every
                 stage calls with config.eval
  report.py      the report file (REPORT_FILE), its writer, the terminal table, scalars for metrics
  run_report.py  a pipeline's before/after summary (report.json, results.md) and stage comparisons

Submodules are imported by name (`from r1.eval import protocol`): nothing here shadows the builtin.
"""

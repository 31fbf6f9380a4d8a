"""Hyper-parameter search over params keys: a grid or Optuna's TPE, each trial a run folder."""

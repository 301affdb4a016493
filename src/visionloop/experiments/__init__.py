"""Experiments and lineage: `visionloop tune` (an Optuna study whose trials are training runs)
and `visionloop reproduce` (a registered version retrained from its lineage, then compared)."""

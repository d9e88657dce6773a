"""Sweep files (``*.yaml``) for ``python -m experiments sweep --sweep <name>``: the search space, budget and
pruner of a lesson's hyperparameter search."""

"""Budgeted search for the multi-task set-up that wins (``taskloom auto``; needs ``pip install taskloom[auto]``)."""
from taskloom.auto.final import recommend
from taskloom.auto.run import parse_budget, run_auto
from taskloom.auto.space import SearchSpace

__all__ = ["SearchSpace", "parse_budget", "recommend", "run_auto"]

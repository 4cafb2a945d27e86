"""The model lifecycle's entry points: the nightly wafer-yield chain's lifecycle stages, to run
on their own, e.g. a version registered from a notebook:

    luigi --module jobs.model_lifecycle ValidateCandidate --version 7 --local-scheduler

ValidateCandidate, Approval and Lifecycle live in jobs/wafer_yield.py (they read its features,
labels and scores); people act on the registry with scripts/models (jobs/ops/models.py).
"""

from jobs.wafer_yield import Approval, Lifecycle, ValidateCandidate

__all__ = ["Approval", "Lifecycle", "ValidateCandidate"]

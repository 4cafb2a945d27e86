"""STDF job suite: Luigi workflows for semiconductor test data."""

__version__ = "0.1.0"

from . import ranges  # noqa: F401 - Range tools that say when a range is outside their look-back

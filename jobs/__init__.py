"""STDF job suite: Luigi workflows for semiconductor test data."""

__version__ = "0.1.0"

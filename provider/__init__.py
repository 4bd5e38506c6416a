"""provider: the compute-to-data backend for data spaces."""

__version__ = "0.1.0"

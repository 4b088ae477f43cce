"""PPS: the data safe-room core."""

__version__ = "0.1.0"

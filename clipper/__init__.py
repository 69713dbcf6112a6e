"""Clipper-compatible low-latency prediction serving."""

__version__ = "0.1.0"

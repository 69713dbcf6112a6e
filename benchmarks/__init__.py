"""Benchmark harness for the Clipper reimplementation (see README.md)."""

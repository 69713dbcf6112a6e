"""Peers benchmark: our pipeline and the floor vs. Triton, Ray Serve and BentoML (``python -m benchmarks.peers``)."""

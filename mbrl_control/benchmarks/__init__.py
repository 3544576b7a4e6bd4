"""Benchmark problems shared with peer libraries; above the library layers, used by ``mbrl-control bench``."""

"""Fused Numba CPU / CUDA kernels mirroring models/ and the costs, for speed (tested equal to them)."""

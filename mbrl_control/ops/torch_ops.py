"""Torch backend of the definition vocabulary (see :mod:`mbrl_control.ops`): batched, differentiable."""

from __future__ import annotations

import builtins

import torch

sin = torch.sin
cos = torch.cos
sqrt = torch.sqrt
tan = torch.tan
atan = torch.atan
tanh = torch.tanh
exp = torch.exp
floor = torch.floor


def _tensors(a, b):
    """Both operands as tensors of the dtype/device of whichever one is a tensor."""
    like = a if isinstance(a, torch.Tensor) else b
    if not isinstance(like, torch.Tensor):
        return None
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    return a, b


def sin_cos(x):
    """(sin x, cos x)."""
    return torch.sin(x), torch.cos(x)


def abs(x):  # noqa: A001 - the vocabulary's name
    return torch.abs(x) if isinstance(x, torch.Tensor) else builtins.abs(x)


def min(a, b):  # noqa: A001
    pair = _tensors(a, b)
    return builtins.min(a, b) if pair is None else torch.minimum(*pair)


def max(a, b):  # noqa: A001
    pair = _tensors(a, b)
    return builtins.max(a, b) if pair is None else torch.maximum(*pair)


def clip(x, lo, hi):
    return min(max(x, lo), hi)


def select(cond, a, b):
    """``a`` where ``cond`` else ``b`` (elementwise)."""
    pair = _tensors(a, b)
    if pair is None:
        return torch.where(cond, torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
    return torch.where(cond, *pair)


def logical_and(a, b):
    return a & b


def logical_or(a, b):
    return a | b


# ------------------------------------------------------------------ network vocabulary (see NETWORK_VOCABULARY)
softplus = torch.nn.functional.softplus


def affine(w, b, x):
    """``w x + b`` for a batch of row vectors: ``x`` (..., B, in), ``w`` (..., out, in), ``b`` (..., out);
    the leading (member) axes of ``w`` / ``b`` broadcast against those of ``x``; returns (..., B, out)."""
    return torch.matmul(x, w.transpose(-1, -2)) + b.unsqueeze(-2)


def part(x, start, stop):
    """Components ``start:stop`` of vectors (the last axis)."""
    return x[..., start:stop]


def member_average(x):
    """Average over the members (the first axis)."""
    return x.mean(dim=0)

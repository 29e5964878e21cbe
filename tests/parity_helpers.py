"""Sizes, tolerances and the parameter and gradient comparisons shared by ``test_parity*``."""

from __future__ import annotations

import torch
from torch import nn
from torch.testing import assert_close

I, H, P, T, B = 3, 4, 2, 5, 3
TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}
# Lengths for the padded and unsorted-packed cases: unsorted, a length of 1, max(lengths) < T.
LENGTHS = [4, 1, 3]
SORTED_LENGTHS = [5, 3, 1]
VARIANTS = ("full", "lengths", "packed_sorted", "packed_unsorted")
BACKENDS = ("reference", "auto", "torch")


def assert_same_parameters(ref: nn.Module, ours: nn.Module) -> None:
    ref_params, our_params = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert list(ref_params) == list(our_params)
    for name, p in ref_params.items():
        assert torch.equal(p, our_params[name]), name


def assert_same_grads(ref: nn.Module, ours: nn.Module, tol: dict) -> None:
    our_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert p.grad is not None, name
        assert_close(our_params[name].grad, p.grad, **tol, msg=f"gradient of {name}")


def leaf_pair(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t.clone().requires_grad_(), t.clone().requires_grad_()


def weighted_loss(weights: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    return sum((w * v).sum() for w, v in zip(weights, values, strict=True))

"""Helpers for the SD UNet / VAE parity tests: re-randomised diffusers references and layout conversion."""

from __future__ import annotations

import math

import numpy as np
import torch


def rerandomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Norm weights 1 + 0.1 N, biases 0.1 N; any all-zero tensor redrawn from U(+-1/sqrt(fan_in)).

    So every branch (affine norms, zero-initialised layers) shows in the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm) and module.weight is not None:
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        for _, p in model.named_parameters():
            if torch.count_nonzero(p) == 0:
                fan_in = p.shape[1] * math.prod(p.shape[2:]) if p.ndim > 1 else p.shape[0]
                bound = 1 / math.sqrt(fan_in)
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model.eval()


def state_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)

"""Independent PyTorch reference for upfirdn2d and the StyleGAN2 modulated convolution (NCHW).

Written from the definitions, deliberately in a different form from jaxtalk's (and from the original port's):
  * upfirdn2d: explicit zero insertion by strided assignment, padding/cropping by index arithmetic, the FIR
    filter as a sum of shifted copies (y[n] = sum_a x[n + a] * h[K - 1 - a], a true convolution), then
    decimation by slicing;
  * modulated conv: a Python loop over samples building each sample's modulated / demodulated weight
    (StyleGAN2 paper eqs. 1-3) and running an ordinary conv (or conv_transpose2d) with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fir_kernel(taps, factor: int = 1) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, sum normalised to 1, times factor^2."""
    t = torch.as_tensor(taps, dtype=torch.float64)
    k = t[:, None] * t[None, :]
    return (k / k.sum() * factor**2).float()


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """x (B, C, H, W); kernel (kh, kw); pad (p0, p1) on both axes (negative = crop)."""
    b, c, h, w = x.shape
    p0, p1 = pad
    kh, kw = kernel.shape
    # 1. zero insertion: sample i lands at i * up, length n * up.
    z = x.new_zeros(b, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    # 2. pad / crop: padded index j holds z[j - p0] when that index exists.
    hp, wp = h * up + p0 + p1, w * up + p0 + p1
    zp = x.new_zeros(b, c, hp, wp)
    src_y = torch.arange(hp) - p0
    src_x = torch.arange(wp) - p0
    vy = (src_y >= 0) & (src_y < h * up)
    vx = (src_x >= 0) & (src_x < w * up)
    zp[:, :, vy.nonzero()[:, 0][:, None], vx.nonzero()[:, 0][None, :]] = \
        z[:, :, src_y[vy][:, None], src_x[vx][None, :]]
    # 3. true convolution, VALID: y[n, m] = sum_{a, b} zp[n + a, m + b] * kernel[kh - 1 - a, kw - 1 - b].
    oh, ow = hp - kh + 1, wp - kw + 1
    y = x.new_zeros(b, c, oh, ow)
    for a in range(kh):
        for bb in range(kw):
            y = y + zp[:, :, a:a + oh, bb:bb + ow] * kernel[kh - 1 - a, kw - 1 - bb]
    # 4. decimation.
    return y[:, :, ::down, ::down]


def equal_linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lr_mul: float = 1.0,
                     activation: bool = False) -> torch.Tensor:
    """Equalized linear: x @ (W * lr_mul / sqrt(in))^T + b * lr_mul, optional leaky_relu(0.2) * sqrt(2)."""
    y = x @ (weight * (lr_mul / math.sqrt(weight.shape[1]))).t()
    if bias is not None:
        y = y + bias * lr_mul
    if activation:
        y = F.leaky_relu(y, 0.2) * math.sqrt(2.0)
    return y


def modulated_conv_ref(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, mod_weight: torch.Tensor,
                       mod_bias: torch.Tensor, *, demodulate: bool = True, upsample: bool = False,
                       downsample: bool = False, taps=(1, 3, 3, 1)) -> torch.Tensor:
    """x (B, in, H, W); weight (out, in, k, k) un-scaled; style (B, D); modulation EqualLinear(D -> in)."""
    out_ch, in_ch, k, _ = weight.shape
    s = equal_linear_ref(style, mod_weight, mod_bias)  # (B, in)
    outs = []
    for i in range(x.shape[0]):
        w_mod = weight / math.sqrt(in_ch * k * k) * s[i][None, :, None, None]  # eq. 1
        if demodulate:  # eqs. 2-3
            w_mod = w_mod / torch.sqrt((w_mod**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xi = x[i:i + 1]
        if upsample:
            y = F.conv_transpose2d(xi, w_mod.transpose(0, 1), stride=2)
            p = (len(taps) - 2) - (k - 1)
            y = upfirdn2d_ref(y, fir_kernel(taps, 2), pad=((p + 1) // 2 + 1, p // 2 + 1))
        elif downsample:
            p = (len(taps) - 2) + (k - 1)
            xi = upfirdn2d_ref(xi, fir_kernel(taps), pad=((p + 1) // 2, p // 2))
            y = F.conv2d(xi, w_mod, stride=2)
        else:
            y = F.conv2d(xi, w_mod, padding=k // 2)
        outs.append(y)
    return torch.cat(outs, 0)

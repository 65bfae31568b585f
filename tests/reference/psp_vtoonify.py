"""Independent PyTorch references (NCHW) for the pSp GradualStyleEncoder and the VToonify content encoder / fusion,
written from the published descriptions (pSp paper + research notes §3, §4), with the same state-dict key names
as the originals so weights convert through `jaxtalk.interop`. Widths are parameters so tests run tiny.

The form differs from the originals where it can: functional BatchNorm / instance norm, the max-pool(1, s)
shortcut as strided slicing, equalized linear as an explicit scaled F.linear, AdaIN written out.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def randomise_(module: nn.Module, seed: int = 0, gain: float = 1.0) -> nn.Module:
    """Every parameter and BatchNorm statistic random (so no branch hides behind an init of 0 or 1); matrices
    get std gain/sqrt(fan_in) so activations stay O(1) through deep stacks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * gain / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # norm scales, PReLU slopes
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if "res_layer.2" not in name and "input_layer.2" not in name
                        else 0.25 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


# ----------------------------------------------------------------------------------------------------------
# pSp


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)


class SE(nn.Module):
    def __init__(self, c: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(c // reduction, c, 1, bias=False)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class IRSEUnit(nn.Module):
    def __init__(self, cin: int, depth: int, stride: int, reduction: int):
        super().__init__()
        self.stride = stride
        self.project = cin != depth
        if self.project:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SE(depth, reduction))

    def forward(self, x):
        if self.project:
            sc = _bn(self.shortcut_layer[0](x), self.shortcut_layer[1])
        else:
            sc = x[:, :, :: self.stride, :: self.stride]
        bn0, conv1, prelu, conv2, bn1, se = self.res_layer
        r = conv1(_bn(x, bn0))
        r = torch.where(r >= 0, r, prelu.weight[None, :, None, None] * r)
        return se(_bn(conv2(r), bn1)) + sc


class EqualLinearRef(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return F.linear(x, self.weight / math.sqrt(self.weight.shape[1]), self.bias)


class StyleHead(nn.Module):
    def __init__(self, c: int, spatial: int):
        super().__init__()
        mods = []
        for _ in range(int(math.log2(spatial))):
            mods += [nn.Conv2d(c, c, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*mods)
        self.linear = EqualLinearRef(c, c)

    def forward(self, x):
        return self.linear(self.convs(x).flatten(1))


class PSPEncoderRef(nn.Module):
    """GradualStyleEncoder with configurable widths; stage s starts with a stride-2 unit."""

    def __init__(self, widths=(64, 128, 256, 512), units=(3, 4, 14, 3), n_styles=18, input_size=256,
                 reduction=16, input_nc=3):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, widths[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        body, cin, self.stage_ends = [], widths[0], []
        for depth, n in zip(widths, units):
            for u in range(n):
                body.append(IRSEUnit(cin, depth, 2 if u == 0 else 1, reduction))
                cin = depth
            self.stage_ends.append(len(body) - 1)
        self.body = nn.Sequential(*body)
        c = widths[3]
        spatial = [input_size // 16] * 3 + [input_size // 8] * 4 + [input_size // 4] * (n_styles - 7)
        self.styles = nn.ModuleList([StyleHead(c, s) for s in spatial])
        self.latlayer1 = nn.Conv2d(widths[2], c, 1)
        self.latlayer2 = nn.Conv2d(widths[1], c, 1)

    def forward(self, x):
        conv, bn, prelu = self.input_layer
        x = _bn(conv(x), bn)
        x = torch.where(x >= 0, x, prelu.weight[None, :, None, None] * x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            feats[i] = x
        c1, c2, c3 = (feats[i] for i in self.stage_ends[1:])
        p2 = F.interpolate(c3, size=c2.shape[2:], mode="bilinear", align_corners=True) + self.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[2:], mode="bilinear", align_corners=True) + self.latlayer2(c1)
        srcs = [c3] * 3 + [p2] * 4 + [p1] * (len(self.styles) - 7)
        return torch.stack([head(s) for head, s in zip(self.styles, srcs)], dim=1)

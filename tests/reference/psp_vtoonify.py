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


# ----------------------------------------------------------------------------------------------------------
# VToonify-D forward, functional over a torch-layout state dict {key: tensor} (original key names)

from tests.reference.stylegan_ops import equal_linear_ref, fir_kernel, modulated_conv_ref, upfirdn2d_ref  # noqa: E402

SQRT2 = math.sqrt(2.0)


def _lrelu(x, slope=0.2):
    return torch.where(x >= 0, x, slope * x)


def _inorm(x):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _adain(sd, p, x, s):
    gb = s @ sd[f"{p}.style.weight"].t() + sd[f"{p}.style.bias"]
    c = x.shape[1]
    return gb[:, :c, None, None] * _inorm(x) + gb[:, c:, None, None]


def _equal_conv_lrelu(sd, p, x, dilation=1):
    """ConvLayer(k=3, activate): equalized conv (no bias) then leaky_relu(x + b, 0.2) * sqrt(2)."""
    w = sd[f"{p}.0.weight"]
    y = F.conv2d(x, w / math.sqrt(w[0].numel()), padding=w.shape[-1] // 2 + dilation - 1, dilation=dilation)
    return _lrelu(y + sd[f"{p}.1.bias"][None, :, None, None]) * SQRT2


def adares_ref(sd, p, x, s, w, dilation=1):
    out = _equal_conv_lrelu(sd, f"{p}.conv", _adain(sd, f"{p}.norm", x, s), dilation)
    out = _equal_conv_lrelu(sd, f"{p}.conv2", _adain(sd, f"{p}.norm2", out, s), dilation)
    return out * w + x


def _mapping(sd, p, z, n):
    x = z * torch.rsqrt((z**2).mean(dim=-1, keepdim=True) + 1e-8)
    for i in range(1, n + 1):
        x = equal_linear_ref(x, sd[f"{p}.{i}.weight"], sd[f"{p}.{i}.bias"], lr_mul=0.01, activation=True)
    return x


def _styled_conv(sd, p, x, s, upsample):
    y = modulated_conv_ref(x, sd[f"{p}.conv.weight"][0], s, sd[f"{p}.conv.modulation.weight"],
                           sd[f"{p}.conv.modulation.bias"], upsample=upsample)
    return _lrelu(y + sd[f"{p}.activate.bias"][None, :, None, None]) * SQRT2  # zero noise


def _to_rgb(sd, p, x, s, skip):
    y = modulated_conv_ref(x, sd[f"{p}.conv.weight"][0], s, sd[f"{p}.conv.modulation.weight"],
                           sd[f"{p}.conv.modulation.bias"], demodulate=False) + sd[f"{p}.bias"]
    return y + upfirdn2d_ref(skip, fir_kernel((1, 3, 3, 1), 2), up=2, pad=(2, 1))


def _conv(sd, p, x, stride=1):
    w = sd[f"{p}.weight"]
    return F.conv2d(x, w, sd[f"{p}.bias"], stride=stride, padding=w.shape[-1] // 2)


def vtoonify_ref(sd, x, style, d_s, *, in_size, num_res_layers=6, first_hook=None):
    """x (B, 22, in, in); style W+ (B, n_latent, D); d_s float. `first_hook(feature)` acts after convs[6]."""
    b, n_latent, d = style.shape
    resstyles = _mapping(sd, "generator.style", style.reshape(b * n_latent, d), 2).reshape(b, n_latent, d)
    adastyles = [style[:, i] if i < 7 else equal_linear_ref(style[:, i], sd[f"generator.res.{i}.weight"],
                                                            sd[f"generator.res.{i}.bias"])
                 for i in range(n_latent)]
    # content encoder: stem, stride-2 pairs down to 32 px, residual blocks each followed by a dilated ModRes
    n_down = int(math.log2(in_size)) - 5
    feats, feat = [], x
    for i in range(n_down + 1):
        feat = _lrelu(_conv(sd, f"encoder.{i}.0", feat, stride=1 if i == 0 else 2))
        feat = _lrelu(_conv(sd, f"encoder.{i}.2", feat))
        feats.append(feat)
    feats = feats[::-1]
    dilations = [4, 4, 2, 2, 1, 1]
    for ii in range(num_res_layers):
        p = f"encoder.{n_down + 1}.{ii}"
        h = _lrelu(_conv(sd, f"{p}.conv", feat))
        feat = (_lrelu(_conv(sd, f"{p}.conv2", h)) + feat) / SQRT2
        feat = adares_ref(sd, f"res.{ii + 1}", feat, resstyles[:, ii + 1], d_s, dilations[ii])
    out, skip = feat, _conv(sd, f"encoder.{n_down + 2}", feat)
    # decoder from 32 px, fusion before the blocks up to in_size
    levels = len({k.split(".")[3] for k in sd if k.startswith("generator.generator.to_rgbs.")}) - 3
    g = "generator.generator"
    for k in range(levels):
        if 32 * 2**k <= in_size:
            f_e, p = feats[k], f"fusion_out.{k}"
            label = torch.full((b, 1), float(d_s))
            label = _lrelu(F.linear(_lrelu(F.linear(label, sd[f"{p}.linear.0.weight"], sd[f"{p}.linear.0.bias"])),
                                    sd[f"{p}.linear.2.weight"], sd[f"{p}.linear.2.bias"]))
            h = _adain(sd, f"{p}.norm", torch.cat([out, (out - f_e).abs()], 1), label)
            m_e = torch.tanh(torch.relu(_conv(sd, f"{p}.conv2", h)))
            out = _conv(sd, f"{p}.conv", torch.cat([out, f_e * m_e], 1))
            skip = _conv(sd, f"fusion_skip.{k}", torch.cat([skip, f_e * m_e], 1))
        out = _styled_conv(sd, f"{g}.convs.{6 + 2 * k}", out, adastyles[7 + 2 * k], upsample=True)
        if k == 0 and first_hook is not None:
            out = first_hook(out)
        out = _styled_conv(sd, f"{g}.convs.{7 + 2 * k}", out, adastyles[8 + 2 * k], upsample=False)
        skip = _to_rgb(sd, f"{g}.to_rgbs.{3 + k}", out, adastyles[9 + 2 * k], skip)
    return skip


def warp_ref(feat, flow):
    """flow_util: deformation = align-corners grid + 2 flow / (size - 1), resized (bilinear, align_corners=False)
    to the feature, then grid_sample defaults. flow (B, 2, h, w) pixels, x first."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = xs / (w - 1) * 2 - 1 + 2 * flow[:, 0] / (w - 1)
    gy = ys / (h - 1) * 2 - 1 + 2 * flow[:, 1] / (h - 1)
    grid = torch.stack([gx, gy], dim=1)
    if grid.shape[2:] != feat.shape[2:]:
        grid = F.interpolate(grid, size=feat.shape[2:], mode="bilinear", align_corners=False)
    return F.grid_sample(feat, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False)

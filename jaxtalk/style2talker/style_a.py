"""Style2Talker Style-A: `model/vtoonify.py: Audio_Driven_VToonify` (research notes §0.3).

VToonify-D plus a motion path. Per frame:
  1. T_s / T_c style maps of the W+ code (structure rows from the art style, colour rows from the identity);
  2. the content encoder with its dilated ModRes blocks gives the 32x32 feature, RGB skip and fusion features;
  3. the PIRender motion generator turns (identity image, 27-frame coefficient window) into a 64x64 flow and a
     descriptor; `deformation = grid + 2 * flow / (size - 1)`;
  4. the decoder runs from 32 px with fusion; right after `convs[6]` (the 64x64 feature) the refinement net
     sees the UNWARPED feature, the feature is warped with `grid_sample`, then SFT-modulated with the 64-px
     pair: `f * (1 + cond[6]) + cond[7]`;
  5. noise is zero; the output is `out_size` square (1024 published), frames independent.
Two options for small sizes, off by default (the original): `motion_size` (the motion generator's image side,
so a 32-px content input can still drive a fine flow) and `warp_skip` (warp the 32-px RGB skip too).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxtalk.nn.grid_warp import flow_to_deformation, warp_image
from jaxtalk.nn.standardize import standardize
from jaxtalk.style2talker.motion_generator import MotionGenerator
from jaxtalk.style2talker.refinement import CalibrationNet
from jaxtalk.style2talker.vtoonify import VToonify, style_degree

WARP_RES = 64  # the feature after convs[6] (the original's warping_index = refining_index = 7)


class AudioDrivenVToonify(VToonify):
    """Style-A generator. Fields beyond `VToonify`'s size the motion generator (published: 73-d coefficients,
    256-d descriptor, base 32 / max 256 channels, 5 down / 3 up) and the refinement net (`refine_channels`
    per level, default half the generator's 64-px width = 256, whose SFT outputs match that width).

    Call: `apply(v, x, style, input_image, driven_3dmm, d_s=0.5, *, parsing=None, flow=None, return_aux=False)`
      x            (B, in_size, in_size, 3) identity frame in [-1, 1] (+ `parsing` BiSeNet logits
                   (B, in_size, in_size, 19), divided by 16 inside, zeros when None), or the original's
                   22-channel image ++ parsing/16;
      style        W+ (B, n_latent, D): rows :7 the art style's, 7: `zplus2wplus(pSp(identity))`;
      input_image  (B, H, W, 3) identity image in [-1, 1] for the motion generator (256 published -> 64x64 flow),
                   resized to `motion_size` when that is set;
      driven_3dmm  (B, 27, 73) coefficient window (`motion_generator.coefficient_windows`), standardised inside
                   when `driving_mean` / `driving_std` are set;
      d_s          style degree, float or (B,);
      flow         optional (B, h, w, 2) pixel-unit flow replacing the predicted one (the descriptor still
                   comes from the coefficients).
    Returns the image (B, out_size, out_size, 3), or (image, aux) with aux = {'flow', 'descriptor',
    'warp_image', 'masks'} when `return_aux`.
    """

    coeff_nc: int = 73
    descriptor_nc: int = 256
    mapping_layers: int = 3
    motion_base_nc: int = 32
    motion_max_nc: int = 256
    motion_encoder_layers: int = 5
    motion_decoder_layers: int = 3
    refine_channels: int | None = None
    motion_size: int | None = None
    warp_skip: bool = False
    driving_mean: tuple[float, ...] | None = None
    driving_std: tuple[float, ...] | None = None

    @property
    def refine_width(self) -> int:
        return self.refine_channels if self.refine_channels is not None else self._ch(WARP_RES) // 2

    def setup(self) -> None:
        super().setup()
        if 2 * self.refine_width != self._ch(WARP_RES):
            raise ValueError(f"AudioDrivenVToonify: the refinement's SFT width 2*{self.refine_width} must equal the "
                             f"generator's {WARP_RES}-px channels {self._ch(WARP_RES)}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.motion_generator = MotionGenerator(
            self.coeff_nc, self.descriptor_nc, self.mapping_layers, self.img_channels, self.motion_base_nc,
            self.motion_max_nc, self.motion_encoder_layers, self.motion_decoder_layers, **kw)
        c = self.refine_width
        self.refinement = CalibrationNet(WARP_RES, self._ch(WARP_RES), (c,) * (WARP_RES.bit_length() - 2),
                                         self.descriptor_nc, c, **kw)

    def standardize(self, driven_3dmm: jax.Array) -> jax.Array:
        """The driving window as the motion generator reads it: raw (the original), or per-dimension
        `(c - driving_mean) / driving_std` when the model was trained on standardised coefficients. Raw synthetic
        coefficients mix a constant crop of ~128 with expression changes of ~0.1, which leaves the descriptor's
        frame-to-frame change a few percent of its size."""
        return standardize(driven_3dmm, self.driving_mean, self.driving_std)

    def motion_image(self, input_image: jax.Array) -> jax.Array:
        """The identity image at `motion_size` (bilinear) when set and different; else unchanged (the original)."""
        size = self.motion_size
        if size is None or input_image.shape[1:3] == (size, size):
            return input_image
        return jax.image.resize(input_image, (input_image.shape[0], size, size, input_image.shape[-1]), "linear")

    def __call__(self, x: jax.Array, style: jax.Array, input_image: jax.Array, driven_3dmm: jax.Array,
                 d_s: Any = 0.5, *, parsing: jax.Array | None = None, flow: jax.Array | None = None,
                 return_aux: bool = False) -> Any:
        self._init_unused(style)
        d_s = style_degree(d_s, x.shape[0])
        resstyles, adastyles = self.style_codes(style)
        out, skip, feats = self.encode(self.content_input(x, parsing), resstyles, d_s)

        motion = self.motion_generator(self.motion_image(input_image), self.standardize(driven_3dmm))
        if flow is None:
            flow = motion["flow_field"]
        elif flow.ndim != 4 or flow.shape[0] != x.shape[0] or flow.shape[-1] != 2:
            raise ValueError(f"AudioDrivenVToonify: flow must be (batch={x.shape[0]}, h, w, 2) in pixels, got {flow.shape}")
        deformation = flow_to_deformation(flow)
        descriptor = motion["descriptor"]

        def warp_and_refine(feat: jax.Array) -> jax.Array:
            cond = self.refinement(feat, descriptor)  # on the unwarped feature, as the original
            feat = warp_image(feat, deformation)
            return feat * (1 + cond[-2].astype(feat.dtype)) + cond[-1].astype(feat.dtype)

        warp_skip = (lambda rgb: warp_image(rgb, deformation)) if self.warp_skip else None
        image, masks = self.decode(out, skip, feats, adastyles, d_s, warp_and_refine, warp_skip)
        if return_aux:
            return image, {"flow": flow, "descriptor": descriptor, "warp_image": motion["warp_image"], "masks": masks}
        return image


def style_code(exstyle_wplus: jax.Array, identity_wplus: jax.Array, color_transfer: bool = False) -> jax.Array:
    """The W+ code Style-A is driven with: the art style's rows :7 and the identity's own colour rows 7: (or the
    art style's code entirely with `color_transfer`), as `inference.py` builds `s_w`."""
    if exstyle_wplus.shape[-2:] != identity_wplus.shape[-2:]:
        raise ValueError(f"style_code: exstyle {exstyle_wplus.shape} and identity {identity_wplus.shape} W+ differ")
    if color_transfer:
        return jnp.broadcast_to(exstyle_wplus, identity_wplus.shape)
    ex = jnp.broadcast_to(exstyle_wplus, identity_wplus.shape)
    return jnp.concatenate([ex[:, :7], identity_wplus[:, 7:]], axis=1)

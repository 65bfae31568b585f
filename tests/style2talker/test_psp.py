"""pSp GradualStyleEncoder: parity with an independent tiny PyTorch reference, checkpoint layouts, and strict
acceptance of the full official IR-SE50 key list (psp_keys.txt)."""

import re

import jax
import numpy as np
import pytest
import torch

from jaxtalk import interop
from tests.parity import assert_close
from tests.reference.psp_vtoonify import PSPEncoderRef, randomise_

TINY = dict(widths=(16, 24, 32, 48), units=(1, 2, 2, 1), n_styles=18, input_size=64, reduction=8)


def read_key_list(path):
    """{key: shape} from a fixture key list ('key (d0, d1, ...)' per line)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(\S+) \((.*)\)", line.strip())
        if m:
            out[m.group(1)] = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    return out


def zero_state(shapes):
    """Zero-stride zeros: the key list at full size without allocating it."""
    return {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def tiny():
    ref = randomise_(PSPEncoderRef(**TINY), seed=1).eval()
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    image = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        codes = ref(torch.from_numpy(image)).numpy()
    return sd, image, codes


def test_tiny_parity_and_round_trip(tiny):
    sd, image, codes = tiny
    module, variables = interop.from_torch("psp_encoder", sd, config={"input_size": 64})
    assert (module.widths, module.units, module.se_reduction) == (TINY["widths"], TINY["units"], TINY["reduction"])
    out = jax.jit(module.apply)(variables, np.transpose(image, (0, 2, 3, 1)))
    assert out.shape == (2, 18, 48)
    assert_close(out, codes, name="psp.codes")
    back = interop.to_torch("psp_encoder", variables)
    kept = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert set(back) == kept and all(np.array_equal(back[k], sd[k]) for k in kept)


def test_full_psp_checkpoint_layout_adds_latent_avg(tiny):
    sd, image, codes = tiny
    latent_avg = np.random.default_rng(1).standard_normal((18, 48)).astype(np.float32)
    ckpt = {"state_dict": {**{f"encoder.{k}": v for k, v in sd.items()},
                           "decoder.style.1.weight": np.zeros((4, 4), np.float32)},
            "latent_avg": latent_avg}
    module, variables = interop.from_torch("psp_encoder", ckpt, config={"input_size": 64})
    out = jax.jit(module.apply)(variables, np.transpose(image, (0, 2, 3, 1)))
    assert_close(out, codes + latent_avg[None], name="psp.codes+latent_avg")
    back = interop.to_torch("psp_encoder", variables, layout="psp_checkpoint")
    assert np.array_equal(back["latent_avg"], latent_avg)
    assert np.array_equal(back["state_dict.encoder.styles.3.linear.weight"], sd["styles.3.linear.weight"])


def test_wrong_input_size_is_explained(tiny):
    sd, image, _ = tiny
    module, variables = interop.from_torch("psp_encoder", sd, config={"input_size": 64})
    with pytest.raises(ValueError, match="pools its input to 64"):
        module.apply(variables, np.zeros((1, 128, 128, 3), np.float32))


def test_official_psp_key_list_imports_strictly(fixtures_dir):
    shapes = read_key_list(fixtures_dir / "style2talker" / "psp_keys.txt")
    assert len(shapes) == 621
    module, variables = interop.from_torch("psp_encoder", zero_state(shapes))
    assert (module.widths, module.units, module.n_styles, module.input_size) == (
        (64, 128, 256, 512), (3, 4, 14, 3), 18, 256)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
    assert n == sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith("num_batches_tracked"))
    assert abs(n / 1e6 - 267.2) < 0.1

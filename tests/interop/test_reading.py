"""Safe checkpoint reading and the strict generic converter."""

import os
import pickle

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from jaxtalk import interop
from jaxtalk.interop.reading import CheckpointError, read_state_dict, select_subtree
from jaxtalk.interop.registry import Kind, register
from jaxtalk.nn import layers


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused or unreadable torch checkpoint") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_torch_nested_and_prefixed(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module.a.weight": torch.ones(2, 3), "module.b": {"bias": torch.zeros(3)}},
                "epoch": 3}, path)
    sd = read_state_dict(path)
    assert set(sd) == {"state_dict.module.a.weight", "state_dict.module.b.bias"}
    sd = select_subtree(sd, ("state_dict",), ("module.",))
    assert set(sd) == {"a.weight", "b.bias"} and sd["a.weight"].shape == (2, 3)


def test_safetensors_and_folder(tmp_path):
    save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path / "model.safetensors")
    assert read_state_dict(tmp_path)["x"][1, 2] == 5
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "missing.bin")


class _Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = layers.conv(4, (3, 3), padding=1, name="conv_in")(x)
        x = layers.group_norm(2, name="norm_1")(x)
        return layers.dense(5, name="proj_out_0")(x)


register(Kind(
    name="_toy_for_tests",
    summary="test-only kind",
    build=lambda config, state: (_Toy(), None),
    init=lambda m, rng: m.init(rng, jnp.zeros((1, 4, 4, 3))),
    keep=frozenset({"norm_1"}),
))


def _toy_torch():
    g = torch.Generator().manual_seed(0)
    return {
        "conv_in.weight": torch.randn(4, 3, 3, 3, generator=g), "conv_in.bias": torch.randn(4, generator=g),
        "norm_1.weight": torch.randn(4, generator=g), "norm_1.bias": torch.randn(4, generator=g),
        "proj_out.0.weight": torch.randn(5, 4, generator=g), "proj_out.0.bias": torch.randn(5, generator=g),
    }


def test_toy_conversion_matches_torch_and_roundtrips():
    sd = _toy_torch()
    module, params = interop.from_torch("_toy_for_tests", sd)
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)
    out = module.apply({"params": params}, x)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), sd["conv_in.weight"],
                                      sd["conv_in.bias"], padding=1)
    ref = torch.nn.functional.group_norm(conv, 2, sd["norm_1.weight"], sd["norm_1.bias"])
    ref = torch.nn.functional.linear(ref.permute(0, 2, 3, 1), sd["proj_out.0.weight"], sd["proj_out.0.bias"])
    np.testing.assert_allclose(np.asarray(out), ref.numpy(), rtol=1e-4, atol=1e-5)
    back = interop.to_torch("_toy_for_tests", params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k].numpy())


def test_strict_errors_list_everything_at_once():
    sd = {k: v.numpy() for k, v in _toy_torch().items()}
    del sd["norm_1.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["proj_out.0.weight"] = np.zeros((5, 7), np.float32)
    with pytest.raises(interop.ConversionError) as e:
        interop.from_torch("_toy_for_tests", sd)
    msg = str(e.value)
    assert "1 missing: norm_1.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "1 mis-shaped: proj_out.0.weight (5, 7)" in msg


def test_unknown_kind():
    with pytest.raises(KeyError, match="unknown interop kind"):
        interop.from_torch("no_such_kind", {})

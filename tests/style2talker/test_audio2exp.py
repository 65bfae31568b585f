"""SadTalker audio2exp: the mel front end against librosa, the per-frame windows, the network at full width against
an independent PyTorch reference, and checkpoint layouts."""

from __future__ import annotations

import jax
import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from jaxtalk import interop
from jaxtalk.style2talker import audio2exp as a2e
from tests.parity import assert_close


def _test_audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * (120 + 80 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (voiced + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def _librosa_mel(wav: np.ndarray) -> np.ndarray:
    """SadTalker's melspectrogram written with librosa / scipy (reflect-padded STFT as librosa < 0.10)."""
    y = scipy.signal.lfilter([1, -0.97], [1], wav)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4).T


def test_mel_filterbank_matches_librosa():
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    np.testing.assert_allclose(a2e.mel_filterbank(), ref, rtol=1e-5, atol=1e-9)


def test_melspectrogram_matches_librosa():
    wav = _test_audio(1.37)
    ours = a2e.melspectrogram(wav)
    ref = _librosa_mel(wav)
    assert ours.shape == ref.shape == (1 + wav.shape[0] // 200, 80)
    assert_close(ours, ref, name="mel front end")


def _sadtalker_windows(wav: np.ndarray) -> np.ndarray:
    """generate_batch.get_data's audio path, re-written for the test with Python ints and lists."""
    per_frame = 16000 / 25
    frames = int(len(wav) / per_frame)
    length = int(frames * per_frame)
    wav = wav[:length] if len(wav) > length else np.pad(wav, [0, length - len(wav)])
    mel = _librosa_mel(wav)
    out = []
    for i in range(frames):
        start = int(80.0 * ((i - 2) / float(25)))
        seq = [min(max(j, 0), mel.shape[0] - 1) for j in range(start, start + 16)]
        out.append(mel[seq, :].T)
    return np.asarray(out)


@pytest.mark.parametrize("seconds", [0.9, 2.013])
def test_per_frame_mel_windows_match_sadtalker(seconds):
    wav = _test_audio(seconds, seed=1)
    ours = a2e.audio_to_mel_windows(wav)
    ref = _sadtalker_windows(wav)
    assert ours.shape == ref.shape == (int(seconds * 25), 80, 16)
    assert_close(ours, ref, name=f"mel windows {seconds}s")


def test_blink_ratio_pulses():
    assert not np.any(a2e.blink_ratio(20, np.random.default_rng(0)))
    r = a2e.blink_ratio(300, np.random.default_rng(0))
    np.testing.assert_array_equal(r, a2e.blink_ratio(300, np.random.default_rng(0)))
    starts = np.flatnonzero(np.diff(np.concatenate([[0.0], (r > 0).astype(float)])) > 0)
    assert len(starts) >= 2
    ends = np.concatenate([[0], starts[:-1] + 5])
    assert np.all(starts - ends >= 10) and np.all(starts - ends < 70)  # gaps drawn from [10, 70)
    for s in starts:
        np.testing.assert_allclose(r[s:s + 5], [0.5, 0.9, 1.0, 0.9, 0.5])
    assert np.count_nonzero(r) == 5 * len(starts)


class _TorchUnit(torch.nn.Module):
    """Conv2d + BatchNorm2d (+ residual) + ReLU with SadTalker's attribute names."""

    def __init__(self, cin, cout, k, s, p, residual):
        super().__init__()
        self.conv_block = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, s, p), torch.nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        y = self.conv_block(x)
        return torch.relu(y + x if self.residual else y)


class _TorchSimpleWrapperV2(torch.nn.Module):
    """Independent reference from the published layer table (research §7.1)."""

    def __init__(self):
        super().__init__()
        spec = [(1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
                (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
                (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
                (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
                (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]
        self.audio_encoder = torch.nn.Sequential(*[_TorchUnit(*s) for s in spec])
        self.mapping1 = torch.nn.Linear(512 + 64 + 1, 64)

    def forward(self, x, ref, ratio):
        a = self.audio_encoder(x).view(x.size(0), -1)
        return self.mapping1(torch.cat([a, ref, ratio[:, None]], dim=1))


@pytest.fixture(scope="module")
def full_reference():
    torch.manual_seed(0)
    net = _TorchSimpleWrapperV2().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(7)
        net.mapping1.bias.uniform_(-0.1, 0.1)
    return net


def test_full_width_matches_torch_reference(full_reference):
    sd = {k: v.numpy() for k, v in full_reference.state_dict().items()}
    module, variables = interop.from_torch("sadtalker_audio2exp", sd)
    assert module.width_scale == 1.0 and module.widths()[-1] == 512
    rng = np.random.default_rng(0)
    mels = rng.uniform(-4, 4, (3, 80, 16)).astype(np.float32)
    ref = rng.standard_normal((3, 64)).astype(np.float32)
    ratio = np.array([0.0, 0.5, 1.0], np.float32)
    with torch.no_grad():
        expected = full_reference(torch.from_numpy(mels)[:, None], torch.from_numpy(ref), torch.from_numpy(ratio))
    out = jax.jit(module.apply)(variables, mels, ref, ratio)
    assert_close(out, expected.numpy(), name="audio2exp full width")
    folded = a2e.audio2exp(module, variables, mels[:, None], ref, ratio[:, None])  # BatchNorm folded (inference)
    assert_close(folded[:, 0], expected.numpy(), name="audio2exp full width, BatchNorm folded")
    back = interop.to_torch("sadtalker_audio2exp", variables)
    assert set(back) == {k for k in sd if "num_batches_tracked" not in k}
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k])


def test_checkpoint_containers_and_prefixes(full_reference):
    sd = {k: v.numpy() for k, v in full_reference.state_dict().items()}
    style2talker = {f"netG.{k}": v for k, v in sd.items()}  # Style2Talker AudioEncoder
    sadtalker_pth = {"model": sd, "epoch": np.zeros(())}  # SadTalker auido2exp_00300-model.pth
    bundle = {**{f"audio2exp.{k}": v for k, v in sd.items()}, "audio2pose.netG.w": np.zeros(3, np.float32)}
    params = interop.from_torch("sadtalker_audio2exp", sd)[1]
    for source in (style2talker, sadtalker_pth, bundle):
        other = interop.from_torch("sadtalker_audio2exp", source)[1]
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, other))


def test_bad_inputs(full_reference):
    module, variables = interop.from_torch(
        "sadtalker_audio2exp", {k: v.numpy() for k, v in full_reference.state_dict().items()})
    with pytest.raises(ValueError, match=r"mels must be \(N, 80, 16\)"):
        module.apply(variables, np.zeros((2, 80, 15)), np.zeros((2, 64)), np.zeros(2))
    with pytest.raises(ValueError, match="ref must be"):
        a2e.audio2exp(module, variables, np.zeros((1, 2, 80, 16)), np.zeros((1, 32)))
    with pytest.raises(ValueError, match="16000 Hz"):
        a2e.melspectrogram(np.zeros(16000), sample_rate=22050)
    with pytest.raises(ValueError, match="shorter than one video frame"):
        a2e.audio_to_mel_windows(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="only 'width_scale'"):
        interop.from_torch("sadtalker_audio2exp", {k: v.numpy() for k, v in full_reference.state_dict().items()},
                           config={"width": 2})

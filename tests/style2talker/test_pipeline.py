"""Style2Talker generation at the tiny preset (random weights): end to end through `jaxtalk generate` from a
checkpoint folder, seed determinism, the cached content encoder against Style-A's own forward, the 73-d coefficient
windows and the Style-E tiling against numpy references of the released rules, and bad inputs."""

import dataclasses

import jax
import numpy as np
import pytest
import soundfile
from PIL import Image

from jaxtalk import config, parallel
from jaxtalk.cli import main
from jaxtalk.data import media, synthetic
from jaxtalk.style2talker import audio2exp as a2e
from jaxtalk.style2talker.config import Style2TalkerConfig
from jaxtalk.style2talker.models import load_models, random_models, save_checkpoints
from jaxtalk.style2talker.pipeline import (
    Style2TalkerInputs,
    Style2TalkerPipeline,
    batch_plan,
    coefficient_sequence,
    driving_windows,
    per_frame,
    to_model_image,
)
from jaxtalk.style2talker.style_e import sample_windows

CFG = config.load("style2talker_tiny", cls=Style2TalkerConfig)
FRAMES = 45  # two Style-E windows (the second re-taken from the end), 12 Style-A batches of 4 (the last padded)


@pytest.fixture(scope="module")
def models():
    return random_models(CFG, seed=0)


@pytest.fixture(scope="module")
def clip():
    return synthetic.generate_clip(synthetic.make_identity(3, 0), "angry", 2, seed=5, num_frames=FRAMES,
                                   resolution=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory, clip, models):
    d = tmp_path_factory.mktemp("s2t_inputs")
    paths = {"image": d / "identity.png", "audio": d / "speech.wav", "style": d / "art_style.npy",
             "checkpoint": d / "ckpt"}
    Image.fromarray(clip.frames[0]).save(paths["image"])
    soundfile.write(paths["audio"], clip.audio, clip.sample_rate)
    rng = np.random.default_rng(0)
    np.save(paths["style"], rng.standard_normal((CFG.style_a.n_latent, CFG.style_a.style_dim)).astype(np.float32))
    save_checkpoints(models, paths["checkpoint"])
    return paths


@pytest.fixture(scope="module")
def pipe(models):
    return Style2TalkerPipeline(models, progress=False)


def _inputs(clip, style=1):
    return Style2TalkerInputs(clip.frames[0], clip.audio, clip.emotion_texts[0], style=style)


def test_generate_cli_writes_video_with_audio_and_config(files, clip, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    rc = main(["generate", "--system", "style2talker", "--image", str(files["image"]), "--audio",
               str(files["audio"]), "--emotion", clip.emotion_texts[0], "--style", str(files["style"]),
               "--checkpoint", str(files["checkpoint"]), "--seed", "3", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "checkpoints in" in printed
    info = media.probe_video(out)
    assert info["has_audio"] and info["sample_rate"] == 16000
    assert (info["width"], info["height"]) == (64, 64)
    frames, fps = media.read_video_frames(out)
    assert frames.shape == (FRAMES, 64, 64, 3) and fps == pytest.approx(25.0)
    assert media.read_video_audio(out).shape[0] == pytest.approx(FRAMES * 640, abs=1024)
    resolved = config.load(out.with_suffix(".yaml"))
    assert resolved == dataclasses.replace(CFG, inference=dataclasses.replace(CFG.inference, seed=3))


def test_checkpoint_folder_round_trips_exactly(files, models):
    loaded = load_models(files["checkpoint"])
    assert loaded.config == CFG and loaded.modules == models.modules
    np.testing.assert_array_equal(loaded.style_bank, models.style_bank)
    leaves = jax.tree.leaves_with_path(models.params)
    back = dict(jax.tree.leaves_with_path(loaded.params))
    assert len(back) == len(leaves)
    for path, value in leaves:
        np.testing.assert_array_equal(np.asarray(back[path]), np.asarray(value), err_msg=jax.tree_util.keystr(path))


def test_bundle_is_the_one_format_of_both_products(files, models, tmp_path, capsys):
    """save_models writes the bundle SVP uses too (orbax params + config.yaml + manifest.json, plus the style
    bank); one loader reads it back exactly, and still reads the torch-layout folder."""
    import json

    import jaxtalk.loading
    from jaxtalk.style2talker.loading import save_models

    path = save_models(models, tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    assert (manifest["format"], manifest["system"], manifest["layout"]) == ("jaxtalk-bundle/1", "style2talker",
                                                                            "orbax")
    assert manifest["files"] == ["exstyle_code.npz"] and (path / "params").is_dir()
    assert not list(path.glob("*.safetensors"))
    loaded = jaxtalk.loading.load_models(path)
    assert loaded.config == CFG and loaded.style_names == models.style_names
    back = dict(jax.tree.leaves_with_path(loaded.params))
    for key, value in jax.tree.leaves_with_path(models.params):
        np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(value), err_msg=jax.tree_util.keystr(key))
    mesh = parallel.make_mesh(data=2, fsdp=1, tensor=1, devices=jax.devices()[:2])
    on_mesh = jaxtalk.loading.load_models(path, mesh=mesh)  # restored straight into replicated shardings
    assert on_mesh.mesh is mesh
    for key, value in jax.tree.leaves_with_path(on_mesh.params):
        assert value.sharding.is_fully_replicated and set(value.sharding.device_set) == set(mesh.devices.flat)
        np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(value), err_msg=jax.tree_util.keystr(key))
    # the importer of an original checkpoint folder writes the same format
    assert main(["convert", "--kind", "style2talker", "--weights", str(files["checkpoint"]), "--out",
                 str(tmp_path / "imported")]) == 0
    imported = jaxtalk.loading.load_models(tmp_path / "imported")
    assert json.loads((tmp_path / "imported" / "manifest.json").read_text())["layout"] == "orbax"
    assert imported.config == CFG and imported.style_names == models.style_names
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "imported")]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "system style2talker (format jaxtalk-bundle/1, layout orbax)"
    assert any(line.startswith("style_e/") for line in listing) and listing[-1].endswith("elements")
    got = dict(jax.tree.leaves_with_path(imported.params))
    for key, value in jax.tree.leaves_with_path(models.params):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=0, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(key))
    (path / "exstyle_code.npz").unlink()
    with pytest.raises(ValueError, match="missing: exstyle_code.npz"):
        load_models(path)
    with pytest.raises(ValueError, match="holds style2talker weights, not svp"):
        from jaxtalk.svp.loading import load_models as load_svp

        load_svp(path)


def test_abstract_params_and_on_mesh_as_svp_models_have_them(models):
    """`abstract_params` gives every component's param shapes without drawing weights (as SVP's does), equal to
    the random weights' own; `on_mesh` places the same values replicated on a mesh, and a pipeline given that
    bundle runs on its mesh."""
    from jaxtalk.style2talker.models import abstract_params

    shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)
    assert shapes(abstract_params(CFG)) == shapes(models.params)
    mesh = parallel.make_mesh(data=2, fsdp=1, tensor=1, devices=jax.devices()[:2])
    abstract = abstract_params(CFG, mesh=mesh)
    assert shapes(abstract) == shapes(models.params)
    assert all(s.sharding.is_fully_replicated and s.sharding.mesh == mesh for s in jax.tree.leaves(abstract))
    placed = models.on_mesh(mesh)
    assert placed.mesh is mesh and models.mesh is None and placed.style_names == models.style_names
    leaves = jax.tree.leaves
    for before, after, sharding in zip(leaves(models.params), leaves(placed.params), leaves(placed.shardings),
                                       strict=True):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
        assert after.sharding == sharding and sharding.is_fully_replicated
    assert Style2TalkerPipeline(placed, progress=False).mesh is mesh


@pytest.fixture(scope="module")
def generated(pipe, clip):
    return pipe(_inputs(clip), seed=3)


def test_same_seed_same_video(pipe, clip, generated):
    again = pipe(_inputs(clip), seed=3)
    assert generated.frames.shape == (FRAMES, 64, 64, 3) and generated.frames.dtype == np.uint8
    np.testing.assert_array_equal(generated.frames, again.frames)
    np.testing.assert_array_equal(generated.expression, again.expression)
    assert generated.frames.std() > 1.0  # not a constant image
    other = pipe.expression(clip.audio, generated.text_feature, None, seed=4)
    assert np.max(np.abs(other - generated.expression)) > 1e-3


@pytest.mark.slow
def test_cached_content_encoder_matches_style_a_forward(models, clip, generated):
    """Frame 0 (content encoder run once, reused per batch) equals Style-A's full forward on the same inputs."""
    first = generated
    sa = models.modules["style_a"]
    x = to_model_image(clip.frames[0], CFG.style_a.in_size)
    window = driving_windows(first.coefficients, CFG.inference.radius)[:1]
    full = jax.jit(lambda p: sa.apply({"params": p}, x, first.style[None], x, window, CFG.inference.style_degree))(
        models.params["style_a"])
    expected = np.round((np.clip(np.asarray(full, np.float64), -1, 1) + 1) * 127.5)[0]
    assert np.max(np.abs(expected - first.frames[0])) <= 1


@pytest.mark.slow
def test_frame_batches_split_over_a_mesh(models, clip, generated):
    mesh = parallel.make_mesh(data=2, fsdp=2, tensor=1, devices=jax.devices()[:4])
    split = Style2TalkerPipeline(models, progress=False, mesh=mesh)(_inputs(clip), seed=3)
    assert np.max(np.abs(split.frames.astype(int) - generated.frames.astype(int))) <= 1
    with pytest.raises(ValueError, match="multiple of the mesh"):
        Style2TalkerPipeline(models, mesh=parallel.make_mesh(data=1, fsdp=8, tensor=1))


def _windows_reference(coeffs: np.ndarray, radius: int) -> np.ndarray:
    n = coeffs.shape[0]
    return np.stack([coeffs[[min(max(j, 0), n - 1) for j in range(i - radius, i + radius + 1)]] for i in range(n)])


@pytest.mark.parametrize("num_frames", [5, 27, 40])
def test_coefficient_windows_match_numpy(num_frames):
    rng = np.random.default_rng(num_frames)
    exp = rng.standard_normal((num_frames, 64)).astype(np.float32)
    pose = rng.standard_normal((num_frames + 3, 6)).astype(np.float32)  # longer pose tracks are cut
    crop = np.array([0.9, 120.0, 131.0], np.float32)  # one crop held for the clip
    coeffs = coefficient_sequence(exp, per_frame(pose, num_frames, 6, np.zeros(6), "pose"),
                                  per_frame(crop, num_frames, 3, CFG.inference.crop, "crop"))
    reference = np.concatenate([exp, pose[:num_frames, :3], pose[:num_frames, 3:], np.tile(crop, (num_frames, 1))], 1)
    np.testing.assert_array_equal(coeffs, reference)
    windows = driving_windows(coeffs, 13)
    assert windows.shape == (num_frames, 27, 73)
    np.testing.assert_array_equal(windows, _windows_reference(reference, 13))
    with pytest.raises(ValueError, match="pose has 2 frames"):
        per_frame(pose[:2], num_frames, 6, np.zeros(6), "pose")
    plan = batch_plan(num_frames, 4)
    assert plan.shape == (-(-num_frames // 4), 4) and plan[-1, -1] == num_frames - 1
    np.testing.assert_array_equal(plan.reshape(-1)[:num_frames], np.arange(num_frames))


def _tiling_reference(num_frames: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The released `non_overlapping_test`: window starts and, per output frame, its (window, position)."""
    if num_frames < window:
        pad = window - num_frames
        gather = np.array([[0] * pad + list(range(num_frames))])
        return gather, np.array([(0, pad + f) for f in range(num_frames)])
    starts, keep = [], []
    count = 0
    while count < num_frames:
        if count + window > num_frames:
            starts.append(num_frames - window)
            keep.append(count - (num_frames - window))
        else:
            starts.append(count)
            keep.append(0)
        count += window
    gather = np.array([list(range(s, s + window)) for s in starts])
    where = [(k, p) for k, first in enumerate(keep) for p in range(first, window)]
    return gather, np.array(where)


@pytest.mark.parametrize("num_frames", [20, 32, 45])
def test_style_e_tiling_any_length(pipe, models, num_frames):
    """The pipeline's expression for a clip shorter than, equal to and longer than the 32-frame window equals the
    sampler run on the windows cut (and put back) by the released rule. (45 frames reuses the compiled stage of
    the end-to-end tests.)"""
    rng = np.random.default_rng(num_frames)
    audio = (0.1 * rng.standard_normal(num_frames * 640)).astype(np.float32)
    text = rng.standard_normal(CFG.style_e.text_dim).astype(np.float32)
    ref = rng.standard_normal(64).astype(np.float32)
    got = pipe.expression(audio, text, ref, seed=7)
    assert got.shape == (num_frames, 64)

    mels = a2e.audio_to_mel_windows(audio)
    blink = a2e.blink_ratio(num_frames, np.random.default_rng(np.random.SeedSequence([7, 0xB1])))
    sparse = np.asarray(jax.jit(lambda v: a2e.audio2exp(models.modules["audio2exp"], v, mels[None], ref[None],
                                                        blink[None]))(models.params["audio2exp"]))[0]
    gather, where = _tiling_reference(num_frames, 32)
    sample = jax.jit(lambda p, s, t, k: sample_windows(models.modules["style_e"], p, s, t, k, sampling=CFG.sampler))
    samples = sample(models.params["style_e"], sparse[gather], np.broadcast_to(text, (gather.shape[0], text.shape[0])),
                     jax.random.fold_in(jax.random.key(7), 1))
    expected = np.asarray(samples)[where[:, 0], where[:, 1]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["missing_image", "corrupt_audio", "empty_emotion"])
def test_bad_inputs_one_error_line_no_output(files, clip, tmp_path, capsys, case):
    args = {"--image": str(files["image"]), "--audio": str(files["audio"]), "--emotion": clip.emotion_texts[0]}
    if case == "missing_image":
        args["--image"] = str(tmp_path / "nobody.png")
        expect = "image file not found"
    elif case == "corrupt_audio":
        bad = tmp_path / "broken.wav"
        bad.write_bytes(b"RIFF\x00\x01garbage" * 7)
        args["--audio"] = str(bad)
        expect = "cannot be decoded"
    else:
        args["--emotion"] = "   "
        expect = "emotion text is empty"
    out = tmp_path / "out" / "talk.mp4"
    rc = main(["generate", "--system", "style2talker", *sum(([k, v] for k, v in args.items()), []),
               "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert expect in err and err.startswith("jaxtalk generate: error:") and "\n" not in err
    assert not out.exists() and not out.with_suffix(".yaml").exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_motion_settings_the_weights_cannot_show_survive_the_checkpoint_folder(tmp_path, clip):
    """`motion_size`, `warp_skip` and the driving statistics live only in config.yaml: loading the torch-layout
    folder keeps them, and the pipeline hands the motion generator the identity at `motion_size`."""
    a = dataclasses.replace(CFG.style_a, motion_size=2 * CFG.style_a.in_size, warp_skip=True,
                            driving_mean=tuple(0.1 * i for i in range(73)), driving_std=(2.0,) * 73)
    cfg = dataclasses.replace(CFG, style_a=a)
    models = random_models(cfg, seed=1)
    save_checkpoints(models, tmp_path / "ckpt")
    loaded = load_models(tmp_path / "ckpt")
    assert loaded.config.style_a == a and loaded.modules["style_a"] == models.modules["style_a"]
    pipe = Style2TalkerPipeline(loaded, progress=False)
    style, _, (x, motion) = pipe.identity(clip.frames[0], np.asarray(loaded.style_bank[0]), True, None)
    assert x.shape[1:3] == (a.in_size,) * 2 and motion.shape[1:3] == (a.motion_size,) * 2
    np.testing.assert_array_equal(motion, to_model_image(clip.frames[0], a.motion_size))

"""The whole synthetic-domain SVP stack, trained from nothing in one command (`train/svp_stack.py`).

Order (each a normal resumable run under `<root>/<name>`, skipped when already complete):

    vae               the latent autoencoder (`train_svp_synth_vae`), then its latent scale (1 / std of the means)
    style_prior       the probabilistic intrinsic-style prior (`train_svp_synth_style_prior`)
    style_prior_det   the same extractor trained deterministically (mu only; the Fig. 4 ablation)
    stage1            ReferenceNet + UNet + Head-Kps guider on single frames, VAE from `vae`
    stage2            motion modules + audio projection + audio attention on 16-frame clips
    stage2_mouth      stage 2 continued with the mouth-weighted loss (V-Express) on the stage-3 records
    stage3            style attention only, with the probabilistic prior
    stage3_det        style attention only, with the deterministic prior (same budget)

Training clips come from the synthetic population of seed `TRAIN_SEED` (identities and utterances); evaluation
uses `EVAL_SEED`, a disjoint population. `scale` multiplies every stage's step count (tests use tiny values).
Wall time per run and the exact commands go to `<root>/stack.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jaxtalk import config as config_lib
from jaxtalk.training import loop

log = logging.getLogger(__name__)

TRAIN_SEED, EVAL_SEED = 1, 1000
STACK_FILE = "stack.json"


@dataclasses.dataclass(frozen=True)
class StackRun:
    name: str
    preset: str
    overrides: tuple[str, ...] = ()
    needs_scale: bool = False  # gets model.vae.scaling_factor from the VAE run
    # records under <root>/data/: train = 1500 identities x 1 clip (VAE, stages 1-2), train_small = 24 x 22 (style
    # prior), train_multi = 400 x 4 (stage2_mouth, stage 3): the style prior and stage 3 pair clips of one identity
    data_dir: str = "train"


RUNS = (
    StackRun("vae", "train_svp_synth_vae"),
    StackRun("style_prior", "train_svp_synth_style_prior", data_dir="train_small"),
    StackRun("style_prior_det", "train_svp_synth_style_prior",
             ("extractor.deterministic=true", "contrast=mean"), data_dir="train_small"),
    StackRun("stage1", "train_svp_synth_stage1", (), True),
    StackRun("stage2", "train_svp_synth_stage2", (), True),
    StackRun("stage2_mouth", "train_svp_synth_stage2_mouth", (), True, "train_multi"),
    StackRun("stage3", "train_svp_synth_stage3", (), True, "train_multi"),
    StackRun("stage3_det", "train_svp_synth_stage3",
             ("style_sample=false", "model.style_extractor.deterministic=true"), True, "train_multi"),
)


def _inits(run: StackRun, root: Path) -> list[str]:
    """Init sources pointing at this stack's own runs."""
    r = lambda name: str(root / name)  # noqa: E731
    table = {
        "stage1": [{"kind": "run", "path": r("vae"), "component": "vae"}],
        "stage2": [{"kind": "run", "path": r("stage1")}],
        "stage2_mouth": [{"kind": "run", "path": r("stage2")}],
        "stage3": [{"kind": "run", "path": r("stage2_mouth")},
                   {"kind": "run", "path": r("style_prior"), "component": "style_extractor"}],
        "stage3_det": [{"kind": "run", "path": r("stage2_mouth")},
                       {"kind": "run", "path": r("style_prior_det"), "component": "style_extractor"}],
    }
    return [f"init={json.dumps(table[run.name])}"] if run.name in table else []


def run_config(run: StackRun, root: Path, scale: float, extra: tuple[str, ...] = ()) -> Any:
    """The resolved root config of one run of the stack."""
    base = config_lib.load(run.preset)
    steps = max(2, int(math.ceil(base.train.steps * scale)))
    every = max(1, min(base.train.checkpoint_every, steps // 2))
    overrides = [f"train.workdir={root / run.name}", f"data.record_dir={root / 'data' / run.data_dir}",
                 f"train.steps={steps}", f"train.checkpoint_every={every}",
                 f"train.log_every={max(1, min(base.train.log_every, steps // 4 or 1))}",
                 f"data.synthetic.seed={TRAIN_SEED}", *run.overrides, *_inits(run, root), *extra]
    if run.needs_scale:
        overrides.append(f"model.vae.scaling_factor={latent_scale_of(root)}")
    return config_lib.load(run.preset, overrides), overrides


def latent_scale_of(root: Path) -> float:
    path = root / "vae" / "latent_scale.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the VAE run has not finished (its latent scale is written at the end)")
    return float(json.loads(path.read_text())["scaling_factor"])


def _done(workdir: Path, steps: int) -> bool:
    from jaxtalk.training.checkpoint import Checkpointer

    ckdir = workdir / "checkpoints"
    if not ckdir.is_dir():
        return False
    ckpt = Checkpointer(ckdir)
    try:
        return (ckpt.latest_step() or 0) >= steps
    finally:
        ckpt.close()


def _task(cfg: Any) -> loop.Task:
    name = config_lib.root_name(cfg)
    if name == "train_vae":
        from jaxtalk.training.vae import VAETask
        return VAETask.from_config(cfg)
    if name == "train_style_prior":
        from jaxtalk.training.style_prior import StylePriorTask
        return StylePriorTask.from_config(cfg)
    from jaxtalk.training.svp import SVPTask
    return SVPTask.from_config(cfg)


def _write_latent_scale(cfg: Any, result: loop.TrainResult, root: Path) -> None:
    """The VAE's latent scale over 16 whole global batches (the same on every process; process 0 writes it)."""
    import numpy as np

    from jaxtalk import distributed
    from jaxtalk.training import data as data_lib
    from jaxtalk.training.vae import VAETask, latent_scale

    task = VAETask.from_config(cfg)
    with data_lib.process_rows(np.arange(cfg.data.batch_size)):
        it = data_lib.make_iterator(task.dataset(), 0)
    batches = [{k: v for k, v in next(it).items() if k in task.device_fields()} for _ in range(16)]
    scale = latent_scale(task, distributed.host_copy(result.state.params), batches)
    if distributed.is_main():
        (root / "vae" / "latent_scale.json").write_text(json.dumps({"scaling_factor": scale, "batches": 16}))
    distributed.sync("svp_stack latent scale")
    log.info("vae latent scaling_factor %.4f", scale)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_stack(root: str | Path, scale: float = 1.0, only: tuple[str, ...] = (), extra: tuple[str, ...] = ()
                ) -> dict:
    """Train (or resume) every run of the stack under `root` (or the runs named in `only`); returns the stack record
    (also in stack.json). Multi-process: each run joins the run described by its `train.distributed` keys (the
    first one starts it, `jaxtalk.distributed.initialize`); process 0 alone writes stack.json."""
    from jaxtalk import distributed

    names = [run.name for run in RUNS]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: not a run of the stack (runs: {', '.join(names)}); "
                         "dotted overrides go before --only or after --")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / STACK_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"runs": {}}
    record.update({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": _git_commit(),
                   "scale": scale, "train_seed": TRAIN_SEED, "eval_seed": EVAL_SEED})
    for run in RUNS:
        if only and run.name not in only:
            continue
        cfg, overrides = run_config(run, root, scale, extra)
        distributed.initialize(cfg.train.distributed)
        workdir = Path(cfg.train.workdir)
        if _done(workdir, cfg.train.steps) and (run.name != "vae" or (root / "vae" / "latent_scale.json").is_file()):
            log.info("%s: complete (%d steps), skipped", run.name, cfg.train.steps)
            continue
        t0 = time.time()
        result = loop.train(_task(cfg), cfg)
        if run.name == "vae":
            _write_latent_scale(cfg, result, root)
        entry = record["runs"].setdefault(run.name, {"wall_s": 0.0})
        entry.update({"preset": run.preset, "overrides": overrides, "steps": cfg.train.steps,
                      "final": result.history[-1] if result.history else None})
        entry["wall_s"] = float(entry.get("wall_s", 0.0)) + time.time() - t0
        if distributed.is_main():
            record_path.write_text(json.dumps(record, indent=1))
    return record


STYLE_STATS_FILE = "style_stats.json"


def style_token_stats(root: str | Path, windows: int = 200, extra: tuple[str, ...] = (),
                      prior: str = "style_prior") -> dict:
    """Per-dimension mean and std of the trained style prior's tokens (mu) over `windows` stage-3 training windows
    (training identities only), written to `<root>/<prior>/style_stats.json`: the values of the stage-3 overrides
    `model.unet.style_mean` / `model.unet.style_std` (`jaxtalk.svp.video_unet.standardize_style`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxtalk.nn.standardize import population_statistics
    from jaxtalk.training.sources import run_params
    from jaxtalk.training.svp import SVPTask

    root = Path(root).resolve()
    stage3 = next(run for run in RUNS if run.name == "stage3")
    cfg, _ = run_config(stage3, root, 1.0, extra)
    task = SVPTask.from_config(cfg)
    extractor = task.modules()["style_extractor"]
    params = run_params(root / prior)["style_extractor"]
    fn = jax.jit(lambda p, e, a: extractor.apply({"params": p}, e, a).mu)
    batches = iter(task.dataset())
    mus = []
    for _ in range(windows):
        b = next(batches)
        mus.append(np.asarray(fn(params, jnp.asarray(b["style_exp"], jnp.float32),
                                 jnp.asarray(b["style_audio"], jnp.float32))).reshape(-1, cfg.model.unet.style_dim))
    mu = np.concatenate(mus)
    mean, std = population_statistics(mu)
    stats = {"style_mean": list(mean), "style_std": list(std), "windows": windows, "tokens": int(mu.shape[0]),
             "mean_norm": float(np.linalg.norm(mean)),
             "mean_deviation_norm": float(np.linalg.norm(mu - np.asarray(mean), axis=1).mean())}
    (root / prior / STYLE_STATS_FILE).write_text(json.dumps(stats, indent=1))
    return stats


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description="Train the synthetic-domain SVP stack from nothing.")
    parser.add_argument("--root", default="outputs/svp_stack", help="folder of the stack's runs and data")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every run's step count")
    parser.add_argument("--only", nargs="*", default=(), help="train only these runs (names in order; put overrides "
                        "before --only or after --)")
    parser.add_argument("--style-stats", type=int, default=0, metavar="WINDOWS",
                        help="instead of training: write the trained style prior's token mean / std over this many "
                             "stage-3 windows to <root>/style_prior/style_stats.json and print the stage-3 "
                             "overrides that standardise the style tokens")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every run")
    from jaxtalk import distributed

    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    distributed.announce(args.process_id, args.num_processes)
    distributed.setup_logging(logging.INFO)
    extra = (*args.overrides, *distributed.overrides_from_args(args, "train.distributed"))
    with distributed.entry_point(parser.prog):  # bad config / data: one line, exit 2, no traceback
        if args.style_stats:
            stats = style_token_stats(args.root, args.style_stats, tuple(args.overrides))
            print(f"model.unet.style_mean={stats['style_mean']} model.unet.style_std={stats['style_std']}")
            return stats
        return train_stack(args.root, args.scale, tuple(args.only), extra)


# ------------------------------------------------------------------------------------------------ export

SAMPLING_PRESET = "svp_synthetic"
ABLATION_FILE = "deterministic_prior.safetensors"


def _flat(tree: Any) -> dict[str, Any]:
    from flax import traverse_util

    return traverse_util.flatten_dict(tree, sep="/")


def export_models(root: str | Path, out_dir: str | Path, dtype: str = "float16") -> Path:
    """The trained stack as an SVP bundle (`jaxtalk.interop.bundle`: orbax params + config.yaml + manifest.json
    with the run record), params stored in `dtype` (restored as float32). Components: unet,
    reference_net, kps_guider, audio_projection, style_extractor from stage 3; the whole VAE (with its decoder)
    from the VAE run. The deterministic-prior ablation (stage3_det's style attention + its extractor) goes beside
    it as one safetensors file, which `bench/fidelity_svp.py` reads."""
    import jax
    import numpy as np
    from safetensors.numpy import save_file

    from jaxtalk.svp import loading as svp_loading
    from jaxtalk.svp import models as svp_models
    from jaxtalk.training.sources import run_params

    root, out_dir = Path(root).resolve(), Path(out_dir)
    cfg = config_lib.load(SAMPLING_PRESET, [f"vae.scaling_factor={latent_scale_of(root)}"])
    stage3, vae = run_params(root / "stage3"), run_params(root / "vae")
    params = {name: stage3[name] for name in ("unet", "reference_net", "kps_guider", "audio_projection",
                                              "style_extractor")}
    params["vae"] = vae["vae"]
    modules = svp_models.build_modules(cfg)
    target = svp_models.abstract_params(cfg, modules)
    want, have = _flat(target), _flat(params)
    bad = sorted(set(want) ^ set(have)) + [k for k in want if k in have and tuple(want[k].shape) != have[k].shape]
    if bad:
        raise ValueError(f"the trained runs do not fill the sampling config {SAMPLING_PRESET}: {bad[:5]} "
                         f"({len(bad)} keys)")
    cast = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
    out_dir.mkdir(parents=True, exist_ok=True)
    det = run_params(root / "stage3_det")
    flat_unet = _flat(det["unet"])
    delta = {f"unet/{k}": np.asarray(v).astype(dtype) for k, v in flat_unet.items()
             if "/attn_style/" in f"/{k}" or "/norm_style/" in f"/{k}"}
    delta.update({f"style_extractor/{k}": np.asarray(v).astype(dtype)
                  for k, v in _flat(det["style_extractor"]).items()})
    save_file(delta, str(out_dir / ABLATION_FILE))

    record = json.loads((root / STACK_FILE).read_text()) if (root / STACK_FILE).is_file() else {}
    old = out_dir / "manifest.json"
    evaluation = json.loads(old.read_text()).get("evaluation") if old.is_file() else None  # bench/fidelity_svp.py's
    svp_loading.save_models(svp_models.SVPModels(cfg, modules, cast), out_dir, files=[ABLATION_FILE],
                            source="svp_synthetic: trained on jaxtalk.data.synthetic (train/svp_stack.py)",
                            model="svp_synthetic", preset=SAMPLING_PRESET, params_dtype=dtype, training=record,
                            evaluation=evaluation)
    return out_dir


def plot_curves(root: str | Path, path: str | Path) -> Path:
    """One PNG of every run's loss over its steps (running mean of 5 logged points), log scale."""
    from jaxtalk.plot import loss_curves

    root = Path(root)
    curves = {}
    for run in RUNS:
        metrics_path = root / run.name / loop.METRICS_NAME
        if metrics_path.is_file():
            rows = loop.read_metrics(root / run.name)
            curves[run.name] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    if not curves:
        raise FileNotFoundError(f"{root}: no run of the SVP stack has metrics yet")
    positive = {k: v for k, v in curves.items() if min(v[1]) > 0}
    return loss_curves(positive, path, title="SVP synthetic stack: training loss per run", log_y=True)

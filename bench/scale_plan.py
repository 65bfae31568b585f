"""The paper-size memory / compute plan, measured by XLA rather than guessed: AOT-compile train steps on simulated
meshes and read the compiled programs' memory and FLOP counts.

    python bench/scale_plan.py                                    # every model x mesh x split x dtype x remat
    python bench/scale_plan.py --models style_e --devices 8 16    # a subset
    python bench/scale_plan.py --models svp_stage1 --devices 8 --splits fsdp --dtypes bfloat16 --remats full
    python bench/scale_plan.py --plan svp --budget-s 7200          # the SVP rows that matter most, first

For each model (`svp_stage1`, `svp_stage2`: the `train_svp_stage{1,2}_paper` presets, SD1.5-size UNet +
ReferenceNet (+ AnimateDiff motion modules and audio attention in stage 2) at 512x512; `style_e`:
`train_style_e_paper`; `svp_sample`: one guided UNet call of the sampler on a 24-frame context window at
`svp_paper` sizes), each device count (a mesh over the first N of `--sim-devices` simulated CPU devices) and
each (data, fsdp, tensor) split, the loop's real train step (`jaxtalk.training.loop.guarded_step` over the task's
loss with the frozen params behind stop_gradient, clipped AdamW on the trainable params) is lowered on abstract
inputs — no weights, no data — with `--per-device-batch` samples per data x fsdp device, and compiled. Rows give:
per-device memory from `compiled.memory_analysis()` (arguments + outputs - aliased + temporaries: the peak of the
one SPMD program each device runs), FLOPs per device per step from `cost_analysis()`, and on an H100 (989 TFLOP/s
dense bf16) at an assumed 50 % efficiency the implied step time, samples/s and MFU (the per-sample FLOPs of the
least redundant split times the global batch, over N x peak x step time: below 50 % where a split repeats work
on several devices).

The numbers are those of XLA's CPU compiler for the partitioned programs (the same SPMD partitioning as on GPU;
fusion and temporary buffers differ on GPU, so treat memory as an estimate within tens of percent). Written to
bench/results/scale_plan.json and .md (`--out`), rewritten after every row, so a run stopped early keeps what it
measured. `--remats` compiles the train steps with `model.remat` (jax.checkpoint on every UNet / ReferenceNet
block; Style-E and the sampler have none). `--fast-compile` (default on) skips LLVM's expensive passes: the
program, its buffer assignment (memory) and its HLO cost analysis are those of the normal compile, only the CPU
machine code is less optimised, which is irrelevant here. `--budget-s` stops starting new compiles after that
many seconds; configurations not compiled are listed under `not_compiled` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

H100_BF16_FLOPS = 989e12
EFFICIENCY = 0.5
SPLITS = ("data", "fsdp", "fsdp_tensor")
COMPILER_OPTIONS: dict = {}


def _chunk_value() -> str:
    return "null" if ATTENTION["chunk"] is None else str(ATTENTION["chunk"])


def _split(name: str, n: int) -> tuple[int, int, int]:
    if name == "data":
        return n, 1, 1
    if name == "fsdp":
        return 1, n, 1
    if name == "fsdp_tensor":
        tensor = 8 if n >= 64 else 2
        return 1, n // tensor, tensor
    raise ValueError(f"split {name!r}: choose from {SPLITS}")


ATTENTION: dict = {"chunk": None}  # --attention-chunk: model.attention_chunk of the SVP rows


def _task(model: str, dtype: str, remat: str = "none"):
    from jaxtalk import config
    from jaxtalk.training.style_e import StyleETask
    from jaxtalk.training.svp import SVPTask

    if model.startswith("svp_stage"):
        cfg = config.load(f"train_svp_stage{model[-1]}_paper", ["init=[]", f"model.dtype={dtype}",
                                                                 f"model.remat={remat}",
                                                                 f"model.attention_chunk={_chunk_value()}"])
        return cfg, SVPTask.from_config(cfg)
    if model == "style_e":
        cfg = config.load("train_style_e_paper", [f"dtype={dtype}"])
        return cfg, StyleETask.from_config(cfg)
    raise ValueError(f"model {model!r}: choose svp_stage1, svp_stage2 or style_e")


def _batch(model: str, cfg, task, b: int) -> dict:
    import jax
    import jax.numpy as jnp

    sds = jax.ShapeDtypeStruct
    if model == "style_e":
        w = cfg.model.window
        return {"x0": sds((b, w, 64), jnp.float32), "sparse": sds((b, w, 64), jnp.float32),
                "text": sds((b, cfg.model.text_dim), jnp.float32)}
    d = cfg.data
    f, s, w, a = d.frames, d.image_size, d.clip_window, cfg.audio.feature_dim
    window = cfg.model.audio_projection.window
    batch = {"frames": sds((b, f, s, s, 3), jnp.uint8), "reference": sds((b, s, s, 3), jnp.uint8),
             "kps": sds((b, f, s, s, 3), jnp.uint8), "audio": sds((b, f, window, a), jnp.float32),
             "style_exp": sds((b, w, 64), jnp.float32), "style_audio": sds((b, w, a), jnp.float32),
             "expression": sds((b, f, 64), jnp.float32), "mouth_mask": sds((b, f, s, s), jnp.float32)}
    return {k: x for k, x in batch.items() if k in task.device_fields()}


def abstract_state(task, opt_cfg, mesh):
    """ShapeDtypeStructs (with shardings) of the sharded TrainState `loop.make_state` would create."""
    import flax.linen as nn
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxtalk import parallel
    from jaxtalk.training import loop
    from jaxtalk.training import state as state_lib

    _, tx = loop.optimizer_of(task, opt_cfg)
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        boxed = jax.eval_shape(task.init_variables, jax.random.key(0))
        shardings = parallel.logical_to_shardings(boxed, mesh)["params"]
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed)["params"], shardings)
    keys_of = lambda path: tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    by_path = {keys_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(lambda p: state_lib.create_state(p, tx), params)

    def place(path, leaf):
        keys = keys_of(path)
        for n in range(len(keys)):  # the param whose path ends this leaf's path (as create_sharded_state)
            param = by_path.get(keys[n:])
            if param is not None and param.shape == leaf.shape:
                return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=param.sharding)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated)

    return jax.tree_util.tree_map_with_path(place, abstract)


def lower_train_step(model: str, cfg, task, mesh, global_batch: int):
    """`task`'s sharded train step lowered on `mesh` from abstract state and batch (no array is allocated);
    returns (lowered, (state, batch)). Shared with bench/compile_time.py."""
    import flax.linen as nn
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxtalk import parallel
    from jaxtalk.training import loop
    from jaxtalk.training import state as state_lib

    state = abstract_state(task, cfg.optimizer, mesh)
    batch = _batch(model, cfg, task, global_batch)
    batch_sh = {k: parallel.batch_sharding(mesh, len(v.shape)) for k, v in batch.items()}
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh[k]) for k, v in batch.items()}
    replicated = NamedSharding(mesh, P())
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    mask, _ = loop.optimizer_of(task, cfg.optimizer)
    step = loop.guarded_step(state_lib.make_train_step(lambda p, b, r: task.loss(loop.freeze(p, mask), b, r)),
                             True)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        lowered = jax.jit(step, in_shardings=(state_sh, batch_sh, replicated), out_shardings=(state_sh, replicated),
                          donate_argnums=0).lower(state, batch, rng)
    return lowered, (state, batch)


def compile_step(model: str, devices: int, split: str, dtype: str, per_device_batch: int, remat: str = "none",
                 lower_only: bool = False) -> dict:
    """One row: compile the train step and read its memory and cost analyses."""
    import jax

    from jaxtalk import parallel

    data, fsdp, tensor = _split(split, devices)
    mesh = parallel.make_mesh(data, fsdp, tensor, devices=jax.devices()[:devices])
    cfg, task = _task(model, dtype, remat)
    global_batch = per_device_batch * data * fsdp
    t0 = time.perf_counter()
    lowered, (state, batch) = lower_train_step(model, cfg, task, mesh, global_batch)
    t1 = time.perf_counter()
    print(f"  lowered {model} {devices} {split} {dtype} remat={remat} in {t1 - t0:.0f} s", file=sys.stderr,
          flush=True)
    if lower_only:
        return _lowered_row(model, devices, split, (data, fsdp, tensor), dtype, global_batch, lowered,
                            (state, batch), t1 - t0, remat)
    compiled = lowered.compile(COMPILER_OPTIONS or None)
    t2 = time.perf_counter()
    return _row(model, devices, split, (data, fsdp, tensor), dtype, global_batch, compiled, t1 - t0, t2 - t1,
                remat)


def _sample_step(devices: int, split: str, dtype: str, per_device_batch: int):
    """(fn, args, shardings, global batch) of one guided SVP denoising call on a context window at the `svp_paper`
    sizes: `svp.pipeline.window_prediction` (Head-Kps guider, then the video UNet on the [uncond, cond] pair with
    the ReferenceNet bank, audio tokens and style tokens), as the sampler runs it once per window and step."""
    import types

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxtalk import config, parallel
    from jaxtalk.svp import models as svp_models
    from jaxtalk.svp import pipeline as svp_pipeline
    from jaxtalk.svp.config import SVPConfig

    data, fsdp, tensor = _split(split, devices)
    mesh = parallel.make_mesh(data, fsdp, tensor, devices=jax.devices()[:devices])
    cfg = config.load("svp_paper", [f"dtype={dtype}", f"attention_chunk={_chunk_value()}"], cls=SVPConfig)
    mods = svp_models.build_modules(cfg)
    params = svp_models.abstract_params(cfg, mods, mesh)
    params = {k: params[k] for k in ("unet", "kps_guider")}
    models = types.SimpleNamespace(config=cfg, unet=mods["unet"], kps_guider=mods["kps_guider"])
    b, w = per_device_batch * data * fsdp, cfg.context.frames
    f = 2 ** (len(cfg.vae.block_out_channels) - 1)
    h, wd = cfg.video.height, cfg.video.width
    u = cfg.unet.unet
    cdt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    bank = jax.eval_shape(lambda p: mods["reference_net"].apply(
        {"params": p}, jnp.zeros((b, h // f, wd // f, u.in_channels), cdt), jnp.zeros((b,)),
        jnp.zeros((b, 1, u.cross_attention_dim), cdt))[1],
        svp_models.abstract_params(cfg, mods)["reference_net"])
    ap = cfg.audio_projection
    sds = jax.ShapeDtypeStruct
    args = {"x": sds((b, w, h // f, wd // f, u.in_channels), cdt), "audio": sds((b, w, ap.num_queries, ap.output_dim),
            cdt), "kps": sds((b, w, h, wd, 3), jnp.uint8), "bank": tuple(bank),
            "style": sds((b, 1, cfg.unet.style_dim), jnp.float32) if cfg.unet.use_style else None}
    shard = lambda x: None if x is None else sds(x.shape, x.dtype, sharding=parallel.batch_sharding(mesh, x.ndim))
    args = jax.tree.map(shard, args, is_leaf=lambda x: x is None or isinstance(x, jax.ShapeDtypeStruct))
    replicated = NamedSharding(mesh, P())
    scalars = {k: sds((), jnp.float32, sharding=replicated) for k in ("guidance_scale", "reference_weight",
                                                                         "audio_weight", "style_weight")}

    def fn(params, args, t, scalars):
        return svp_pipeline.window_prediction(models, params, args["x"], t, args["audio"], args["kps"],
                                              args["bank"], args["style"], scalars, True)

    t = sds((), jnp.float32, sharding=replicated)
    return mesh, fn, (params, args, t, scalars), b


def compile_sample(devices: int, split: str, dtype: str, per_device_batch: int, lower_only: bool = False) -> dict:
    """One row for the sampler: a guided UNet call on one context window (no optimiser state, no gradients)."""
    import flax.linen as nn
    import jax

    from jaxtalk import parallel

    mesh, fn, args, b = _sample_step(devices, split, dtype, per_device_batch)
    data, fsdp, tensor = _split(split, devices)
    t0 = time.perf_counter()
    with nn.logical_axis_rules(parallel.LOGICAL_RULES), jax.set_mesh(mesh):
        lowered = jax.jit(fn).lower(*args)
        t1 = time.perf_counter()
        print(f"  lowered svp_sample {devices} {split} {dtype} in {t1 - t0:.0f} s", file=sys.stderr, flush=True)
        if lower_only:
            return _lowered_row("svp_sample", devices, split, (data, fsdp, tensor), dtype, b, lowered, args,
                                t1 - t0)
        compiled = lowered.compile(COMPILER_OPTIONS or None)
    return _row("svp_sample", devices, split, (data, fsdp, tensor), dtype, b, compiled, t1 - t0,
                time.perf_counter() - t1)


def _row(model: str, devices: int, split: str, mesh: tuple, dtype: str, global_batch: int, compiled,
         lower_s: float, compile_s: float, remat: str = "none") -> dict:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0))
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    step_s = flops / (EFFICIENCY * H100_BF16_FLOPS)
    return {"model": model, "devices": devices, "split": split, "source": "compiled",
            "attention_chunk": None if model == "style_e" else ATTENTION["chunk"],
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh)), "dtype": dtype, "remat": remat,
            "global_batch": global_batch, "per_device_gib": peak / 2**30,
            "arguments_gib": mem.argument_size_in_bytes / 2**30, "temporaries_gib": mem.temp_size_in_bytes / 2**30,
            "flops_per_device": flops, "h100_step_s_at_50pct": step_s,
            "samples_per_s": global_batch / step_s if step_s else None, "lower_s": lower_s, "compile_s": compile_s}


def _shard_bytes(tree) -> int:
    """Bytes of one device's shards of the abstract inputs (their shardings as given to `lower`)."""
    import jax
    import numpy as np

    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def _lowered_row(model: str, devices: int, split: str, mesh: tuple, dtype: str, global_batch: int, lowered,
                 inputs, lower_s: float, remat: str = "none") -> dict:
    """A row from the lowered (not compiled) step: FLOPs of the whole step from `Lowered.cost_analysis()` (the
    global program before partitioning) divided evenly over the devices, and the per-device bytes of the inputs
    (params, optimiser state, batch) from their shardings; temporaries are unknown without the compile."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0)) / devices
    step_s = flops / (EFFICIENCY * H100_BF16_FLOPS)
    args = _shard_bytes(inputs)
    return {"model": model, "devices": devices, "split": split, "source": "lowered",
            "attention_chunk": None if model == "style_e" else ATTENTION["chunk"],
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh)), "dtype": dtype, "remat": remat,
            "global_batch": global_batch, "per_device_gib": None, "arguments_gib": args / 2**30,
            "temporaries_gib": None, "flops_per_device": flops, "h100_step_s_at_50pct": step_s,
            "samples_per_s": global_batch / step_s if step_s else None, "lower_s": lower_s, "compile_s": None}


def add_mfu(rows: list[dict]) -> None:
    """MFU of each row: the model's per-sample FLOPs — the least total (all devices) per sample over the rows
    without remat for the same model and dtype, i.e. the least redundant program — times the global batch, over
    N x peak x the row's step time. 50 % for the least redundant split by construction; lower where a split
    repeats work (replicated optimiser updates, activations not split over `tensor`) or remat recomputes it."""
    for r in rows:
        same = [q for q in rows if (q["model"], q["dtype"], q.get("attention_chunk")) ==
                (r["model"], r["dtype"], r.get("attention_chunk"))
                and q["flops_per_device"] and q.get("remat", "none") == "none"
                and q.get("source", "compiled") == r.get("source", "compiled")]
        if not same or not r["h100_step_s_at_50pct"]:
            r["mfu"] = None
            continue
        per_sample = min(q["flops_per_device"] * q["devices"] / q["global_batch"] for q in same)
        r["mfu"] = per_sample * r["global_batch"] / (r["devices"] * H100_BF16_FLOPS * r["h100_step_s_at_50pct"])


def table(rows: list[dict]) -> str:
    head = ("| model | GPUs | data x fsdp x tensor | dtype | remat | attention | batch | measured | GiB / device "
            "(params + optimiser + batch) | TFLOP / device / step | H100 step (ms, 50 %) | samples/s | MFU |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        m = r["mesh"]
        mfu = f"{100 * r['mfu']:.0f} %" if r.get("mfu") is not None else "-"
        peak = "-" if r["per_device_gib"] is None else f"{r['per_device_gib']:.3g}"
        source = r.get("source", "compiled")
        what = "compiled" if source == "compiled" else "lowered (FLOPs / N, no temporaries)"
        chunk = r.get("attention_chunk")
        attention = "-" if r["model"] == "style_e" else ("whole" if chunk is None else f"chunk {chunk}")
        lines.append(f"| {r['model']} | {r['devices']} | {m['data']} x {m['fsdp']} x {m['tensor']} | {r['dtype']} | "
                     f"{r.get('remat', 'none')} | {attention} | {r['global_batch']} | {what} | {peak} "
                     f"({r['arguments_gib']:.3g}) | {r['flops_per_device'] / 1e12:.3g} | "
                     f"{r['h100_step_s_at_50pct'] * 1e3:.3g} | {r['samples_per_s']:.3g} | {mfu} |")
    return head + "\n".join(lines) + "\n"


# The SVP rows in order of use: the bf16 layouts a first run picks from (fsdp on one 8-GPU host, the sampler
# replicated), the same with remat, then more devices, other splits, float32, Style-E.
SVP_PLAN = (
    ("svp_stage1", 8, "fsdp", "bfloat16", "none"),
    ("svp_stage2", 8, "fsdp", "bfloat16", "none"),
    ("svp_sample", 8, "data", "bfloat16", "none"),
    ("svp_stage1", 8, "fsdp", "bfloat16", "full"),
    ("svp_stage2", 8, "fsdp", "bfloat16", "full"),
    ("svp_stage1", 64, "fsdp", "bfloat16", "none"),
    ("svp_stage2", 64, "fsdp", "bfloat16", "none"),
    ("svp_stage1", 16, "fsdp_tensor", "bfloat16", "none"),
    ("svp_stage2", 16, "fsdp_tensor", "bfloat16", "none"),
    ("svp_sample", 8, "fsdp", "bfloat16", "none"),
    ("svp_stage1", 8, "data", "bfloat16", "none"),
    ("svp_stage1", 16, "fsdp", "bfloat16", "none"),
    ("svp_stage2", 16, "fsdp", "bfloat16", "none"),
    ("svp_stage1", 8, "fsdp", "float32", "none"),
    ("svp_stage2", 8, "fsdp", "float32", "none"),
    ("svp_stage2", 64, "fsdp_tensor", "bfloat16", "full"),
    ("svp_sample", 8, "data", "float32", "none"),
    ("style_e", 8, "data", "bfloat16", "none"),
    ("style_e", 8, "fsdp", "bfloat16", "none"),
)


def _planned(args: argparse.Namespace) -> list[tuple]:
    if args.plan == "svp":
        return [SVP_PLAN[i] for i in (args.plan_rows or range(len(SVP_PLAN)))]
    out = []
    for model in args.models:
        no_remat = model in ("style_e", "svp_sample")  # no UNet blocks to checkpoint / no gradients
        for n in args.devices:
            for split in args.splits:
                for dtype in args.dtypes:
                    for remat in (["none"] if no_remat else args.remats):
                        out.append((model, n, split, dtype, remat))
    return out


def _write(out: pathlib.Path, meta: dict, rows: list[dict], skipped: list[dict]) -> None:
    add_mfu(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "not_compiled": skipped}, indent=1))
    text = table(rows)
    if skipped:
        text += "\nNot compiled:\n\n" + "\n".join(
            f"- {s['model']} {s['devices']} {s['split']} {s['dtype']} remat={s['remat']}"
            + (f" attention_chunk={s['attention_chunk']}" if s.get("attention_chunk") else "") + f": {s['reason']}"
            for s in skipped) + "\n"
    out.with_suffix(".md").write_text(text)


def _order(entry: dict) -> tuple:
    key = (entry["model"], entry["devices"], entry["split"], entry["dtype"], entry.get("remat", "none"))
    return (SVP_PLAN.index(key) if key in SVP_PLAN else len(SVP_PLAN), key)


def combine(files: list[pathlib.Path], out: pathlib.Path) -> int:
    """One table from several runs' JSON (e.g. a plan split over processes); a configuration measured in any
    run is not listed as not compiled."""
    parts = [json.loads(f.read_text()) for f in files]
    key = lambda r: (r["model"], r["devices"], r["split"], r["dtype"], r.get("remat", "none"),
                     r.get("attention_chunk"))
    rows = [r for p in parts for r in p["rows"]]
    compiled = {key(r) for r in rows if r.get("source", "compiled") == "compiled"}
    rows = sorted((r for r in rows if r.get("source", "compiled") == "compiled" or key(r) not in compiled),
                  key=_order)
    done = compiled
    skipped = [s for p in parts for s in p.get("not_compiled", [])]
    for p in parts:  # a run stopped while it compiled: that configuration did not finish in time
        run = p["meta"].get("in_progress")
        if run:
            what = {k: run[k] for k in ("model", "devices", "split", "dtype", "remat")}
            skipped.append({**what, "reason": f"the compile started at {run['started_utc']} UTC did not finish "
                            "before the run was stopped (the 2-core host was shared with other jobs)"})
    merged: dict[tuple, dict] = {}  # one entry per configuration, its reasons joined
    for s in skipped:
        k = (s["model"], s["devices"], s["split"], s["dtype"], s["remat"], s.get("attention_chunk"))
        if k not in done:
            if k in merged and s["reason"] not in merged[k]["reason"]:
                merged[k]["reason"] += "; " + s["reason"]
            merged.setdefault(k, dict(s))
    skipped = sorted(merged.values(), key=_order)
    meta = {**parts[0]["meta"], "combined_from": [str(f) for f in files],
            "wall_s_per_run": [p["meta"].get("wall_s") for p in parts]}
    meta.pop("wall_s", None)
    meta.pop("in_progress", None)
    _write(out, meta, rows, skipped)
    print(out.with_suffix(".md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    from jaxtalk.backbones.sd_unet import REMAT_POLICIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["svp_stage1", "svp_stage2", "style_e", "svp_sample"],
                   choices=("svp_stage1", "svp_stage2", "style_e", "svp_sample"))
    p.add_argument("--devices", nargs="+", type=int, default=[8, 16, 64])
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=("bfloat16", "float32"))
    p.add_argument("--remats", nargs="+", default=["none", "full"], choices=REMAT_POLICIES,
                   help="model.remat of the SVP train steps")
    p.add_argument("--plan", choices=("svp",), help="instead of the product above: the SVP rows in order of use")
    p.add_argument("--plan-rows", nargs="+", type=int, help="with --plan: only these rows of it (0-based), e.g. "
                   "to split the plan over several processes (then --combine their outputs)")
    p.add_argument("--combine", nargs="+", metavar="JSON", help="merge the outputs of earlier runs into --out "
                   "(rows in plan order, MFU recomputed) and exit")
    p.add_argument("--lower-only", action="store_true", help="lower without compiling: whole-step FLOPs from "
                   "Lowered.cost_analysis() and per-device input bytes, no temporaries (minutes instead of hours)")
    p.add_argument("--budget-s", type=float, default=None, help="start no compile after this many seconds")
    p.add_argument("--fast-compile", action=argparse.BooleanOptionalAction, default=True,
                   help="skip LLVM's expensive passes (same program, memory and cost analysis; faster compile)")
    p.add_argument("--per-device-batch", type=int, default=1)
    p.add_argument("--attention-chunk", type=int, default=None,
                   help="model.attention_chunk of the SVP rows: query-chunked, checkpointed attention, whose memory "
                   "is that of a flash kernel (the cuDNN one that model.attention=auto picks on an H100 for "
                   "bfloat16); without it XLA:CPU materialises every (batch, heads, queries, keys) attention")
    p.add_argument("--sim-devices", type=int, default=64, help="simulated CPU devices (>= the largest mesh)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "scale_plan"), help="path stem of .json/.md")
    args = p.parse_args(argv)
    if args.combine:
        return combine([pathlib.Path(f) for f in args.combine], pathlib.Path(args.out))
    planned = _planned(args)
    if max(c[1] for c in planned) > args.sim_devices:
        p.error(f"{max(c[1] for c in planned)} devices exceed --sim-devices {args.sim_devices}")
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["JAX_NUM_CPU_DEVICES"] = str(args.sim_devices)
    import jax

    jax.config.update("jax_num_cpu_devices", args.sim_devices)
    ATTENTION["chunk"] = args.attention_chunk
    if args.fast_compile:
        COMPILER_OPTIONS.update(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)
    out = pathlib.Path(args.out)
    meta = {"jax": jax.__version__, "backend": "cpu (simulated devices)", "host_cpus": os.cpu_count(),
            "peak_flops": H100_BF16_FLOPS, "efficiency": EFFICIENCY, "compiler_options": dict(COMPILER_OPTIONS),
            "args": vars(args)}
    rows: list[dict] = []
    skipped: list[dict] = []
    t0 = time.perf_counter()
    for model, n, split, dtype, remat in planned:
        what = dict(model=model, devices=n, split=split, dtype=dtype, remat=remat,
                    attention_chunk=None if model == "style_e" else args.attention_chunk)
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            skipped.append({**what, "reason": f"not started: the {args.budget_s:.0f} s compile budget of this run "
                            "was spent on the rows above"})
            _write(out, meta, rows, skipped)
            continue
        meta["in_progress"] = {**what, "started_utc": time.strftime("%H:%M:%S", time.gmtime()),
                               "after_s": round(time.perf_counter() - t0)}
        _write(out, meta, rows, skipped)
        try:
            if model == "svp_sample":
                row = compile_sample(n, split, dtype, args.per_device_batch, args.lower_only)
            else:
                row = compile_step(model, n, split, dtype, args.per_device_batch, remat, args.lower_only)
        except Exception as e:  # noqa: BLE001 - one configuration failing must not lose the others
            skipped.append({**what, "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
            print(f"  {what}: failed: {skipped[-1]['reason']}", file=sys.stderr, flush=True)
        else:
            rows.append(row)
            print(json.dumps(row), flush=True)
        meta.pop("in_progress")
        meta["wall_s"] = time.perf_counter() - t0
        _write(out, meta, rows, skipped)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

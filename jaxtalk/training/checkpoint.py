"""Orbax checkpoints of a sharded TrainState, with the resolved config (and data iterator state) beside it."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxtalk import config as config_lib


class Checkpointer:
    """Save / restore `TrainState`s under `directory/<step>/` keeping the newest `max_to_keep`.

    Restores directly into the shardings of an abstract state, so each process reads only its shards.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, save_interval_steps: int = 1):
        self.directory = pathlib.Path(directory).resolve()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                                 create=True),
            item_names=("state", "extra"),
        )

    def save(self, step: int, state: Any, cfg: Any = None, extra: dict | None = None, force: bool = False) -> bool:
        """Write the state's pytree part; `extra` (JSON-able, e.g. data iterator state) and the config beside it."""
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(_arrays(state)),
                                    extra=ocp.args.JsonSave(extra or {})),
            force=force,
        )
        self.manager.wait_until_finished()
        if saved and cfg is not None and jax.process_index() == 0:
            config_lib.save(cfg, self.directory / "config.yaml")
        return saved

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore into the structure/shardings of `abstract_state` (a TrainState of arrays or SDS)."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        target = jax.tree.map(_as_sds, _arrays(abstract_state))
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                  extra=ocp.args.JsonRestore()))
        restored = out["state"]
        return abstract_state.replace(**restored) if hasattr(abstract_state, "replace") else restored, out["extra"]

    def close(self) -> None:
        self.manager.close()


def _arrays(state: Any) -> Any:
    """The array fields of a TrainState as a dict (the optimiser object itself is not data)."""
    if hasattr(state, "opt_state") and hasattr(state, "params"):
        return {"step": state.step, "params": state.params, "opt_state": state.opt_state}
    return state


def _as_sds(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

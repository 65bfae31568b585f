"""What a training run shows while it runs: a tqdm bar on a terminal, one line per logged step elsewhere.

    progress = TrainProgress("style_e", total=1000, start=0)
    progress.advance(step)                 # every step (cheap: no device sync)
    progress.log(row)                      # at log steps: row has loss, samples_per_sec, steps_per_sec
    progress.close()

On a terminal the bar shows steps done, elapsed time, ETA and steps/s, with the last logged loss and samples/s
beside it. When the output is a file or a CI log (not a TTY), a bar's carriage returns would be noise, so each
logged step prints one line instead: `[style_e] step 200/1000 loss 0.0123 ... | 48.1 samples/s, ETA 0:04:10`.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from typing import IO, Any

SHOWN_LAST = ("steps_per_sec", "samples_per_sec")


def format_eta(seconds: float) -> str:
    """`H:MM:SS` (or `?` when unknown)."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    return str(datetime.timedelta(seconds=round(seconds)))


class TrainProgress:
    """Progress of one training run from `start` to `total` steps (see the module doc). `bar=None` picks the
    tqdm bar when `file` is a terminal; `enabled=False` prints nothing (other processes, `train.progress=false`)."""

    def __init__(self, name: str, total: int, start: int = 0, *, enabled: bool = True, file: IO[str] | None = None,
                 bar: bool | None = None):
        self.name, self.total, self.enabled = name, total, enabled
        self.file = file if file is not None else sys.stderr
        use_bar = bar if bar is not None else bool(getattr(self.file, "isatty", lambda: False)())
        self._bar: Any = None
        if enabled and use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=name, unit="step", file=self.file, dynamic_ncols=True,
                             mininterval=0.5, smoothing=0.1)

    def advance(self, step: int) -> None:
        """The run has dispatched `step` (steps finish in order on the device; log steps synchronise)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def log(self, row: Mapping[str, float]) -> None:
        """A logged metrics row (`step`, losses, `steps_per_sec`, `samples_per_sec`)."""
        if not self.enabled:
            return
        step = int(row["step"])
        speed = f"{row['samples_per_sec']:.1f} samples/s" if "samples_per_sec" in row else ""
        if self._bar is not None:
            loss = f"loss {row['loss']:.4g}" if "loss" in row else ""
            self._bar.set_postfix_str(", ".join(s for s in (loss, speed) if s), refresh=False)
            self.advance(step)
            return
        rate = row.get("steps_per_sec", 0.0)
        eta = format_eta((self.total - step) / rate) if rate > 0 else "?"
        keys = sorted((k for k in row if k != "step" and k not in SHOWN_LAST), key=lambda k: k != "loss")
        shown = " ".join(f"{k} {row[k]:.4g}" for k in keys)
        print(f"[{self.name}] step {step}/{self.total} {shown} | {speed}, {rate:.3g} steps/s, ETA {eta}",
              file=self.file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

"""Run a command as N local JAX processes on 127.0.0.1 (CPU, gloo collectives, simulated devices per process).

Every process gets its own session so the whole group can be killed; `launch` always reaps what it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the coordinator binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
               PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    return env


class Group:
    """N processes of `argv + distributed flags`; outputs go to `<log_dir>/process_<i>.log`."""

    def __init__(self, argv: Sequence[str], num_processes: int, devices: int, log_dir: Path):
        self.port = free_port()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        for i in range(num_processes):
            cmd = [sys.executable, *argv]
            if num_processes > 1:
                cmd += ["--coordinator", f"127.0.0.1:{self.port}", "--num-processes", str(num_processes),
                        "--process-id", str(i)]
            with open(self.log(i), "w") as out:
                self.procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=worker_env(devices), stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True))

    def log(self, i: int) -> Path:
        return self.log_dir / f"process_{i}.log"

    def text(self, i: int) -> str:
        return self.log(i).read_text(errors="replace")

    def wait(self, timeout: float, until: Callable[[], bool] | None = None) -> list[int | None]:
        """Wait for every process to exit (or `until()` to hold); the return codes (None: still running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is not None and until():
                break
            if all(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        return [p.poll() for p in self.procs]

    def kill(self, i: int | None = None) -> None:
        """SIGKILL process i (all when None) with its process group."""
        for j, p in enumerate(self.procs):
            if (i is None or i == j) and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def check(self, timeout: float) -> None:
        """Wait for all to exit; fail with the logs' tails unless every one returned 0."""
        codes = self.wait(timeout)
        if codes != [0] * len(self.procs):
            self.kill()
            tails = "\n".join(f"--- process {i} (rc {c}):\n{self.text(i)[-3000:]}" for i, c in enumerate(codes))
            raise AssertionError(f"processes ended with {codes} (None: timed out after {timeout} s)\n{tails}")


def run(argv: Sequence[str], num_processes: int, devices: int, log_dir: Path, timeout: float = 600) -> None:
    """Run to completion (all must succeed)."""
    with Group(argv, num_processes, devices, log_dir) as group:
        group.check(timeout)

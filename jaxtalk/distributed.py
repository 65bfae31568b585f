"""Multi-host start-up: the one place that calls `jax.distributed.initialize` (JAX's multi-controller runtime).

    python train/style_e.py --config X --coordinator host0:1234 --num-processes 4 --process-id 2
    python train/style_e.py --config X train.distributed.coordinator=host0:1234 ...   # same, as config keys
    srun python train/style_e.py --config X          # no address: SLURM / Open MPI / K8s / TPU auto-detection

Every process runs the same program; each sees all devices of the job (`jax.devices()`) and drives its own
(`jax.local_devices()`). With an explicit coordinator all three of address, process count and process id are
needed. Without them, `jax.distributed.initialize()` detects the cluster when a launcher's environment is present
(SLURM with more than one task, Open MPI, an indexed Kubernetes Job / JobSet, a TPU slice, or
`JAX_COORDINATOR_ADDRESS`); otherwise the run is single-process and nothing is initialised.

On CPU the cross-process collectives go over gloo (`jax_cpu_collectives_implementation`), which is what the
multi-process tests use on one machine. A process that stops sending heartbeats for `heartbeat_timeout` seconds
makes the coordination service stop all others with an error naming the dead task, so a killed worker never
leaves the rest hanging.

Process 0 alone writes logs, progress lines, metadata and outputs (`is_main`); every process logs warnings and
errors with its rank (`setup_logging`, `entry_point`, `who`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator

from jaxtalk import config as config_lib

log = logging.getLogger(__name__)

# Environment markers of launchers that jax.distributed.initialize() can read the job layout from.
_CLUSTER_MARKERS = (
    ("JAX_COORDINATOR_ADDRESS",),                                  # set by hand or a launcher
    ("OMPI_MCA_orte_hnp_uri",),                                    # Open MPI (mpirun)
    ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX"),           # indexed Job / JobSet
    ("TPU_WORKER_HOSTNAMES",),                                     # Cloud TPU slice
)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (all unset: auto-detect a cluster, else one process)."""

    coordinator: str | None = config_lib.field(None, doc="HOST:PORT of process 0's coordination service")
    num_processes: int | None = config_lib.field(None, min=1, doc="processes in the run (all hosts)")
    process_id: int | None = config_lib.field(None, min=0, doc="this process's rank, 0 .. num_processes - 1")
    auto_detect: bool = config_lib.field(True, doc="without a coordinator, let JAX read SLURM / Open MPI / "
                                         "Kubernetes / TPU launch variables when they are present")
    initialization_timeout: int = config_lib.field(300, min=1, doc="seconds to wait for every process to join")
    heartbeat_timeout: int = config_lib.field(100, min=1, doc="seconds without a heartbeat before a process is "
                                              "declared dead and the others stop")
    cpu_collectives: str = config_lib.field("gloo", choices=("gloo", "mpi", "none"),
                                            doc="cross-process collectives of the CPU backend")


class DistributedError(RuntimeError):
    """The multi-process settings are inconsistent or the run could not be joined."""


def cluster_detected(environ: dict | None = None) -> bool:
    """True when a launcher's environment describes a multi-process job that JAX can auto-detect."""
    env = os.environ if environ is None else environ
    try:
        slurm_tasks = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")))
    except ValueError:
        slurm_tasks = 1
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and slurm_tasks > 1:
        return True
    return any(all(k in env for k in keys) for keys in _CLUSTER_MARKERS)


def _validate(cfg: DistributedConfig) -> None:
    explicit = (cfg.coordinator, cfg.num_processes, cfg.process_id)
    given = [v is not None for v in explicit]
    if any(given) and not all(given):
        missing = [n for n, g in zip(("coordinator", "num_processes", "process_id"), given) if not g]
        raise DistributedError(
            f"distributed: {', '.join(missing)} missing; give all of --coordinator HOST:PORT --num-processes N "
            "--process-id I (or the config's distributed.* keys), or none of them for cluster auto-detection")
    if cfg.coordinator is not None:
        host, _, port = cfg.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise DistributedError(f"distributed.coordinator {cfg.coordinator!r}: expected HOST:PORT, e.g. "
                                   "10.0.0.1:1234")
    if cfg.process_id is not None and cfg.num_processes is not None and cfg.process_id >= cfg.num_processes:
        raise DistributedError(f"distributed.process_id {cfg.process_id} must be below num_processes "
                               f"{cfg.num_processes}")


def initialize(cfg: DistributedConfig | None = None) -> tuple[int, int]:
    """Join the multi-process run described by `cfg` (see the module doc); returns (process_index, count).

    Call it before anything touches a JAX backend. A second call in an initialised process is a no-op when it
    asks for the same layout.
    """
    import jax

    cfg = cfg or DistributedConfig()
    _validate(cfg)
    explicit = cfg.coordinator is not None
    if jax.distributed.is_initialized():
        if explicit and (cfg.num_processes, cfg.process_id) != (jax.process_count(), jax.process_index()):
            raise DistributedError(
                f"distributed: already initialised as process {jax.process_index()} of {jax.process_count()}; "
                f"cannot rejoin as {cfg.process_id} of {cfg.num_processes}")
        return jax.process_index(), jax.process_count()
    if not explicit and not (cfg.auto_detect and cluster_detected()):
        return 0, 1
    if explicit and cfg.num_processes == 1:
        return 0, 1
    if cfg.cpu_collectives != "none":
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs = dict(initialization_timeout=cfg.initialization_timeout,
                  heartbeat_timeout_seconds=cfg.heartbeat_timeout)
    try:
        if explicit:
            jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id, **kwargs)
        else:
            jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        where = cfg.coordinator or "auto-detected coordinator"
        raise DistributedError(f"process {cfg.process_id}: could not join the run at {where}: {e}") from e
    _RANK.update(index=jax.process_index(), count=jax.process_count())
    log.info("joined as process %d of %d (%d local / %d global devices)", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_index(), jax.process_count()


_RANK = {"index": 0, "count": 1}


def rank() -> tuple[int, int]:
    """(process_index, process_count) without initialising a backend before `initialize` ran."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    return _RANK["index"], _RANK["count"]


def who() -> str:
    """"process I of N: " in a multi-process run (also before `initialize`, from `announce`), else ""."""
    index, count = rank()
    return f"process {index} of {count}: " if count > 1 else ""


def announce(process_id: int | None, num_processes: int | None) -> None:
    """Remember the rank given on the command line, so errors raised before `initialize` already name it."""
    if process_id is not None and num_processes is not None and not _initialized():
        _RANK.update(index=process_id, count=num_processes)


def _initialized() -> bool:
    import jax

    return jax.distributed.is_initialized()


# What an entry point reports as bad input (one line, exit status 2): config errors (a ValueError), data and
# checkpoint errors (ValueError / OSError subclasses), multi-process set-up.
BAD_INPUT: tuple[type[BaseException], ...] = (ValueError, OSError, DistributedError)
EXIT_BAD_INPUT = 2
EXIT_FAILED = 3


@contextlib.contextmanager
def entry_point(prog: str) -> Iterator[None]:
    """The error contract of the `train/*.py` scripts: bad input (`BAD_INPUT`) and a stopped run (NaN / Inf
    with `train.nonfinite=stop`) end with one line `PROG: error: [process I of N: ]MESSAGE` on stderr and exit
    status 2 (bad input) or 3 (stopped), no traceback; any other exception is an internal error and keeps its
    traceback after a line naming the failed process. `JAXTALK_TRACEBACK=1` keeps every traceback."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        stopped = type(e).__name__ == "NonFiniteError"
        if os.environ.get("JAXTALK_TRACEBACK") or not (stopped or isinstance(e, BAD_INPUT)):
            _say_failed(e)
            raise
        print(f"{prog}: error: {who()}{_one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_FAILED if stopped else EXIT_BAD_INPUT) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _say_failed(e: BaseException) -> None:
    index, count = rank()
    if count > 1:
        print(f"jaxtalk process {index} of {count} failed: {type(e).__name__}: {_one_line(e)[:500]}",
              file=sys.stderr, flush=True)


def is_main() -> bool:
    """True on process 0: the one that writes logs, progress, metadata and output files."""
    return rank()[0] == 0


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        index, count = rank()
        record.rank = f"[{index}/{count}] " if count > 1 else ""
        return index == 0 or record.levelno >= logging.WARNING


def setup_logging(level: int = logging.INFO) -> None:
    """Root logging with the rank in every line of a multi-process run; other ranks show warnings and errors
    only, so process 0 alone writes the run's log."""
    logging.getLogger("absl").setLevel(max(level, logging.WARNING))  # orbax's per-file save chatter
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.addFilter(_RankFilter())
    handler.setFormatter(logging.Formatter("%(rank)s%(levelname)s %(name)s: %(message)s"))
    # Replace plain stderr handlers (grain installs one on import); keep specialised ones (a test runner's).
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler] + [handler]
    root.setLevel(level)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--coordinator HOST:PORT --num-processes N --process-id I` (the `distributed` config keys)."""
    g = parser.add_argument_group("multi-host (all three, or none for cluster auto-detection)")
    g.add_argument("--coordinator", help="HOST:PORT of process 0's coordination service")
    g.add_argument("--num-processes", type=int, help="processes in the run, over all hosts")
    g.add_argument("--process-id", type=int, help="this process's rank, 0 .. N-1")


def overrides_from_args(args: argparse.Namespace, prefix: str) -> list[str]:
    """Dotted overrides (`<prefix>.coordinator=...`) for the flags that were given."""
    out = []
    for flag, key in (("coordinator", "coordinator"), ("num_processes", "num_processes"),
                      ("process_id", "process_id")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{prefix}.{key}={json.dumps(value)}")  # quoted: YAML would read 'a:12' as a number
    return out


def config_from_args(args: argparse.Namespace, base: DistributedConfig | None = None) -> DistributedConfig:
    """`base` with the flags that were given put over it."""
    base = base or DistributedConfig()
    given = {k: getattr(args, k) for k in ("coordinator", "num_processes", "process_id")
             if getattr(args, k, None) is not None}
    return dataclasses.replace(base, **given)


def sync(name: str) -> None:
    """A barrier over all processes (no-op with one)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_copy(tree: object) -> object:
    """`tree` with every array as a whole numpy array on this process (`jax.device_get`), arrays sharded over
    other processes' devices gathered first. A collective when such arrays are present: every process must call
    it with the same tree."""
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    remote = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if remote:
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather([leaves[i] for i in remote], tiled=True)
        for i, x in zip(remote, gathered):
            leaves[i] = x
    return jax.tree.unflatten(treedef, jax.device_get(leaves))

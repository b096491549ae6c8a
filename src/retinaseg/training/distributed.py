"""Distributed data-parallel training under ``torchrun``: the process group and its collectives.

None of the seed projects trains on more than one device (reference §8, retina-unet: "SGD, 150
epochs, batch 32" on one GPU; §10 lists every seed's batch per optimiser step). This module
keeps that recipe's meaning when several processes train together: ``sampling.batch_size`` stays
the batch of one optimiser step (the *global* batch), each process computes the gradient of its
share of that batch, and :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients, so N processes take the same steps as one (up to BatchNorm statistics, which are per
process unless ``train.sync_batchnorm``, and floating-point summation order).

``torchrun --nproc-per-node N -m retinaseg train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`process_group` reads them, joins the
group (gloo on CPU, NCCL on CUDA; ``train.dist_backend`` or ``RETINASEG_DIST_BACKEND``
override), and leaves it at the end. Every collective has ``train.dist_timeout_s``: a process
that dies or hangs makes the others stop with a :class:`~retinaseg.errors.TrainingError` instead
of waiting for ever. Rank 0 alone validates and writes files; :meth:`Dist.on_main` hands its
results (or its error) to the other ranks, so all of them take the same best-checkpoint and
early-stopping decisions.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from retinaseg.errors import ConfigError, TrainingError
from retinaseg.utils.runtime import default_threads

T = TypeVar("T")

BACKEND_ENV = "RETINASEG_DIST_BACKEND"
"""Environment variable that overrides ``train.dist_backend`` (``gloo`` or ``nccl``)."""
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_LOST_PEER = re.compile(r"gloo|nccl|connection (closed|reset)|timed out", re.IGNORECASE)
"""What the errors of a collective that lost a peer say (gloo, NCCL, the TCP store)."""


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 when not launched by torchrun."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be a whole number, not "
                          f"'{os.environ['WORLD_SIZE']}'") from None


def env_rank() -> int:
    """``RANK`` as torchrun sets it; 0 when not launched by torchrun."""
    return int(os.environ.get("RANK", "0") or 0)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s own random streams (dropout, augmentation): ``seed`` on rank 0,
    so a one-process run draws exactly what it drew before distributed training existed."""
    return seed + 1_000_003 * rank


def pick_backend(requested: str, device: torch.device) -> str:
    """``gloo`` for CPU, ``nccl`` for CUDA, unless ``RETINASEG_DIST_BACKEND`` or the config
    (``requested``, ``auto`` = by device) names one."""
    name = os.environ.get(BACKEND_ENV) or requested
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name not in ("gloo", "nccl"):
        raise ConfigError(f"{BACKEND_ENV} must be gloo or nccl, not '{name}'")
    if name == "nccl" and device.type != "cuda":
        raise ConfigError(f"the nccl backend needs CUDA devices, but training runs on "
                          f"'{device}' (use gloo)")
    return name


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str = ""
    timeout_s: float = 1800.0

    @property
    def enabled(self) -> bool:
        """Whether other processes train with this one."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates and writes files."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` for this process: CUDA device ``LOCAL_RANK`` when distributed on CUDA."""
        if self.enabled and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def threads(self, threads: int | None) -> int | None:
        """``train.threads``, or when unset and distributed the cores shared out between the
        processes of this node (two processes on two cores: one thread each)."""
        if threads or not self.enabled:
            return threads
        return max(1, default_threads() // self.local_world)

    def wrap(self, net: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
        """``net`` wrapped in DistributedDataParallel (gradients averaged over the processes),
        with its BatchNorm layers made synchronous when ``sync_batchnorm``; ``net`` itself when
        not distributed. ``net`` keeps its parameters, so its state dict (checkpoints) has no
        ``module.`` prefix and does not depend on the world size."""
        if not self.enabled:
            return net
        if sync_batchnorm:
            if device.type != "cuda":
                raise ConfigError("train.sync_batchnorm needs CUDA devices: PyTorch's "
                                  "SyncBatchNorm does not run on CPU (set it to false)")
            nn.SyncBatchNorm.convert_sync_batchnorm(net)  # replaces the children in place
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids)

    # ---- collectives (no-ops with one process) -----------------------------------------------
    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a failed collective (a process died, hangs past the timeout, or its network
        broke) into one clear :class:`TrainingError`."""
        try:
            yield
        except tdist.DistError as err:
            raise self._lost(what, err) from None
        except RuntimeError as err:  # DDP's backward re-raises a lost peer as RuntimeError
            if not self.enabled or not _LOST_PEER.search(str(err)):
                raise
            raise self._lost(what, err) from None

    def _lost(self, what: str, err: BaseException) -> TrainingError:
        why = " ".join(str(err).split())[:160]
        return TrainingError(f"rank {self.rank} of {self.world}: another training process "
                             f"died or did not answer within {self.timeout_s:g} s while "
                             f"{what} ({why}); stopping")

    def _collective(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (tdist.DistError, RuntimeError) as err:  # gloo reports a lost peer either way
            raise self._lost(what, err) from None

    def share(self, value: T, what: str) -> T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        self._collective(what, lambda: tdist.broadcast_object_list(box, src=0))
        return box[0]

    def on_main(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; an error on rank 0
        stops every rank (the others with a :class:`TrainingError` quoting it)."""
        if not self.enabled:
            return fn()
        result: tuple[str, Any] = ("", None)
        if self.is_main:
            try:
                result = ("ok", fn())
            except BaseException as err:
                self.share(("error", f"{type(err).__name__}: {err}"), what)
                raise
        kind, value = self.share(result, what)
        if kind == "error":
            raise TrainingError(f"rank 0 stopped while {what}: {value}")
        return value

    def sum(self, value: float, what: str) -> float:
        """The sum of ``value`` over the ranks."""
        return self._reduce(value, tdist.ReduceOp.SUM, what)

    def max(self, value: float, what: str) -> float:
        """The largest ``value`` over the ranks."""
        return self._reduce(value, tdist.ReduceOp.MAX, what)

    def _reduce(self, value: float, op: Any, what: str) -> float:
        if not self.enabled:
            return value
        dev = torch.device("cuda", self.local_rank) if self.backend == "nccl" else None
        t = torch.tensor([value], dtype=torch.float64, device=dev)
        self._collective(what, lambda: tdist.all_reduce(t, op=op))
        return float(t.item())

    def barrier(self, what: str) -> None:
        """Wait for every rank; gloo's monitored barrier names the ranks that did not come."""
        if not self.enabled:
            return
        if self.backend == "gloo":
            timeout = timedelta(seconds=self.timeout_s)
            self._collective(what, lambda: tdist.monitored_barrier(timeout=timeout,
                                                                   wait_all_ranks=True))
        else:
            self._collective(what, lambda: tdist.barrier(device_ids=[self.local_rank]))


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not '{os.environ[name]}'") from None


def init(device: torch.device, backend: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join the process group that torchrun's environment describes; :class:`Dist` () without
    torchrun or with ``WORLD_SIZE`` 1. ``device`` picks the backend (:func:`pick_backend`)."""
    world = env_world_size()
    if world == 1:
        return Dist()
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {world} but {', '.join(missing)} is not set: launch "
                          "distributed training with torchrun")
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
    name = pick_backend(backend, device)
    if name == "nccl" and local >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local} has no CUDA device: this node has "
                          f"{torch.cuda.device_count()} (use --nproc-per-node ≤ that)")
    dist = Dist(rank, world, local, local_world, name, float(timeout_s))
    dist.device(device)  # NCCL needs the current CUDA device set before the group forms
    with dist.guard("joining the process group"):
        tdist.init_process_group(name, rank=rank, world_size=world,
                                 timeout=timedelta(seconds=timeout_s))
    return dist


@contextlib.contextmanager
def process_group(device: torch.device, backend: str = "auto",
                  timeout_s: float = 1800.0) -> Iterator[Dist]:
    """:func:`init` for the duration of a ``with`` block, then leave the group (a group
    already formed, e.g. by an outer call, is reused and left to its owner)."""
    if tdist.is_available() and tdist.is_initialized():
        yield Dist(tdist.get_rank(), tdist.get_world_size(), env_local_rank(),
                   int(os.environ.get("LOCAL_WORLD_SIZE", "1")), tdist.get_backend(),
                   float(timeout_s))
        return
    dist = init(device, backend, timeout_s)
    try:
        yield dist
        dist.barrier("finishing")
    finally:
        if dist.enabled and tdist.is_initialized():
            tdist.destroy_process_group()


def env_local_rank() -> int:
    """``LOCAL_RANK`` as torchrun sets it; 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def check_shards(steps: int, world: int, batch_size: int, samples: int, unit: str) -> None:
    """Refuse a world size that leaves a process without data: every global batch is split
    between the ``world`` processes, and one smaller than ``world`` is skipped."""
    if world <= 1:
        return
    if batch_size < world or samples < world or steps == 0:
        raise ConfigError(f"{world} processes need at least {world} {unit} in every global "
                          f"batch, but sampling.batch_size is {batch_size} and an epoch has "
                          f"{samples} {unit} (use fewer processes or a larger batch)")

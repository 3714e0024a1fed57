"""Training on several processes: torchrun, DistributedDataParallel, sharded data and evaluation.

``torchrun --nproc-per-node N script.py`` starts N copies of a script, one per GPU (or N CPU
processes), and tells each its place through environment variables: ``RANK`` (0..N-1 over all
machines), ``LOCAL_RANK`` (0.. on this machine), ``WORLD_SIZE`` (N) and the rendezvous address.
:func:`coursepkg.engine.training.fit` reads them through this module, so the same ``fit`` call
trains on one process or on many::

    process 0:  images[0:b]   -> DDP(losses) -> backward --+
    process 1:  images[b:2b]  -> DDP(losses) -> backward --+-- all-reduce: mean gradient
    ...                                                    |
    every process: the same optimizer step on the same weights (one batch of N * b images)

What this module provides, each piece used by ``fit`` and ``evaluate``:

* :func:`init_distributed_from_env`: join (or create) the process group described by the
  environment, with a timeout, on the backend that fits the device (NCCL for GPUs, gloo for CPUs),
  each process on ``LOCAL_RANK``'s device.
* :class:`DetectorLossModule`: a module whose ``forward(images, targets)`` is the detector's
  ``losses``, so that the training step goes through ``DistributedDataParallel.forward`` and DDP's
  gradient hooks fire. The detector contract (``losses`` and ``detect``) is unchanged.
* :class:`ShardedSampler`: each process reads its own slice of the data; in epoch ``e`` all of
  them slice the same permutation, drawn from a generator seeded by ``(seed, e)``, the one a
  single process uses. N processes with batch b therefore see exactly the batches of one process
  with batch N * b.
* :func:`all_reduce_mean`, :func:`all_gather_objects`, :func:`broadcast_buffers`,
  :func:`barrier`: the few collectives the engine needs (averaged losses for the logs, detections
  gathered for one mAP over the whole validation set, rank 0's batch-norm statistics, waiting for
  rank 0's checkpoint).

Batch norm under DDP keeps **per-process statistics**: each process normalises with the mean and
variance of its own b images, and DDP copies rank 0's running statistics to the others at every
forward (``broadcast_buffers``). With small per-process batches, pass ``sync_batchnorm=True`` to
``fit``: :func:`convert_sync_batchnorm` then computes the statistics over all N * b images.

Failures: when one process raises, the others would wait for it forever inside a collective.
Two things stop them: torchrun ends the whole job when one process exits with an error, and the
process group has a timeout (:data:`DEFAULT_TIMEOUT`), after which a waiting collective raises. The
engine turns either into a :class:`DistributedError` that says which process saw what.

Chapter: book/training (section "Scaling out: several processes with torchrun").
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

__all__ = [
    "DEFAULT_TIMEOUT",
    "DetectorLossModule",
    "DistributedError",
    "ShardedSampler",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "broadcast_buffers",
    "convert_sync_batchnorm",
    "epoch_seed",
    "get_rank",
    "get_world_size",
    "init_distributed_from_env",
    "is_distributed",
    "is_main_process",
    "local_device",
    "raise_as_distributed_error",
    "wrap_for_training",
]

# How long a collective waits for the other processes before it raises. Long enough for rank 0
# to evaluate and write a checkpoint while the others wait at the barrier; short enough that a
# crashed process does not keep a cluster busy for torch's default of 30 minutes.
DEFAULT_TIMEOUT = timedelta(minutes=10)


# The timeout init_distributed_from_env gave the group, quoted in DistributedError's message.
_timeout: timedelta | None = None


class DistributedError(RuntimeError):
    """A collective failed: another process stopped, or the process group's timeout ran out."""


# --------------------------------------------------------------------------- process group


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank in the group (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and without a process group): the process that prints and writes files."""
    return get_rank() == 0


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(
            f"environment variable {name} must be an integer, got {value!r}"
        ) from error


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` on a GPU machine, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return torch.device("cpu")


def init_distributed_from_env(timeout: timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the process group that torchrun's environment describes; a no-op without one.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (torchrun
    sets them all). With ``WORLD_SIZE`` > 1 it puts this process on ``LOCAL_RANK``'s GPU (if any)
    and initialises the group, NCCL on GPUs, gloo on CPUs, with ``timeout`` on every collective.
    A group that is already running is used as it is.

    Args:
        timeout: how long a collective waits for the other processes before it raises.

    Returns:
        True if this process is now one of several in a process group.

    Raises:
        TypeError: if ``timeout`` is not a ``datetime.timedelta``.
        ValueError: if the environment is incomplete (for example ``WORLD_SIZE`` without
            ``RANK``) or ``LOCAL_RANK`` names a GPU this machine does not have.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    if not isinstance(timeout, timedelta):
        raise TypeError(f"timeout must be a datetime.timedelta, got {type(timeout).__name__}")
    if timeout.total_seconds() <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but the environment lacks {missing}; start the script with "
            "torchrun --nproc-per-node N, which sets them all"
        )
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        local_rank = _env_int("LOCAL_RANK", 0)
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(local_rank)  # before NCCL touches a device
        backend = "nccl"
    dist.init_process_group(backend, timeout=timeout)
    global _timeout
    _timeout = timeout
    return True


@contextlib.contextmanager
def raise_as_distributed_error(what: str) -> Iterator[None]:
    """Turn a failed collective inside the block into a :class:`DistributedError` naming ``what``.

    Only errors of the communication layer are translated (torch's ``DistError`` family, and the
    ``RuntimeError`` that gloo and NCCL raise through autograd); the model's own errors pass
    unchanged.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as error:
        if not _is_communication_error(error):
            raise
        rank, size = get_rank(), get_world_size()
        timeout = f" ({_seconds(_timeout)})" if _timeout is not None else ""
        raise DistributedError(
            f"process {rank} of {size}: a collective failed during {what}: another process "
            f"stopped (look for its error above) or did not answer within the process group's "
            f"timeout{timeout}. Cause: {' '.join(str(error).split())[:300]}"
        ) from error


def _is_communication_error(error: RuntimeError) -> bool:
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout"))


def _seconds(timeout: timedelta) -> str:
    return f"{timeout.total_seconds():g}s"


# --------------------------------------------------------------------------- the model


class DetectorLossModule(nn.Module):
    """The detector's ``losses`` as a ``forward``, for ``DistributedDataParallel``.

    DDP averages gradients over processes only for a backward pass that follows its own
    ``forward``. A detector's ``forward`` returns raw head outputs, and the engine calls
    ``losses``; this wrapper's ``forward(images, targets)`` returns ``detector.losses(images,
    targets)`` (a dict of scalar tensors), so ``DDP(DetectorLossModule(detector))(images,
    targets)`` is the training step. The detector itself is unchanged and keeps its contract.

    Args:
        detector: a :class:`coursepkg.models.detector.Detector`.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(detector, "losses", None)):
            raise TypeError(
                f"detector must have a losses(images, targets) method, got {type(detector).__name__}"
            )
        self.detector = detector

    def forward(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """``detector.losses(images [B, 3, H, W], targets)``: ``{name: scalar}``."""
        return self.detector.losses(images, targets)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm*d`` of ``model`` by ``SyncBatchNorm``, in place.

    With ``SyncBatchNorm`` the batch statistics are computed over the images of all processes
    (one extra all-reduce per layer and step) instead of each process's own. The parameters and
    running statistics are kept (the same tensors), so an optimizer built before still applies.

    Returns:
        ``model`` (its children replaced); a bare batch-norm layer comes back as a new module.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_for_training(
    detector: nn.Module, device: torch.device, *, find_unused_parameters: bool = False
) -> DistributedDataParallel:
    """``DistributedDataParallel(DetectorLossModule(detector))`` on ``device``.

    DDP copies rank 0's parameters and buffers to every process when it is built, so all
    processes start from the same weights.

    Args:
        detector: the model, already on ``device``.
        device: this process's device (``cuda:LOCAL_RANK`` or the CPU).
        find_unused_parameters: let DDP cope with parameters that a step does not use (costs a
            traversal of the graph per step); the course's detectors use all of theirs.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        DetectorLossModule(detector),
        device_ids=device_ids,
        find_unused_parameters=find_unused_parameters,
    )


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics) to every process, in place.

    DDP does this at the start of every forward, so after the last step each process holds the
    statistics it updated itself; the engine calls this before evaluating and saving so that every
    process evaluates the same model. A no-op without a process group.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    if not is_distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=src)


# --------------------------------------------------------------------------- collectives


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over all processes (a new tensor; ``tensor`` itself unchanged).

    Without a process group it returns a copy. On NCCL the tensor must be on this process's GPU.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    result = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        result /= dist.get_world_size()
    return result


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable, e.g. CPU tensors in dicts), in rank order.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait until every process gets here (a no-op without a process group)."""
    if is_distributed():
        dist.barrier()


# --------------------------------------------------------------------------- data


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffle: a hash of ``(seed, epoch)`` (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ShardedSampler(Sampler[int]):
    """Process ``rank``'s share of a dataset of ``size`` items: every ``num_replicas``-th index.

    torch's ``DistributedSampler`` with the course's shuffle: in epoch ``e`` (set with
    :meth:`set_epoch`) the order is ``torch.randperm(size)`` drawn from a generator seeded by
    :func:`epoch_seed` ``(seed, e)``, the order one process reads with ``fit``'s own shuffle.
    Process ``r`` takes positions ``r, r + N, r + 2N, ...`` of it, so batch ``k`` of size ``b``
    on every process together is batch ``k`` of size ``N * b`` in one process::

        order      = [7, 2, 9, 4, 0, 5, 1, 8, ...]        (one permutation, all processes)
        rank 0     = [7,    9,    0,    1,    ...]
        rank 1     = [   2,    4,    5,    8, ...]

    Items are drawn from their own seeds (see :mod:`coursepkg.data.synthetic`), so which process
    reads an item does not change it.

    Args:
        size: the number of items in the dataset.
        num_replicas: N, the number of processes.
        rank: this process, in ``0..N-1``.
        shuffle: shuffle per epoch (training); False keeps the dataset order (evaluation).
        seed: the seed of the shuffle.
        pad: repeat the first items of the order so that every process has the same number
            (``ceil(size / N)``), as DDP needs for training: a process with one batch fewer
            would leave the others waiting in the gradient all-reduce. Evaluation passes False,
            so that no image is counted twice.

    Raises:
        ValueError: on a size < 1, num_replicas < 1 or a rank outside ``0..N-1``.

    Chapter: book/training (section "Scaling out: several processes with torchrun").
    """

    def __init__(
        self,
        size: int,
        *,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        for name, value, minimum in (("size", size, 1), ("num_replicas", num_replicas, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be an int in [0, num_replicas={num_replicas}), got {rank!r}"
            )
        self.size, self.num_replicas, self.rank = size, num_replicas, rank
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` (call it before every epoch, as ``fit`` does)."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The whole epoch's order, before it is sliced (padded when ``pad``)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = math.ceil(self.size / self.num_replicas) * self.num_replicas
            order += (order * math.ceil(total / self.size))[: total - self.size]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))
